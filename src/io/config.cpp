// Config loading. Everything key-specific lives in one table (config_keys()); the
// parser, the range checks, to_json and the markdown reference all walk that table,
// so adding a key is one line here plus the struct member.
#include "io/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "io/clip.hpp"

namespace furnace::io {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kIntMax = INT_MAX;

// What a key accepts: numeric bounds, or string choices.
struct Accept {
  double lo = -kInf, hi = kInf;
  bool lo_open = false, hi_open = false;
  std::vector<std::string> choices = {};
  bool allow_empty = false;
};
Accept at_least(double lo) { return {.lo = lo}; }
Accept above(double lo) { return {.lo = lo, .lo_open = true}; }
Accept in(double lo, double hi, bool hi_open = false) { return {.lo = lo, .hi = hi, .hi_open = hi_open}; }
Accept any_number() { return {}; }
Accept non_empty() { return {}; }
Accept any_string() { return {.allow_empty = true}; }
Accept boolean() { return {}; }
Accept one_of(std::vector<std::string> c) { return {.choices = std::move(c)}; }

// Builds the KeyInfo of a member of one config section; the member's C++ type
// decides the key's TOML type.
template <class S>
struct Section {
  const char* name;
  S Config::*member;

  template <class M>
  KeyInfo key(const char* key, M S::*field, Accept a, const char* doc) const {
    KeyInfo k{name, key, KeyType::String, a.lo, a.hi, a.lo_open, a.hi_open, std::move(a.choices), doc, {}, {}};
    k.allow_empty = a.allow_empty;
    if constexpr (std::is_floating_point_v<M>) k.type = KeyType::Float;
    if constexpr (std::is_integral_v<M> && !std::is_same_v<M, bool>) k.type = KeyType::Integer;
    if constexpr (std::is_same_v<M, bool>) k.type = KeyType::Bool;
    if constexpr (std::is_same_v<M, int>) k.hi = std::min(k.hi, kIntMax);  // fits the member
    k.get = [sec = member, field](const Config& c) -> KeyValue {
      const M& v = (c.*sec).*field;
      if constexpr (std::is_same_v<M, std::string> || std::is_same_v<M, bool>) return v;
      else if constexpr (std::is_floating_point_v<M>) return double(v);
      else return std::int64_t(v);
    };
    k.set = [sec = member, field](Config& c, const KeyValue& v) {
      M& dst = (c.*sec).*field;
      if constexpr (std::is_same_v<M, std::string>) dst = std::get<std::string>(v);
      else if constexpr (std::is_same_v<M, bool>) dst = std::get<bool>(v);
      else if constexpr (std::is_floating_point_v<M>) dst = std::get<double>(v);
      else dst = static_cast<M>(std::get<std::int64_t>(v));
    };
    return k;
  }
};

// Stringizing spells the TOML section and key exactly like the struct members.
#define FURNACE_KEY(sec, field, accept, doc) \
  Section<decltype(Config::sec)>{#sec, &Config::sec}.key(#field, &decltype(Config::sec)::field, accept, doc)

struct SectionDoc {
  const char *name, *doc;
};
const SectionDoc kSections[] = {
    {"model", "The transformer."},
    {"moe", "Mixture-of-experts layers."},
    {"train", "Optimisation and the training loop."},
    {"data", "Token files (HDF5, written by `furnace data prepare`)."},
    {"output", "Where results go."},
    {"parallel", "The parallel layout: world = dp x ep."},
    {"comm", "Communication."},
    {"checkpoint", "Checkpoints: collective parallel HDF5 files, format in docs/checkpoint-format.md."},
    {"memory", "Where the bytes go: recomputation, MoE buffers, budgets, tiers (docs/memory.md)."},
};

bool is_section(const std::string& s) {
  return std::any_of(std::begin(kSections), std::end(kSections), [&](auto& d) { return s == d.name; });
}

const KeyInfo* find_key(const std::string& section, const std::string& name) {
  for (const auto& k : config_keys())
    if (k.section == section && k.name == name) return &k;
  return nullptr;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// The candidate closest to `given` within edit distance 2, or "" (for "did you mean").
std::string closest(const std::string& given, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = 3;
  for (const auto& c : candidates)
    if (std::size_t d = edit_distance(given, c); d < best_d) best_d = d, best = c;
  return best;
}

std::string unknown_section(const std::string& where, const std::string& sec) {
  std::vector<std::string> names;
  std::string list;
  for (const auto& s : kSections) names.push_back(s.name), list += (list.empty() ? "" : ", ") + names.back();
  std::string best = closest(sec, names);
  return where + ": unknown section [" + clip(sec) + "]" + (best.empty() ? "" : "; did you mean [" + best + "]?") +
         " (sections: " + list + ")";
}

std::string unknown_key(const std::string& where, const std::string& sec, const std::string& name) {
  std::vector<std::string> same_section;
  // The same key name in another section, e.g. [model] experts: the section whose name
  // is closest (moe.experts, not memory.experts).
  std::string elsewhere;
  std::size_t elsewhere_d = std::string::npos;
  for (const auto& k : config_keys()) {
    if (k.section == sec) {
      same_section.push_back(k.name);
    } else if (k.name == name) {
      if (const std::size_t d = edit_distance(sec, k.section); d < elsewhere_d) elsewhere_d = d, elsewhere = k.full_name();
    }
  }
  std::string best = closest(name, same_section);
  best = best.empty() ? elsewhere : sec + "." + best;
  std::string hint = best.empty() ? "" : "; did you mean " + best + "?";
  return where + ": unknown key " + clip(sec + "." + name) + hint + " (all keys: docs/configuration.md)";
}

std::string format_number(double x) {
  if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 1e15) return std::to_string(std::int64_t(x));
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x);  // shortest round-trip form
  return std::string(buf, r.ptr);
}

// "" when v is accepted, else the reason.
std::string check_value(const KeyInfo& k, const KeyValue& v) {
  if (k.type == KeyType::Bool) return "";
  if (k.type == KeyType::String) {
    const auto& s = std::get<std::string>(v);
    bool ok = k.choices.empty() ? (k.allow_empty || !s.empty())
                                : std::find(k.choices.begin(), k.choices.end(), s) != k.choices.end();
    return ok ? "" : "is invalid; accepted: " + k.accepted();
  }
  double x = k.type == KeyType::Float ? std::get<double>(v) : double(std::get<std::int64_t>(v));
  bool ok = std::isfinite(x) && (k.lo_open ? x > k.lo : x >= k.lo) && (k.hi_open ? x < k.hi : x <= k.hi);
  if (ok) return "";
  if (k.type == KeyType::Integer && k.hi == kIntMax && x > kIntMax) return "is too large (at most 2147483647)";
  return "is out of range; accepted: " + k.accepted();
}

[[noreturn]] void bad_value(const std::string& where, const KeyInfo& k, const std::string& value,
                            const std::string& why) {
  throw ConfigError(where + ": " + k.full_name() + " = " + clip(value) + " " + why);
}

const char* toml_type_name(const toml::node& n) {
  static const char* const names[] = {"none",  "table",   "array", "string", "integer",
                                      "float", "boolean", "date",  "time",   "date-time"};
  return names[static_cast<int>(n.type())];
}

// The TOML node as a KeyValue of k's type; ConfigError on a type mismatch. An integer
// is accepted for a float key (lr = 1 means 1.0); a float for an integer key is not.
KeyValue to_value(const KeyInfo& k, const toml::node& n, const std::string& where) {
  std::optional<KeyValue> v;
  if (auto i = n.value_exact<std::int64_t>()) v = *i;
  else if (auto f = n.value_exact<double>()) v = *f;
  else if (auto s = n.value_exact<std::string>()) v = *s;
  else if (auto b = n.value_exact<bool>()) v = *b;
  if (v && k.type == KeyType::Float && std::holds_alternative<std::int64_t>(*v)) return double(std::get<0>(*v));
  if (v && v->index() == static_cast<std::size_t>(k.type)) return *v;  // KeyType follows KeyValue's order
  std::string shown = v ? format_value(*v) : toml_type_name(n);
  bad_value(where, k, shown, std::string("has the wrong type (") + toml_type_name(n) + "); accepted: " + k.accepted());
}

void apply(Config& cfg, const std::string& sec, const std::string& name, const toml::node& n,
           const std::string& where) {
  const KeyInfo* k = find_key(sec, name);
  if (!k) throw ConfigError(unknown_key(where, sec, name));
  KeyValue v = to_value(*k, n, where);
  if (auto why = check_value(*k, v); !why.empty()) bad_value(where, *k, format_value(v), why);
  k->set(cfg, v);
}

std::string located(const std::string& origin, const toml::source_region& src) {
  const auto& b = src.begin;
  return b.line == 0 ? origin : origin + ":" + std::to_string(b.line) + ":" + std::to_string(b.column);
}

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// "--set section.key=value": the value is TOML when it parses as such, else a bare string
// (so `--set model.norm=rmsnorm` needs no quotes).
void apply_override(Config& cfg, const std::string& o) {
  const std::string where = "--set " + clip(o);
  auto eq = o.find('=');
  std::string lhs = trim(o.substr(0, eq));
  auto dot = lhs.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot == 0 || dot + 1 == lhs.size())
    throw ConfigError(where + ": malformed override; expected section.key=value, e.g. --set train.lr=3e-4");
  std::string sec = lhs.substr(0, dot), name = lhs.substr(dot + 1), rhs = trim(o.substr(eq + 1));
  if (!is_section(sec)) throw ConfigError(unknown_section(where, sec));
  toml::table t;
  try {
    t = toml::parse("v = " + rhs);
  } catch (const toml::parse_error&) {
  }
  if (t.size() != 1 || !t.contains("v")) t = toml::table{{"v", rhs}};
  apply(cfg, sec, name, *t.get("v"), where);
}

