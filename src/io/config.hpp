// The run configuration: every key of the TOML config file, its default, and its
// validation. `docs/configuration.md` is the user-facing table of the same keys.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace furnace::io {

struct ModelConfig {
  int vocab_size = 256;
  int seq_len = 128;        // context length T
  int d_model = 128;
  int n_layers = 4;
  int n_heads = 4;          // d_model % n_heads == 0
  int ffn_hidden = 512;     // hidden width of dense (non-MoE) feed-forward layers
  std::string norm = "layernorm";    // layernorm | rmsnorm
  std::string activation = "gelu";   // gelu | swiglu
  double norm_eps = 1e-5;
  double init_std = 0.02;
};

struct MoeConfig {
  int experts = 8;          // E; 0 = no MoE layers
  int top_k = 2;            // 1 <= top_k <= experts
  int every = 1;            // block l is MoE when (l + 1) % every == 0
  int expert_hidden = 256;  // hidden width of each expert FFN
  double capacity_factor = 2.0;  // capacity = ceil(cf * tokens * top_k / E); <= 0: no limit
  double aux_loss_coef = 0.01;   // GShard load-balancing loss coefficient
  double z_loss_coef = 0.001;    // router z-loss coefficient
};

struct TrainConfig {
  unsigned long long seed = 1234;
  int batch_size = 16;      // global sequences per step
  int steps = 1000;
  double time_limit_min = 0;  // stop (and evaluate) after this many minutes; 0 = none
  double lr = 1e-3;
  double min_lr = 1e-4;
  int warmup_steps = 100;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;   // global-norm clipping; 0 = off
  int eval_every = 100;     // steps between validation evaluations; 0 = only at the end
  int eval_batches = 8;
  int log_every = 1;
  std::string on_nonfinite = "stop";  // stop | skip: a step whose loss or gradient norm is not finite
  std::string precision = "fp32";     // fp32 | bf16 | fp16: the GEMMs' operands (fp32 accumulation)
  std::string gemm16 = "auto";        // auto | onednn | convert: what runs the 16-bit GEMMs
  double loss_scale = 65536;          // fp16: the initial dynamic loss scale
  int loss_scale_window = 1000;       // fp16: finite steps in a row before the scale doubles
};

struct DataConfig {
  std::string train = "data/fortunes/train.h5";
  std::string valid = "data/fortunes/valid.h5";
};

struct OutputConfig {
  std::string dir = "runs/default";   // metrics.jsonl, resolved config go here
};

struct ParallelConfig {
  int ep = 1;               // expert-parallel group size; dp = world / ep
};

struct CommConfig {
  std::string alltoall = "flat";  // flat | hierarchical | auto
  int ranks_per_node = 0;         // 0 = detect (MPI_COMM_TYPE_SHARED)
  int bucket_mb = 4;              // gradient allreduce bucket size (MiB)
  std::string grad_dtype = "fp32";  // fp32 | bf16: what the gradient reduction moves
  std::string timing = "wall";      // wall | barrier: how alltoall_ms / allreduce_ms are measured
  std::string wait = "auto";        // auto | spin | yield: how a rank waits in MPI (comm/wait.hpp)
};

struct CheckpointConfig {
  std::string dir;          // "" = <output.dir>/ckpt
  int every = 0;            // steps between checkpoints; 0 = only on signal / at the end
  int keep = 3;             // checkpoints kept in dir (the oldest beyond are deleted)
  bool async = false;       // write from a host snapshot in the background
  bool fsync = true;        // file and directory durable before `latest` moves
  int alignment = 1 << 20;  // H5Pset_alignment for objects >= 64 KiB (bytes)
};

struct MemoryConfig {
  std::string recompute = "none";  // none | attention | block
  int zero = 0;                    // 1: AdamW moments sharded over each tensor's reduction group (ZeRO-1)
  double device_budget_gb = 0;     // refuse a run whose device-tier peak exceeds this; 0 = no limit
  double host_budget_gb = 0;       // the same for the host tier
  std::string optimizer = "device";  // device | host | nvme: the tier of the AdamW moments
  std::string experts = "device";    // device | host | nvme: the tier of the expert tensors (all four families)
  std::string nvme_dir;              // the nvme tier's files; "" = <output.dir>/nvme
  double nvme_group_mb = 64;         // memory.optimizer = nvme: moments per group (MiB per family)
  double moe_buffer_mb = 64;       // dropless MoE: expert-side buffers of all MoE layers (MiB)
  std::string activations = "auto";  // auto | fp32: what the GEMM-only activations are kept in
};

struct Config {
  ModelConfig model;
  MoeConfig moe;
  TrainConfig train;
  DataConfig data;
  OutputConfig output;
  ParallelConfig parallel;
  CommConfig comm;
  CheckpointConfig checkpoint;
  MemoryConfig memory;
};

// A config error: one line naming the key and what is accepted. The app prints it
// and exits with code 2.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The largest config file read (bytes); a bigger one is refused without reading past it.
inline constexpr std::size_t kMaxConfigBytes = std::size_t(1) << 20;

// Parse `path` (TOML), then apply `overrides` ("section.key=value", value in TOML
// syntax or a bare string), then validate. Throws ConfigError.
// The text of a small TOML file (a config, a machine description): at most
// kMaxConfigBytes read, whatever the file claims; ConfigError naming `what` and the
// path when it is missing, a directory, unreadable or too large.
std::string read_small_text_file(const std::string& path, const std::string& what);

Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from TOML text (tests). `origin` names the source in messages.
Config parse_config(const std::string& toml_text, const std::vector<std::string>& overrides = {},
                    const std::string& origin = "<string>");
// Check ranges and consistency (top_k <= experts, d_model % n_heads == 0, ...).
void validate(const Config& cfg);
// The resolved config as JSON text (written next to the metrics, and into checkpoints).
std::string to_json(const Config& cfg);

// ---- The key table: one entry per config key, the single source of the parser, the
// validation, to_json and docs/configuration.md. ----

enum class KeyType { Integer, Float, String, Bool };  // the order of KeyValue's alternatives
using KeyValue = std::variant<std::int64_t, double, std::string, bool>;

struct KeyInfo {
  std::string section, name;  // "model", "d_model"
  KeyType type;
  // Accepted values. Numbers: lo/hi bounds (open when *_open); strings: `choices`
  // when not empty, else any non-empty string (any string when allow_empty);
  // booleans: true or false.
  double lo, hi;
  bool lo_open = false, hi_open = false;
  std::vector<std::string> choices;
  std::string doc;
  std::function<KeyValue(const Config&)> get;
  std::function<void(Config&, const KeyValue&)> set;  // value already type-checked
  bool allow_empty = false;  // strings: "" is accepted (e.g. a default derived elsewhere)

  std::string full_name() const { return section + "." + name; }
  std::string accepted() const;  // "integer >= 1", "number in [0, 1)", "one of: gelu, swiglu", "true or false"
};

// Every key, in document order (sections in the order of Config's members).
const std::vector<KeyInfo>& config_keys();
// A value as it is written in TOML: 3, 0.001, "gelu", true.
std::string format_value(const KeyValue& v);
// The whole of docs/configuration.md, generated from config_keys().
std::string config_reference_markdown();

}  // namespace furnace::io
