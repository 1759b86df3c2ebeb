#include "app/plan_model.hpp"

#include <algorithm>
#include <cmath>

#include "memory/ledger.hpp"
#include "moe/router.hpp"

namespace furnace::app {

namespace {

using memory::Category;
using memory::Tier;

// What a rank's threads get of the machine: GEMM rates and memory bandwidth.
struct RankSpeed {
  const Machine& m;
  int ranks_per_node;
  double cores() const { return double(m.cores_per_node) / ranks_per_node; }  // < 1: oversubscribed
  double threads() const { return std::max(1.0, std::floor(cores())); }
  double gemm_rate(double flops, bool sixteen) const {
    const GemmCurve& c = sixteen ? m.gemm_16bit : m.gemm_fp32;
    if (!m.per_thread) return c.rate(flops);
    const GemmCurve& node = sixteen ? m.gemm_16bit_node : m.gemm_fp32_node;
    if (!node.points.empty() && threads() >= m.cores_per_node) return node.rate(flops);
    const double t = threads();
    const double share = std::min(1.0, cores());  // oversubscribed ranks share a core
    return c.rate(flops / t) * t * (t > 1 ? m.thread_efficiency : 1.0) * share;
  }
  // Streaming (copies, the optimizer sweep): the node's bandwidth shared by its ranks,
  // at most what the rank's threads reach; oversubscribed ranks share a core's.
  double bandwidth() const {
    const double node_share = m.memory_bandwidth / ranks_per_node;
    if (m.memory_bandwidth_thread <= 0) return node_share;
    return std::min(node_share, m.memory_bandwidth_thread * threads() * std::min(1.0, cores()));
  }
  // The trainer's elementwise kernels: kernel_threads threads (all the rank's when 0).
  double kernel_bandwidth() const { return kernels_at(m.kernel_bandwidth); }
  // The activation function's (GELU / SwiGLU): the norms' rate where not calibrated.
  double activation_bandwidth() const {
    return m.activation_bandwidth > 0 ? kernels_at(m.activation_bandwidth) : kernel_bandwidth();
  }
  // One thread's kernel rate scaled to the rank's threads (0: the streaming figure).
  double kernels_at(double one_thread) const {
    if (one_thread <= 0) return bandwidth();
    const double t = m.kernel_threads > 0 ? std::min<double>(m.kernel_threads, threads()) : threads();
    return std::min(m.memory_bandwidth / ranks_per_node, one_thread * t * std::min(1.0, cores()));
  }
};

// One GEMM shape of the step, `calls` times.
struct Gemm {
  double m, n, k, calls;
  bool sixteen;
  double flops() const { return 2 * m * n * k * calls; }
};

// The forward GEMMs of this rank's step (the trainer's kernels call these shapes;
// the backward runs two GEMMs of the same flops per forward GEMM). `expert_rows`: rows
// per local expert on the most-loaded rank.
std::vector<Gemm> forward_gemms(const model::GptSpec& s, double expert_rows, bool recompute_only) {
  const bool h = s.precision != kernels::Precision::FP32;
  const double n = double(s.batch) * s.seq, d = s.d_model, hd = s.head_dim();
  std::vector<Gemm> g;
  auto attention = [&] {  // causal, in row blocks of 128 (kernels/attention.cpp)
    for (int r0 = 0; r0 < s.seq; r0 += 128) {
      const double rows = std::min(s.seq, r0 + 128) - r0, cols = std::min(s.seq, r0 + 128);
      g.push_back({rows, cols, hd, double(s.batch) * s.heads, h});  // scores
      g.push_back({rows, hd, cols, double(s.batch) * s.heads, h});  // P V
    }
  };
  const bool swiglu = s.activation == moe::Activation::Swiglu;
  for (int l = 0; l < s.layers; ++l) {
    const bool moe = s.is_moe(l);
    if (recompute_only) {
      if (s.recompute == model::Recompute::None) continue;
      if (s.recompute == model::Recompute::Attention) {
        for (int r0 = 0; r0 < s.seq; r0 += 128)
          g.push_back({double(std::min(s.seq, r0 + 128) - r0), double(std::min(s.seq, r0 + 128)), hd,
                       double(s.batch) * s.heads, h});
        continue;
      }
    }
    g.push_back({n, 3 * d, d, 1, h});
    attention();
    g.push_back({n, d, d, 1, h});
    const double hid = moe ? s.expert_hidden : s.ffn_hidden;
    if (moe && recompute_only) continue;  // an MoE layer keeps its routed rows
    if (moe) {
      g.push_back({n, double(s.router.experts), d, 1, false});  // router, fp32
      g.push_back({expert_rows, hid * (swiglu ? 2 : 1), d, double(s.local_experts), h});
      g.push_back({expert_rows, d, hid, double(s.local_experts), h});
    } else {
      g.push_back({n, hid * (swiglu ? 2 : 1), d, 1, h});
      g.push_back({n, d, hid, 1, h});
    }
  }
  if (!recompute_only) g.push_back({n, double(s.vocab), d, 1, h});  // tied head
  return g;
}

// Floats the memory-bound kernels read and write per token, forward and backward
// (the backward counted as twice the forward): norms, residuals, softmax rows,
// activations, the MoE permutes and the router, the head's softmax and loss; and of
// those, the activation function's alone (timed at its own rate).
struct ElementwiseFloats {
  double all = 0, activation = 0;
};
ElementwiseFloats elementwise_floats_per_token(const model::GptSpec& s) {
  const double d = s.d_model, k = s.router.top_k, E = s.router.experts;
  const bool swiglu = s.activation == moe::Activation::Swiglu;
  double fwd = 0, act = 0;
  for (int l = 0; l < s.layers; ++l) {
    const bool moe = s.is_moe(l);
    const double hid = moe ? s.expert_hidden : s.ffn_hidden, copies = moe ? k : 1;
    fwd += 2 * 2 * d + 2 * 3 * d;                          // two norms, two residual adds
    fwd += 2.0 * s.heads * s.seq;                           // causal softmax: ~T/2 visible, 4 passes
    act += copies * hid * (swiglu ? 3 : 2);                 // activation
    if (moe) fwd += 4 * k * d + 3 * E;                      // permute, combine, router softmax and top-k
  }
  const double head = 3.0 * s.vocab;  // logits' softmax, loss and its gradient
  return {3 * (fwd + act) + head + 2 * d, 3 * act};  // + embedding gather and scatter-add
}

constexpr double kAdamBytesPerOwned = 28;  // AdamW: p, g, m, v read; p, m, v written
constexpr double kBytesPerParam = 8;       // every gradient: zeroed, and read for the norm

}  // namespace

Plan make_plan(const io::Config& cfg_in, const Machine& m, const PlanRequest& req) {
  const io::Config& cfg = cfg_in;
  io::validate(cfg);  // the combinations the trainer refuses (a search makes new ones)
  Plan plan;
  const int rpn = req.ranks_per_node > 0 ? req.ranks_per_node : m.ranks_per_node;
  if (req.nodes < 1) throw io::ConfigError("--nodes must be >= 1");
  if (req.nodes > m.max_nodes)
    throw io::ConfigError("--nodes " + std::to_string(req.nodes) + " exceeds the " + std::to_string(m.max_nodes) +
                          " nodes of " + m.name + " (machine.max_nodes)");
  const long long world = (long long)req.nodes * rpn;
  if (world > (1 << 30)) throw io::ConfigError("--nodes x --ranks-per-node is too large");
  plan.nodes = req.nodes;
  plan.layout = {.world = int(world), .rank = 0, .ep = cfg.parallel.ep, .ranks_per_node = rpn};
  if (const auto bad = comm::check_layout(int(world), cfg.parallel.ep, cfg.moe.experts, cfg.train.batch_size);
      !bad.empty())
    throw io::ConfigError(bad);
  // The step's shape and the machine's speed for this layout (memory and time use them).
  const model::GptSpec s = train::make_spec(cfg, plan.layout);
  const RankSpeed speed{m, rpn};
  const double tokens = double(s.batch) * s.seq;
  const bool moe = s.moe_layers() > 0;
  plan.imbalance = req.imbalance > 0 ? req.imbalance
                   : s.router.capacity_factor > 0 ? std::min(s.router.capacity_factor, 1.25)
                                                  : 1.25;
  plan.exchange_imbalance = req.exchange_imbalance > 0 ? req.exchange_imbalance : plan.imbalance;
  // The token exchange: the busiest rank receives `exchange_imbalance` x the mean rows. Its
  // time, and for comm.alltoall = "auto" the algorithm, come from comm's alpha-beta
  // model, which the trainer's auto choice uses too (with links it measures).
  if (moe && s.ep_size > 1) {
    const double row_bytes = double(train::exchange_row_bytes(s));
    const double bytes = tokens * s.router.top_k * row_bytes * plan.exchange_imbalance;
    const int ep = s.ep_size, L = std::min(rpn, ep), N = std::max(1, ep / L);
    // The bandwidth between nodes: beyond a taper group, the tree's upper level shares.
    comm::Link inter = m.inter;
    if (m.taper_group > 0 && N > m.taper_group) {
      const double outside = double(N - m.taper_group) / N;
      inter.bandwidth = m.inter.bandwidth / ((1 - outside) + outside * m.taper);
    }
    const comm::ExchangeShape shape{.ep = ep, .ranks_per_node = L, .bytes = bytes};
    plan.exchange = comm::choose_exchange(shape, m.intra, inter, speed.bandwidth());
    if (cfg.comm.alltoall != "auto") {
      const bool hier = cfg.comm.alltoall == "hierarchical" && N > 1 && L > 1;
      plan.exchange.algorithm = hier ? comm::RowExchange::Algorithm::Hierarchical : comm::RowExchange::Algorithm::Flat;
      plan.exchange.reason = cfg.comm.alltoall + " (comm.alltoall)";
    }
  }
  plan.memory = train::plan_memory(cfg, plan.layout, plan.exchange.algorithm);
  const auto& led = plan.memory.ledger;

  // Fit: a GPU's device memory per rank; host memory (and a CPU's device tier) per node.
  const double dev = double(led.peak(Tier::Device)), host = double(led.peak(Tier::Host)),
               nvme = double(led.peak(Tier::Nvme));
  if (m.device_is_host) {
    plan.tiers.push_back({"host memory (per node)", (dev + host) * rpn, m.host_bytes});
  } else {
    plan.tiers.push_back({"device memory (per rank)", dev, m.device_bytes});
    plan.tiers.push_back({"host memory (per node)", host * rpn, m.host_bytes});
  }
  if (nvme > 0) plan.tiers.push_back({"nvme (per node)", nvme * rpn, m.nvme_bytes});
  double worst = -1;
  for (const auto& t : plan.tiers) {
    plan.fits = plan.fits && t.fits();
    const double r = t.have > 0 ? t.need / t.have : 1e300;
    if (r > worst) worst = r, plan.binding = t.name;
  }

  const double mean_rows = moe ? tokens * s.ep_size * s.router.top_k / s.router.experts : 0;
  double rows = mean_rows * plan.imbalance;
  if (s.router.capacity_factor > 0 && moe)
    rows = std::min(rows, double(s.ep_size) * double(moe::expert_capacity(s.router, std::int64_t(tokens))));
  auto gemm_time = [&](const std::vector<Gemm>& gs, double passes) {
    double t = 0;
    for (const auto& g : gs)
      if (g.calls > 0 && g.m > 0) t += passes * g.flops() / speed.gemm_rate(2 * g.m * g.n * g.k, g.sixteen);
    return t;
  };
  plan.time.gemm = gemm_time(forward_gemms(s, rows, false), 3) + gemm_time(forward_gemms(s, rows, true), 1);
  double useful = 0;
  for (const auto& g : forward_gemms(s, mean_rows, false)) useful += 3 * g.flops();
  plan.model_flops = useful * double(world);
  const ElementwiseFloats per_token = elementwise_floats_per_token(s);
  double floats = (per_token.all - per_token.activation) * tokens;
  // 16-bit: the MoE exchange converts its rows on both sides, four exchanges per layer
  // (read 4 bytes, write 2). The GEMMs' own operand rounding is not added here: the
  // machine's 16-bit curve was measured through the same kernels::gemm call, which
  // rounds (convert) or packs (oneDNN) its operands itself. Neither are the 16-bit
  // activations' stores (memory.activations = auto): each rounds an operand once where
  // its forward and backward GEMMs rounded it twice (measured: the default model at 2
  // ranks in bf16 ran 521-524 ms/step against 534-543 with fp32 activations).
  if (s.precision != kernels::Precision::FP32 && s.ep_size > 1)
    floats += 1.5 * 2 * 4 * s.moe_layers() * tokens * s.router.top_k * s.d_model;
  plan.time.elementwise =
      floats * 4 / speed.kernel_bandwidth() + per_token.activation * tokens * 4 / speed.activation_bandwidth();
  plan.time.optimizer = (double(plan.memory.moment_bytes) / 8 * kAdamBytesPerOwned +
                         double(plan.memory.params) * kBytesPerParam) / speed.bandwidth();

  // All-to-all: 4 exchanges per MoE layer, each timed by comm's model above (plan.exchange).
  if (moe && s.ep_size > 1) {
    const bool hierarchical = plan.exchange.algorithm == comm::RowExchange::Algorithm::Hierarchical;
    const double t = hierarchical ? plan.exchange.hierarchical_s : plan.exchange.flat_s;
    plan.time.alltoall = 4.0 * s.moe_layers() * t;
  }
  // Gradient reduction per bucket over its group of p ranks: reduce-scatter plus
  // all-gather (Rabenseifner; also the pair of calls of a ZeRO-1 bucket split between
  // owners): 2 log2(p) latencies and
  // 2 (p - 1) / p of the bucket over the slowest link. The bf16 wire adds its two
  // conversion passes. Not overlapped with the backward here (docs/plan.md).
  const double wire = cfg.comm.grad_dtype == "bf16" ? 2 : 4;
  for (const auto& b : plan.memory.buckets) {
    const int p = b.ranks;
    // Ranks of the group on one node: the world's are consecutive; a dp group's are ep apart.
    const int per_node = b.kind == memory::ParamKind::Dense ? rpn : std::max(1, rpn / s.ep_size);
    const Link& link = p > per_node ? m.inter : m.intra;
    plan.time.allreduce += 2 * std::ceil(std::log2(double(p))) * link.latency_s +
                           2.0 * (p - 1) / p * double(b.count) * wire / link.bandwidth;
    // ZeRO-1, a bucket one rank owns: an allreduce (above) and a broadcast of the updated
    // fp32 parameters from the owner (as a scatter + allgather: log2(p) latencies and
    // 2 (p - 1) / p of the bucket).
    if (b.sole_owner)
      plan.time.allreduce += std::ceil(std::log2(double(p))) * link.latency_s +
                             2.0 * (p - 1) / p * double(b.count) * 4 / link.bandwidth;
    if (wire == 2) plan.time.allreduce += double(b.count) * 12 / speed.bandwidth();
  }
  // Offloaded state: the nvme tier's traffic per step (memory.md: experts 9 transfers of
  // their bytes, moments read and written), over the node's nvme shared by its ranks;
  // on an accelerator the host tier crosses PCIe both ways.
  const double expert_bytes = double(plan.memory.expert_params) * 4;
  double nvme_read = 0, nvme_write = 0, to_device = 0;
  if (cfg.memory.experts == "nvme") nvme_read += 6 * expert_bytes, nvme_write += 3 * expert_bytes;
  // The moments (state_offload.cpp): the update brings each group in, a group still in
  // memory is not read again, and the write-back runs on the I/O thread, waited for
  // only when its staging slot is needed again. With one group (the moments within
  // memory.nvme_group_mb) only the first step reads, and the write overlaps the next
  // forward and backward: only what of it outlasts them counts. With more, every group
  // is read and written each step, in the update.
  double overlapped_write = 0;
  if (cfg.memory.optimizer == "nvme") {
    if (plan.memory.offload_groups == 1)
      overlapped_write = rpn * double(plan.memory.moment_bytes) / std::max(m.nvme_write, 1.0);
    else
      nvme_read += plan.memory.moment_bytes, nvme_write += plan.memory.moment_bytes;
  }
  if (nvme_read > 0 || nvme_write > 0)
    plan.time.offload += rpn * (nvme_read / std::max(m.nvme_read, 1.0) + nvme_write / std::max(m.nvme_write, 1.0));
  if (overlapped_write > 0) {
    const auto& t = plan.time;
    plan.time.offload += std::max(0.0, overlapped_write - (t.gemm + t.elementwise + t.alltoall + t.allreduce));
  }
  if (!m.device_is_host) {
    if (cfg.memory.optimizer != "device") to_device += double(plan.memory.moment_bytes);
    if (cfg.memory.experts != "device") to_device += 4 * expert_bytes;
    plan.time.offload += to_device / m.h2d + to_device / m.d2h;
  }
  // Checkpoints: parameters and moments of this rank's share, the node's ranks together.
  if (cfg.checkpoint.every > 0) {
    const double file = double(plan.memory.moment_bytes) * 1.5;
    const double t = cfg.checkpoint.async ? file / speed.bandwidth() : rpn * file / m.checkpoint_write;
    plan.time.checkpoint = t / cfg.checkpoint.every;
  }
  const double step = plan.time.total();
  plan.tokens_per_s = step > 0 ? double(cfg.train.batch_size) * cfg.model.seq_len / step : 0;
  const double peak = s.precision == kernels::Precision::FP32 ? m.peak_fp32 : m.peak_16bit;
  plan.mfu = step > 0 ? plan.model_flops / (step * double(world) * peak) : 0;
  return plan;
}

}  // namespace furnace::app