void validate_at(const Config& cfg, const std::string& where) {
  for (const auto& k : config_keys()) {
    KeyValue v = k.get(cfg);
    if (auto why = check_value(k, v); !why.empty()) bad_value(where, k, format_value(v), why);
  }
  auto inconsistent = [&](const std::string& what) { throw ConfigError(where + ": " + what); };
  const auto& m = cfg.model;
  const auto& e = cfg.moe;
  if (m.d_model % m.n_heads != 0)
    inconsistent("model.d_model = " + std::to_string(m.d_model) + " is not divisible by model.n_heads = " +
                 std::to_string(m.n_heads) + "; accepted: d_model a multiple of n_heads");
  if (e.experts > 0 && e.top_k > e.experts)
    inconsistent("moe.top_k = " + std::to_string(e.top_k) + " is larger than moe.experts = " +
                 std::to_string(e.experts) + "; accepted: 1 <= top_k <= experts");
  if (int exp = 0; std::frexp(cfg.train.loss_scale, &exp) != 0.5)
    inconsistent("train.loss_scale = " + format_value(KeyValue{cfg.train.loss_scale}) +
                 " is not a power of two; accepted: 1, 2, 4, ... (e.g. 65536), so that scaling the gradients "
                 "and unscaling them is exact");
  // The nvme tier (memory.optimizer or memory.experts = nvme) is not combined with
  // sharded moments or background checkpoints yet.
  auto nvme_refusals = [&](const std::string& key, const std::string& what) {
    if (cfg.memory.zero != 0)
      inconsistent(key + " = nvme with memory.zero = 1 is not implemented yet; accepted: memory.zero = 0");
    if (cfg.checkpoint.async)
      inconsistent(key + " = nvme with checkpoint.async = true: " + what +
                   " not in memory to snapshot; accepted: checkpoint.async = false (they are written from the nvme tier)");
  };
  if (cfg.memory.optimizer == "nvme") nvme_refusals("memory.optimizer", "the moments are");
  if (cfg.memory.experts == "nvme") {
    nvme_refusals("memory.experts", "the experts are");
    if (cfg.memory.optimizer != "device")
      inconsistent("memory.experts = nvme with memory.optimizer = " + cfg.memory.optimizer +
                   " is not implemented yet (the experts' moments are on the nvme tier already); accepted: "
                   "memory.optimizer = device with it");
  }
  // With a capacity factor the buffers hold every row a step can keep; a budget there
  // would do nothing, and saying so beats letting a user believe memory is bounded by it.
  if (e.capacity_factor > 0 && cfg.memory.moe_buffer_mb != MemoryConfig{}.moe_buffer_mb)
    inconsistent("memory.moe_buffer_mb = " + format_number(cfg.memory.moe_buffer_mb) +
                 " bounds dropless MoE buffers only, but moe.capacity_factor = " + format_number(e.capacity_factor) +
                 " sizes them from the capacity; accepted: remove memory.moe_buffer_mb or set moe.capacity_factor <= 0");
  if (e.experts > 0 && e.experts % cfg.parallel.ep != 0)
    inconsistent("moe.experts = " + std::to_string(e.experts) + " is not divisible by parallel.ep = " +
                 std::to_string(cfg.parallel.ep) + "; accepted: ep divides experts");
}

}  // namespace

std::string KeyInfo::accepted() const {
  if (type == KeyType::Bool) return "true or false";
  if (type == KeyType::String) {
    if (choices.empty()) return allow_empty ? "any string" : "non-empty string";
    std::string s = "one of: ";
    for (std::size_t i = 0; i < choices.size(); ++i) s += (i ? ", " : "") + choices[i];
    return s;
  }
  std::string noun = type == KeyType::Integer ? "integer" : "number";
  double top = (type == KeyType::Integer && hi == kIntMax) ? kInf : hi;  // the int limit is implied
  bool has_lo = lo > -kInf, has_hi = top < kInf;
  if (has_lo && has_hi)
    return noun + " in " + (lo_open ? "(" : "[") + format_number(lo) + ", " + format_number(hi) +
           (hi_open ? ")" : "]");
  if (has_lo) return noun + (lo_open ? " > " : " >= ") + format_number(lo);
  if (has_hi) return noun + (hi_open ? " < " : " <= ") + format_number(hi);
  return "any " + noun;
}

std::string format_value(const KeyValue& v) {
  if (auto b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&v)) {
    std::string s = format_number(*d);
    if (s.find_first_of(".einf") == std::string::npos) s += ".0";  // keep it a TOML float
    return s;
  }
  std::string out = "\"";
  for (char c : std::get<std::string>(v)) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return out + "\"";
}

const std::vector<KeyInfo>& config_keys() {
  static const std::vector<KeyInfo> keys{
      FURNACE_KEY(model, vocab_size, in(2, 65536), "Vocabulary size; must equal the `vocab_size` attribute of the data files (256 for byte-level text)."),
      FURNACE_KEY(model, seq_len, at_least(1), "Context length T: tokens per training sequence."),
      FURNACE_KEY(model, d_model, at_least(1), "Model (residual stream) width; a multiple of n_heads."),
      FURNACE_KEY(model, n_layers, at_least(1), "Number of transformer blocks."),
      FURNACE_KEY(model, n_heads, at_least(1), "Attention heads; must divide d_model."),
      FURNACE_KEY(model, ffn_hidden, at_least(1), "Hidden width of the dense (non-MoE) feed-forward layers."),
      FURNACE_KEY(model, norm, one_of({"layernorm", "rmsnorm"}), "Normalisation before attention and feed-forward."),
      FURNACE_KEY(model, activation, one_of({"gelu", "swiglu"}), "Feed-forward activation (dense layers and experts)."),
      FURNACE_KEY(model, norm_eps, above(0), "Epsilon added to the variance in the norms."),
      FURNACE_KEY(model, init_std, above(0), "Standard deviation of the normal weight initialisation."),
      FURNACE_KEY(moe, experts, at_least(0), "Experts per MoE layer (E); 0 = a dense model without MoE layers."),
      FURNACE_KEY(moe, top_k, at_least(1), "Experts each token is routed to; at most moe.experts."),
      FURNACE_KEY(moe, every, at_least(1), "Block l (from 0) is an MoE block when (l + 1) % every == 0; 1 = every block."),
      FURNACE_KEY(moe, expert_hidden, at_least(1), "Hidden width of each expert FFN."),
      FURNACE_KEY(moe, capacity_factor, any_number(), "Expert capacity = ceil(cf * tokens * top_k / E), overflow tokens are dropped; <= 0 = no limit."),
      FURNACE_KEY(moe, aux_loss_coef, at_least(0), "Weight of the GShard load-balancing loss."),
      FURNACE_KEY(moe, z_loss_coef, at_least(0), "Weight of the router z-loss."),
      FURNACE_KEY(train, seed, at_least(0), "Seed of initialisation and data order; same seed and layout give a bitwise identical run."),
      FURNACE_KEY(train, batch_size, at_least(1), "Global batch: sequences per optimizer step, over all data-parallel ranks."),
      FURNACE_KEY(train, steps, at_least(1), "Optimizer steps to train."),
      FURNACE_KEY(train, time_limit_min, at_least(0), "Stop (and evaluate) after this many minutes; 0 = no limit."),
      FURNACE_KEY(train, lr, above(0), "Peak learning rate, reached after warmup."),
      FURNACE_KEY(train, min_lr, at_least(0), "Learning rate at the end of the decay."),
      FURNACE_KEY(train, warmup_steps, at_least(0), "Steps of linear warmup (may exceed train.steps)."),
      FURNACE_KEY(train, weight_decay, at_least(0), "AdamW decoupled weight decay."),
      FURNACE_KEY(train, beta1, in(0, 1, true), "AdamW first-moment decay."),
      FURNACE_KEY(train, beta2, in(0, 1, true), "AdamW second-moment decay."),
      FURNACE_KEY(train, eps, above(0), "AdamW epsilon."),
      FURNACE_KEY(train, grad_clip, at_least(0), "Clip the global gradient norm to this; 0 = off."),
      FURNACE_KEY(train, eval_every, at_least(0), "Steps between validation evaluations; 0 = only at the end."),
      FURNACE_KEY(train, eval_batches, in(1, 10000), "Validation batches per evaluation (each evaluation costs this many forward passes)."),
      FURNACE_KEY(train, log_every, at_least(1), "Steps between metric lines."),
      FURNACE_KEY(train, on_nonfinite, one_of({"stop", "skip"}), "A step whose loss or gradient norm is not finite: `stop` (exit 4, naming the step and the first non-finite tensor) or `skip` its update (counted as `skipped_steps` in metrics; 10 in a row stop the run)."),
      FURNACE_KEY(train, precision, one_of({"fp32", "bf16", "fp16"}), "Precision of the model's GEMMs (attention, FFNs, experts, head): `bf16`/`fp16` round their operands to 16 bits and accumulate in fp32; master weights, AdamW moments, gradients' sums, norms, softmax, router and losses stay fp32 (docs/precision.md)."),
      FURNACE_KEY(train, gemm16, one_of({"auto", "onednn", "convert"}), "What runs the 16-bit GEMMs: `onednn` (AVX512-BF16/AMX kernels), `convert` (OpenBLAS sgemm on 16-bit-rounded operands, the same numbers at fp32 speed), `auto` (oneDNN where it has a kernel for this CPU)."),
      FURNACE_KEY(train, loss_scale, in(1, 1e30), "fp16 only: the initial dynamic loss scale, a power of two (scaling and unscaling are then exact). A step whose scaled gradients overflow is skipped and halves it."),
      FURNACE_KEY(train, loss_scale_window, at_least(1), "fp16 only: finite steps in a row after which the loss scale doubles."),
      FURNACE_KEY(data, train, non_empty(), "Training token file."),
      FURNACE_KEY(data, valid, non_empty(), "Validation token file."),
      FURNACE_KEY(output, dir, non_empty(), "Run directory: metrics.jsonl, the resolved config, checkpoints."),
      FURNACE_KEY(parallel, ep, at_least(1), "Expert-parallel group size; dp = world size / ep. Divides the world size and moe.experts."),
      FURNACE_KEY(comm, alltoall, one_of({"flat", "hierarchical", "auto"}), "Token exchange: one MPI_Alltoallv, or intra-node then between node leaders; `auto` picks the faster by the alpha-beta model on links measured at start (printed)."),
      FURNACE_KEY(comm, grad_dtype, one_of({"fp32", "bf16"}), "What the gradient allreduce (reduce-scatter with memory.zero = 1) moves: `fp32`, or `bf16` (half the bytes; each partial sum is added in fp32 and rounded to bf16, the result widened back to the fp32 gradients)."),
      FURNACE_KEY(comm, ranks_per_node, at_least(0), "Ranks per node for the hierarchical exchange; 0 = detect (MPI_COMM_TYPE_SHARED)."),
      FURNACE_KEY(comm, timing, one_of({"wall", "barrier"}), "How metrics.jsonl's `alltoall_ms` and `allreduce_ms` (rank 0's time in the token exchanges and the gradient reduction per step) are measured: `wall`, as they happen (including any wait for a late rank), or `barrier`, after an untimed barrier on the group (the transfer alone, as `furnace plan` predicts it; costs one barrier per exchange and step)."),
      FURNACE_KEY(comm, wait, one_of({"auto", "spin", "yield"}), "How a rank waits for the step's MPI calls: `spin` (MPI's blocking calls, which poll without pause: the fastest while each rank has its own CPU), `yield` (poll, giving the CPU away between polls), `auto` (yield when more of the node's ranks share this rank's CPUs than it has, e.g. 4 ranks on 2 cores, else spin). The banner says which."),
      FURNACE_KEY(comm, bucket_mb, in(1, 1024), "Gradient allreduce bucket size in MiB (allocated once per rank)."),
      FURNACE_KEY(checkpoint, dir, any_string(), "Checkpoint directory; \"\" = `ckpt` inside output.dir."),
      FURNACE_KEY(checkpoint, every, at_least(0), "Steps between checkpoints; 0 = only on SIGUSR1/SIGTERM and at the end."),
      FURNACE_KEY(checkpoint, keep, in(1, 1000), "Checkpoints kept; the oldest beyond this are deleted after each write."),
      FURNACE_KEY(checkpoint, async, boolean(), "Write from a host snapshot in the background while training continues."),
      FURNACE_KEY(checkpoint, fsync, boolean(), "fsync each checkpoint file and its directory before `latest` names it (a node crash then cannot leave a damaged newest checkpoint)."),
      FURNACE_KEY(checkpoint, alignment, in(1, 1 << 30), "Bytes to align HDF5 objects of 64 KiB or more to (H5Pset_alignment); match the file system stripe."),
      FURNACE_KEY(memory, recompute, one_of({"none", "attention", "block"}), "Activations dropped in the forward and recomputed in the backward: `attention` (the probabilities [B, H, T, T]), `block` (everything inside a block but its input and an MoE layer's routing and exchanged rows); gradients are bitwise the same; see docs/memory-recompute.md."),
      FURNACE_KEY(memory, zero, in(0, 1), "ZeRO-1: `1` keeps each rank's share of the AdamW moments only (dense tensors sharded over the world, expert tensors over their dp replicas); gradients are reduce-scattered and parameters all-gathered, and checkpoints keep global shapes; see docs/memory.md."),
      FURNACE_KEY(memory, device_budget_gb, at_least(0), "Refuse, before allocating, a run whose device-tier peak per rank (the memory report) exceeds this many GiB; 0 = only the memory the rank can have."),
      FURNACE_KEY(memory, host_budget_gb, at_least(0), "The same for the host tier (on a CPU build the device tier is host memory too)."),
      FURNACE_KEY(memory, optimizer, one_of({"device", "host", "nvme"}), "The tier of the AdamW moments `exp_avg`, `exp_avg_sq`: `device`, or `host` (the same memory on a CPU build, counted in the report's host column; bitwise the same training); or `nvme`: files in `memory.nvme_dir`, brought in group by group for the update (bitwise the same training); see docs/memory.md."),
      FURNACE_KEY(memory, nvme_group_mb, above(0), "`memory.optimizer = nvme`: MiB of each moment family per group of consecutive tensors (one transfer each); the window in memory is one group of both moments, plus two staging slots per moment; see docs/memory.md."),
      FURNACE_KEY(memory, experts, one_of({"device", "host", "nvme"}), "The tier of the expert tensors (parameters, gradients and moments): `device`, `host` (the same memory on a CPU build, counted in the report's host column; bitwise the same training), or `nvme`: files in `memory.nvme_dir`, each MoE layer's experts brought into memory for its forward, backward and update only (bitwise the same training); see docs/memory.md."),
      FURNACE_KEY(memory, nvme_dir, any_string(), "Directory of the nvme tier's files (one subdirectory per rank; a node-local NVMe file system); \"\" = `nvme` inside output.dir."),
      FURNACE_KEY(memory, activations, one_of({"auto", "fp32"}), "What the activations that only GEMMs read back (the norm outputs entering the QKV projection, qkv, attention's output, the FFNs' and experts' hidden activations) are kept in: `auto` = the GEMMs' 16-bit type under train.precision = bf16 | fp16 (half their bytes; the GEMMs round them to it anyway, so training is bitwise the same), fp32 otherwise; `fp32` = always fp32; see docs/precision.md."),
      FURNACE_KEY(memory, moe_buffer_mb, above(0), "Dropless MoE (`moe.capacity_factor <= 0`, ep > 1): MiB for the expert-side buffers of all MoE layers together (received rows, expert activations, their gradients); a step that sends a rank more rows exchanges in rounds. With a capacity factor the capacity bound sizes them, and a value other than the default is refused; see docs/memory.md."),
  };
  return keys;
}

Config parse_config(const std::string& toml_text, const std::vector<std::string>& overrides,
                    const std::string& path) {
  const std::string origin = clip(path);  // every message starts with it
  toml::table tbl;
  try {
    tbl = toml::parse(toml_text, path);
  } catch (const toml::parse_error& e) {
    // The description may quote the text it stopped at.
    throw ConfigError(origin + ":" + std::to_string(e.source().begin.line) + ":" +
                      std::to_string(e.source().begin.column) + ": TOML syntax error: " + clip(e.description()));
  }
  Config cfg;
  for (auto&& [sec_key, sec_node] : tbl) {
    std::string sec(sec_key.str()), where = located(origin, sec_key.source());
    if (!sec_node.is_table() && is_section(sec))
      throw ConfigError(where + ": section [" + sec + "] must be a table, not a " + toml_type_name(sec_node));
    if (!sec_node.is_table()) {
      // A top-level `key = value`: name the section it belongs in, when there is one.
      for (const auto& k : config_keys())
        if (k.name == sec) throw ConfigError(where + ": key " + sec + " must be inside its section: [" + k.section + "] " + sec + " = ...");
      throw ConfigError(unknown_section(where, sec));
    }
    if (!is_section(sec)) throw ConfigError(unknown_section(where, sec));
    for (auto&& [key, node] : *sec_node.as_table()) apply(cfg, sec, std::string(key.str()), node, located(origin, key.source()));
  }
  for (const auto& o : overrides) apply_override(cfg, o);
  validate_at(cfg, origin);
  return cfg;
}

std::string read_small_text_file(const std::string& path, const std::string& what) {
  const std::string name = what + " '" + clip(path) + "'";
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st))
    throw ConfigError(name + (ec && ec != std::errc::no_such_file_or_directory ? " cannot be read: " + ec.message()
                                                                              : " not found"));
  if (std::filesystem::is_directory(st)) throw ConfigError(name + " is a directory; name a .toml file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(name + " cannot be read (permissions?)");
  // Read at most the limit plus one byte, whatever the file claims to be: /dev/zero,
  // a FIFO or a growing file has no meaningful st_size.
  std::string text;
  char block[1 << 16];
  while (text.size() <= kMaxConfigBytes && in.read(block, sizeof block).gcount() > 0)
    text.append(block, std::size_t(in.gcount()));
  if (in.bad()) throw ConfigError(name + " could not be read to the end");
  if (text.size() > kMaxConfigBytes)
    throw ConfigError(name + " is larger than " + std::to_string(kMaxConfigBytes >> 20) +
                      " MiB; it should be a small TOML file (see configs/)");
  return text;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(read_small_text_file(path, "config file"), overrides, path);
}

void validate(const Config& cfg) { validate_at(cfg, "config"); }

std::string to_json(const Config& cfg) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& k : config_keys())
    std::visit([&](const auto& v) { j[k.section][k.name] = v; }, k.get(cfg));
  return j.dump(2);
}

std::string config_reference_markdown() {
  std::ostringstream md;
  const Config defaults;
  md << "# Configuration\n\n"
     << "<!-- Generated from the key table in src/io/config.cpp by config_reference_markdown();\n"
     << "     edit the table there, then paste the function's output here (a unit test compares). -->\n\n"
     << "A run is configured by one TOML file (`furnace train --config configs/tiny.toml`). Every key\n"
     << "is optional and keeps its default when absent. Any key can be overridden on the command line\n"
     << "with `--set section.key=value`; the value is TOML, or a bare word taken as a string\n"
     << "(`--set train.lr=3e-4 --set model.norm=rmsnorm`).\n\n"
     << "The whole configuration is checked before anything runs. An unknown section or key, a value\n"
     << "of the wrong type (an integer is accepted for a number, not the reverse), a value out of range\n"
     << "or an inconsistent combination stops with one line naming the key and what is accepted.\n"
     << "Combinations checked: `model.d_model` is a multiple of `model.n_heads`; when `moe.experts > 0`,\n"
     << "`moe.top_k <= moe.experts` and `parallel.ep` divides `moe.experts`; `memory.moe_buffer_mb` keeps\n"
     << "its default unless `moe.capacity_factor <= 0`.\n\n"
     << "Limits on what is read: a config file is read up to " << (kMaxConfigBytes >> 20) << " MiB and refused beyond\n"
     << "(so `--config /dev/zero` or an endless FIFO stops at once); an error message quotes at most\n"
     << kClipBytes << " bytes of a value, key or path, with its length, and control characters escaped.\n\n"
     << "Before the model is built, every rank checks the run against the machine and the ranks agree\n"
     << "(one line, exit code 2):\n\n"
     << "- `output.dir` and the checkpoint directory are created; an existing file in the way, a path\n"
     << "  of PATH_MAX (4096) bytes or more with the files inside it, a component over NAME_MAX (255)\n"
     << "  bytes or a directory that cannot be created is refused, naming the key;\n"
     << "- memory: an estimate of the largest allocations of a rank (parameters, gradients and AdamW\n"
     << "  moments; the attention probabilities `[B, H, T, T]` of every layer; the other activations\n"
     << "  and logits, with B = `train.batch_size` / ranks, T = `model.seq_len`) must fit in what the\n"
     << "  rank can have: the least of MemAvailable and the cgroup's free memory, divided by the ranks\n"
     << "  on the node, and of RLIMIT_AS (`ulimit -v`). The estimate is a lower bound; an allocation\n"
     << "  that still fails while the model is set up is refused the same way;\n"
     << "- Threads per rank, decided before Kokkos starts: Kokkos' threads (an OpenMP build) are\n"
     << "  `OMP_NUM_THREADS` (its first entry) when set, BLAS's `OPENBLAS_NUM_THREADS`, else\n"
     << "  `OMP_NUM_THREADS` (a value that is not a positive integer: refused, exit 2); otherwise\n"
     << "  both are the CPUs the process may run on (`sched_getaffinity`: a Slurm cpuset, `taskset`)\n"
     << "  divided among the ranks of the node that share them. Never more than that share, so\n"
     << "  ranks x threads stay within the cores (Kokkos and BLAS threads take turns: a GEMM runs\n"
     << "  between kernels, never inside one); the start-up banner names the counts and sources,\n"
     << "  e.g. `Kokkos OpenMP, 2 thread(s) (CPU affinity: 2 CPUs) | BLAS Haswell, 2 thread(s) (OPENBLAS_NUM_THREADS)`.\n\n"
     << "Data files have their own limits: [data.md](data.md).\n";
  for (const auto& s : kSections) {
    md << "\n## [" << s.name << "]\n\n" << s.doc << "\n\n"
       << "| key | type | default | accepted | meaning |\n|---|---|---|---|---|\n";
    for (const auto& k : config_keys()) {
      if (k.section != s.name) continue;
      const char* type = k.type == KeyType::Integer ? "integer"
                         : k.type == KeyType::Float ? "float"
                         : k.type == KeyType::Bool  ? "boolean"
                                                    : "string";
      md << "| `" << k.name << "` | " << type << " | `" << format_value(k.get(defaults)) << "` | " << k.accepted()
         << " | " << k.doc << " |\n";
    }
  }
  return md.str();
}

}  // namespace furnace::io
