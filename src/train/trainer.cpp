#include "train/trainer.hpp"

#include "comm/exchange_cost.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "comm/fault.hpp"
#include "comm/mpi_check.hpp"
#include "comm/wait.hpp"
#include "kernels/optim.hpp"
#include "moe/moe_layer.hpp"
#include "train/resume.hpp"

namespace furnace::train {

namespace k = furnace::kernels;

model::GptSpec make_spec(const io::Config& c, const comm::Layout& g) {
  model::GptSpec s;
  s.vocab = c.model.vocab_size;
  s.seq = c.model.seq_len;
  s.d_model = c.model.d_model;
  s.layers = c.model.n_layers;
  s.heads = c.model.n_heads;
  s.ffn_hidden = c.model.ffn_hidden;
  s.rmsnorm = c.model.norm == "rmsnorm";
  s.activation = c.model.activation == "swiglu" ? moe::Activation::Swiglu : moe::Activation::Gelu;
  s.norm_eps = float(c.model.norm_eps);
  s.init_std = c.model.init_std;
  s.moe_every = c.moe.every;
  s.expert_hidden = c.moe.expert_hidden;
  s.router = {.experts = c.moe.experts, .top_k = c.moe.top_k,
              .capacity_factor = c.moe.capacity_factor, .aux_loss_coef = c.moe.aux_loss_coef,
              .z_loss_coef = c.moe.z_loss_coef};
  s.local_experts = c.moe.experts / g.ep;
  s.first_expert = s.local_experts * g.ep_rank();
  s.batch = c.train.batch_size / g.world;
  s.ep_size = g.ep;
  kernels::parse_precision(c.train.precision, s.precision);  // the config accepted only these names
  // memory.activations = auto: the GEMM-only activations in the GEMMs' own 16 bits.
  s.stored_operands = c.memory.activations == "auto" ? s.precision : kernels::Precision::FP32;
  if (c.moe.capacity_factor <= 0 && s.moe_layers() > 0) {
    // Dropless: the capacity bound is every token of the ep group (worst-case buffers);
    // the budget caps them, and a skewed step exchanges in rounds.
    const auto budget = std::uint64_t(c.memory.moe_buffer_mb * double(1 << 20));
    s.moe_buffer_rows =
        moe::buffer_rows_for(budget, s.moe_layers(), s.d_model, s.expert_hidden, s.activation, s.stored_operands);
    if (s.moe_buffer_rows < 1)
      throw io::ConfigError("memory.moe_buffer_mb = " + std::to_string(c.memory.moe_buffer_mb) +
                            " holds not one expert-side row of the " + std::to_string(s.moe_layers()) +
                            " MoE layers; accepted: a larger value");
  }
  s.recompute = c.memory.recompute == "attention" ? model::Recompute::Attention
                : c.memory.recompute == "block"   ? model::Recompute::Block
                                                  : model::Recompute::None;
  return s;
}

namespace {

// The trainer's own buffers besides the model's: this rank's input and target tokens.
void allocate_batch(memory::Arenas& arenas, const model::GptSpec& s, kernels::View1<kernels::index_t>& inputs,
                    kernels::View1<kernels::index_t>& targets) {
  const std::int64_t n = std::int64_t(s.batch) * s.seq;
  inputs = arenas.activations.view1<kernels::index_t>(n);
  targets = arenas.activations.view1<kernels::index_t>(n);
}

// The tiers of the state families (memory.optimizer; the rest stay on the device).
memory::Placement placement(const io::Config& c) {
  memory::Placement p;
  p.optimizer = c.memory.optimizer == "host" ? memory::Tier::Host : memory::Tier::Device;
  p.experts = c.memory.experts == "host" ? memory::Tier::Host : memory::Tier::Device;
  return p;
}

// memory.experts / memory.optimizer = nvme: what the store keeps on the nvme tier.
void offload_state(const io::Config& c, memory::StateStore& ps) {
  using Offload = memory::StateStore::Offload;
  if (c.memory.experts == "nvme") ps.offload(Offload::Experts);
  if (c.memory.optimizer == "nvme")
    ps.offload(Offload::Moments, std::uint64_t(c.memory.nvme_group_mb * double(1 << 20)));
}

}  // namespace

memory::ShardLayout zero_layout(const io::Config& cfg, const comm::Layout& g) {
  if (cfg.memory.zero == 0) return {};
  return {.dense_ranks = g.world, .dense_rank = g.rank, .expert_ranks = g.dp(), .expert_rank = g.dp_rank()};
}

namespace {

// measure_memory's work, leaving the measured store and arenas to the caller.
void build_measured(const io::Config& cfg, const model::GptSpec& spec, const memory::ShardLayout& zero,
                    memory::Ledger& planned, memory::StateStore& ps, memory::Arenas& arenas) {
  offload_state(cfg, ps);
  model::Gpt model(spec, ps, arenas);
  ps.allocate(planned, placement(cfg), memory::Mode::Measure, zero);
  memory::StateOffload::record_staging(ps, planned);
  kernels::View1<kernels::index_t> inputs, targets;
  allocate_batch(arenas, spec, inputs, targets);
  if (const auto b = Checkpointer::snapshot_bytes(cfg, ps))
    planned.add(memory::Category::Workspace, memory::Tier::Host, Checkpointer::kSnapshotLabel, b);
}

}  // namespace

memory::Ledger measure_memory(const io::Config& cfg, const model::GptSpec& spec, const memory::ShardLayout& zero) {
  memory::Ledger planned;
  memory::StateStore ps;
  memory::Arenas arenas("Trainer", planned, memory::Mode::Measure);
  build_measured(cfg, spec, zero, planned, ps, arenas);
  return planned;
}

MemoryPlan plan_memory(const io::Config& cfg, const comm::Layout& layout, comm::RowExchange::Algorithm exchange) {
  const model::GptSpec spec = make_spec(cfg, layout);
  MemoryPlan plan;
  memory::Ledger& planned = plan.ledger;
  memory::StateStore ps;
  memory::Arenas arenas("Trainer", planned, memory::Mode::Measure);
  build_measured(cfg, spec, zero_layout(cfg, layout), planned, ps, arenas);
  const auto wire = cfg.comm.grad_dtype == "bf16" ? kernels::Precision::BF16 : kernels::Precision::FP32;
  plan.buckets = comm::GradSync::plan(ps.infos(), std::size_t(cfg.comm.bucket_mb) << 20, layout.world, layout.dp());
  comm::GradSync::mark_owners(ps, plan.buckets);
  if (const auto b = comm::GradSync::wire_bytes(plan.buckets, wire))
    planned.add(memory::Category::Communication, memory::Tier::Host, comm::GradSync::kWireLabel, b);
  if (const auto b = comm::GradSync::scatter_bytes(ps, plan.buckets, wire))
    planned.add(memory::Category::Communication, memory::Tier::Host, comm::GradSync::kScatterLabel, b);
  if (spec.ep_size > 1 && spec.moe_layers() > 0) {
    // Each MoE layer's exchange sends this rank's tokens top_k times (balanced routing).
    const std::size_t row = exchange_row_bytes(spec);
    const std::int64_t rows = std::int64_t(spec.batch) * spec.seq * spec.router.top_k;
    const bool spans_nodes = layout.ranks_per_node > 1 && layout.ranks_per_node < spec.ep_size;
    if (const auto b = spans_nodes ? comm::RowExchange::balanced_staging_bytes(exchange, rows, row) : 0)
      planned.add(memory::Category::Communication, memory::Tier::Host, comm::RowExchange::kStagingLabel, b);
  }
  for (int i = 0; i < int(ps.infos().size()); ++i) {
    const auto& p = ps.info(i);
    plan.params += p.size;
    if (p.kind == memory::ParamKind::Expert) plan.expert_params += p.size;
    // Whatever tier holds them: both moments of this rank's share.
    plan.moment_bytes += 2 * std::uint64_t(ps.shards().part(i).count) * sizeof(float);
  }
  plan.offload_groups = ps.offloads() ? int(ps.offload_groups().size()) : 0;
  return plan;
}

comm::RowExchange::Algorithm resolve_exchange(const io::Config& cfg, const comm::Groups& groups) {
  using Algorithm = comm::RowExchange::Algorithm;
  if (cfg.comm.alltoall != "auto") return cfg.comm.alltoall == "hierarchical" ? Algorithm::Hierarchical : Algorithm::Flat;
  if (groups.ep() <= 1 || cfg.moe.experts <= 0) return Algorithm::Flat;
  const model::GptSpec spec = make_spec(cfg, groups.layout());
  const comm::MeasuredLinks links = comm::measure_links(groups);
  // A rank's rows per exchange at balanced routing (every MoE layer moves the same).
  const double row = double(exchange_row_bytes(spec));
  const comm::ExchangeShape shape{.ep = spec.ep_size, .ranks_per_node = groups.layout().ranks_per_node,
                                  .bytes = double(spec.batch) * spec.seq * spec.router.top_k * row};
  const comm::ExchangeChoice c = comm::choose_exchange(shape, links.intra, links.inter, links.copy_bandwidth);
  if (groups.rank() == 0)
    std::printf("comm.alltoall = auto: %s, every MoE layer; links measured: intra-node %.1f us %.2f GB/s%s, "
                "inter-node %.1f us %.2f GB/s%s\n",
                c.reason.c_str(), links.intra.latency_s * 1e6, links.intra.bandwidth / 1e9,
                links.has_intra ? "" : " (no pair: copied)", links.inter.latency_s * 1e6, links.inter.bandwidth / 1e9,
                links.has_inter ? "" : " (no pair: copied)");
  return c.algorithm;
}

Trainer::Trainer(const io::Config& cfg, comm::Groups& groups, const MemoryCheck& check)
    : cfg_(cfg),
      groups_(groups),
      exchange_algorithm_(resolve_exchange(cfg, groups)),
      exchange_(groups.ep() > 1 && cfg.moe.experts > 0
                    ? std::make_unique<comm::RowExchange>(groups, exchange_algorithm_, cfg.model.d_model, &ledger_)
                    : nullptr),
      spec_(make_spec(cfg, groups.layout())),
      opt_({.beta1 = cfg.train.beta1, .beta2 = cfg.train.beta2, .eps = cfg.train.eps,
            .weight_decay = cfg.train.weight_decay, .grad_clip = cfg.train.grad_clip}),
      schedule_({.lr = cfg.train.lr, .min_lr = cfg.train.min_lr, .warmup = cfg.train.warmup_steps,
                 .total = cfg.train.steps}),
      scaler_(cfg.train.precision == "fp16", cfg.train.loss_scale, cfg.train.loss_scale_window) {
  spec_.exchange = exchange_.get();
  memory::Ledger planned;
  try {
    planned = plan_memory(cfg, groups.layout(), exchange_algorithm_).ledger;
  } catch (const std::length_error& e) {
    throw io::ConfigError(e.what());
  } catch (const std::overflow_error& e) {
    throw io::ConfigError(std::string(e.what()) + ": model.d_model = " + std::to_string(cfg.model.d_model) +
                          ", model.seq_len = " + std::to_string(cfg.model.seq_len) + ", train.batch_size = " +
                          std::to_string(cfg.train.batch_size) + " are far beyond any machine; lower them");
  }
  if (check) check(planned);
  arenas_.reserve(planned);
  offload_state(cfg, ps_);
  model_ = std::make_unique<model::Gpt>(spec_, ps_, arenas_);
  ps_.allocate(ledger_, placement(cfg), memory::Mode::Allocate, zero_layout(cfg, groups.layout()));
  grad_sync_ = std::make_unique<comm::GradSync>(
      ps_, groups, std::size_t(cfg.comm.bucket_mb) << 20,
      cfg.comm.grad_dtype == "bf16" ? kernels::Precision::BF16 : kernels::Precision::FP32, &ledger_);
  const bool timing_barrier = cfg.comm.timing == "barrier";  // comm/phase_timer.hpp
  grad_sync_->timer().set_barrier(timing_barrier);
  if (exchange_) exchange_->timer().set_barrier(timing_barrier);
  ps_.initialize(cfg.train.seed);  // the tensors in memory; set_up_offload the others
  if (ps_.offloads()) set_up_offload();
  comm::fault::maybe_throw("trainer.setup");  // testers: one rank fails before the collective opens below
  // Aux-loss statistics are global over the world, so the objective is layout-independent.
  MPI_Comm world = groups.world();
  model_->set_reducer([world](double* v, int n) {
    comm::allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, world);
  });
  const std::int64_t min_tokens = cfg.model.seq_len + 2;
  train_data_ = std::make_unique<io::TokenDataset>(cfg.data.train, cfg.model.vocab_size, min_tokens,
                                                       groups.world());
  valid_data_ = std::make_unique<io::TokenDataset>(cfg.data.valid, cfg.model.vocab_size, min_tokens,
                                                       groups.world());
  ckpt_ = std::make_unique<Checkpointer>(cfg, groups, ps_, &ledger_);
  if (offload_) ckpt_->set_offload(&ckpt_write_access_);
  if (const char* fault = std::getenv("FURNACE_TEST_NAN_GRAD")) {
    std::istringstream in(fault);
    std::getline(in, fault_tensor_, '@');
    for (std::string s; std::getline(in, s, ',');) fault_steps_.push_back(std::stol(s));
    if (ps_.find(fault_tensor_) < 0 || ps_.offloaded(ps_.find(fault_tensor_), memory::Family::Grad))
      throw std::invalid_argument("FURNACE_TEST_NAN_GRAD names no tensor in memory '" + fault_tensor_ + "'");
  }
  allocate_batch(arenas_, spec_, inputs_, targets_);
}

std::string Trainer::memory_report(const std::string& when) const {
  unsigned long long mine = ledger_.peak(memory::Tier::Device) + ledger_.peak(memory::Tier::Host), most = 0;
  mpiCheck(MPI_Allreduce(&mine, &most, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, groups_.world()));
  // The check of the ledger against the process: resident growth since set-up began
  // (libraries, MPI and HDF5 buffers count there too, so it is a little larger).
  const std::uint64_t hwm = memory::process_status_bytes("VmHWM");
  const std::uint64_t growth = hwm > resident_at_start_ ? hwm - resident_at_start_ : 0;
  char resident[256];
  std::snprintf(resident, sizeof resident,
                "  resident (rank %d): peak VmHWM %s, %s more than when set-up began; ledger peak %s (ratio %.3f)\n",
                groups_.rank(), memory::format_bytes(hwm).c_str(), memory::format_bytes(growth).c_str(),
                memory::format_bytes(mine).c_str(), mine > 0 ? double(growth) / double(mine) : 0.0);
  std::string tier;
  if (offload_) {
    // What the nvme tier moved so far, and the rate its transfers ran at (bytes over
    // the time spent in them, summed over the families' I/O threads).
    const auto t = offload_->traffic();
    auto rate = [](std::uint64_t b, double s) { return s > 0 ? double(b) / s / 1e9 : 0.0; };
    char line[400];
    std::snprintf(line, sizeof line,
                  "  nvme tier (rank %d): %s read at %.2f GB/s, %s written at %.2f GB/s (in transfers; %s)\n",
                  groups_.rank(), memory::format_bytes(t.bytes_read).c_str(), rate(t.bytes_read, t.read_s),
                  memory::format_bytes(t.bytes_written).c_str(), rate(t.bytes_written, t.write_s),
                  offload_->store(offload_->families().front()).file().mode().c_str());
    tier = line;
  }
  return ledger_.report("memory " + when + " (rank " + std::to_string(groups_.rank()) + "; largest peak over " +
                        std::to_string(groups_.size()) + " rank(s): " + memory::format_bytes(most) + ")") +
         resident + tier;
}

void Trainer::load_local_batch(const io::TokenDataset& data, int stream, long index,
                               std::vector<std::int32_t>& tokens) const {
  const int B = cfg_.train.batch_size, T = spec_.seq;
  auto starts = io::batch_starts(cfg_.train.seed, index, stream, B, T, data.size());
  // This rank's contiguous share of the global batch.
  std::vector<std::int64_t> mine(starts.begin() + groups_.rank() * spec_.batch,
                                 starts.begin() + (groups_.rank() + 1) * spec_.batch);
  data.read_windows(mine, T, tokens);
}

// Forward (and backward) of one batch of tokens [local_batch, seq+1]: the global mean
// cross-entropy, and whether any rank has a stop request (carried by the same
// reduction, so evaluation can check every batch without a collective of its own).
Trainer::Loss Trainer::forward_loss(const std::vector<std::int32_t>& tokens, bool backward,
                                    StepResult* r) {
  const int T = spec_.seq, B = spec_.batch;
  auto in_h = Kokkos::create_mirror_view(inputs_);
  auto tg_h = Kokkos::create_mirror_view(targets_);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      in_h(b * T + t) = tokens[b * (T + 1) + t];
      tg_h(b * T + t) = tokens[b * (T + 1) + t + 1];
    }
  Kokkos::deep_copy(inputs_, in_h);
  Kokkos::deep_copy(targets_, tg_h);
  auto parts = model_->forward(inputs_, targets_);
  if (parts.bad_targets > 0) comm::abort_job("token out of range in a batch (corrupt data file?)", 4);
  const double global_tokens = double(cfg_.train.batch_size) * T;
  double sums[2] = {parts.ce_sum, stop_request() != kNoStop ? 1.0 : 0.0};
  comm::allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, groups_.world());
  const double ce = sums[0] / global_tokens;
  if (r) {
    r->ce = ce;
    r->aux = parts.aux;
    r->z = parts.z;
    r->moe_rounds = parts.moe_rounds;
    r->total = ce + cfg_.moe.aux_loss_coef * parts.aux + cfg_.moe.z_loss_coef * parts.z;
  }
  if (backward) {
    // Each rank's gradients are of the global objective's share on its tokens:
    // the bucketed reductions sum them while the backward goes on.
    grad_sync_->begin();
    model_->backward(global_tokens, [this](int i) { grad_sync_->ready(i); }, float(scaler_.scale()));
    grad_sync_->finish();
  }
  return {ce, sums[1] > 0};
}

void Trainer::take_comm_seconds(StepResult& r) {
  r.alltoall_s = exchange_ ? exchange_->timer().take() : 0;
  r.allreduce_s = grad_sync_->timer().take();
}

StepResult Trainer::compute_gradients(long step, std::vector<std::int32_t>* batch) {
  StepResult r;
  take_comm_seconds(r);  // from here: what an evaluation before this step spent is not this step's
  load_local_batch(*train_data_, 0, step, batch_);
  if (batch) *batch = batch_;
  ps_.zero_resident(memory::Family::Grad);  // offloaded groups: zeroed as they come in
  forward_loss(batch_, true, &r);
  if (!fault_steps_.empty()) inject_test_fault(step);
  // Dense gradients are identical on every rank after the reduction; each expert
  // gradient lives on its ep slice: count dense once, experts once per ep group.
  // ZeRO-1: each element is reduced on its one owner only: sum the owned parts over
  // the world.
  double dense = AdamW::grad_sq_sum(ps_, memory::ParamKind::Dense);
  double expert = AdamW::grad_sq_sum(ps_, memory::ParamKind::Expert, offload_ ? &offloaded_sq_ : nullptr);
  double expert_all = expert;
  if (ps_.moments_sharded()) {
    double both = dense + expert;
    comm::allreduce(MPI_IN_PLACE, &both, 1, MPI_DOUBLE, MPI_SUM, groups_.world());
    dense = both, expert_all = 0;
  } else if (groups_.size() > 1) {
    comm::allreduce(&expert, &expert_all, 1, MPI_DOUBLE, MPI_SUM, groups_.ep_comm());
  }
  // The gradients are of the scaled loss (fp16); the norm is said of the loss itself.
  r.loss_scale = scaler_.scale();
  r.grad_norm = std::sqrt(dense + expert_all) / r.loss_scale;
  return r;
}

double Trainer::apply_update(long step, StepResult& r) {
  r.checkpoint_hold_s = ckpt_->hold_until_snapshot();  // a background copy must finish first
  r.lr = schedule_.at(step);
  // Unscaling (fp16: 1 / a power of two, exact) and clipping are one multiplication.
  const double unscale = 1.0 / r.loss_scale;
  opt_.clip(ps_, r.grad_norm, unscale);
  opt_.update(ps_, r.lr);
  if (offload_) update_offloaded(opt_.clip_factor(r.grad_norm) * unscale);
  scaler_.finite_step();
  grad_sync_->gather_params();
  return r.lr;
}

std::string Trainer::resume(const std::string& spec) {
  const bool root = groups_.rank() == 0;
  Resumed r;
  if (spec == "auto") {
    r = resume_auto(ckpt_->dir(), ps_, groups_, offload_ ? &ckpt_read_access_ : nullptr);
  } else {
    r.path = io::resolve_resume(ckpt_->dir(), spec);
    r.meta = io::read_checkpoint(r.path, ps_, groups_, &r.optimizer_step, offload_ ? &ckpt_read_access_ : nullptr);
  }
  if (r.path.empty()) return "";
  // Every rank read the same meta: the same verdict everywhere, no collective needed.
  if (r.meta.step > cfg_.train.steps)
    throw io::CheckpointError("checkpoint '" + r.path + "' is at step " + std::to_string(r.meta.step) +
                              ", beyond train.steps = " + std::to_string(cfg_.train.steps) +
                              "; raise train.steps to continue it, or start a new run in another checkpoint.dir");
  opt_.set_step(r.optimizer_step);
  start_step_ = r.meta.step;
  // fp16 continues at the scale it had; from another precision it starts at train.loss_scale.
  if (r.meta.loss_scale_log2 >= 0) scaler_.restore(std::ldexp(1.0, r.meta.loss_scale_log2), r.meta.loss_scale_good_steps);
  if (root) {
    std::printf("resumed from %s: step %ld, written by world %d = dp %d x ep %d\n", r.path.c_str(),
                r.meta.step, r.meta.world, r.meta.dp, r.meta.ep);
    // Shapes were checked by the read; any other change is allowed, and said.
    for (const auto& d : config_differences(r.meta.config_json, io::to_json(cfg_)))
      std::printf("resume: %s\n", d.c_str());
    std::fflush(stdout);
  }
  return r.path;
}

EvalResult Trainer::evaluate() {
  EvalResult e;
  double sum = 0;
  std::vector<std::int32_t> tokens;
  while (e.batches < cfg_.train.eval_batches && !e.stop_requested) {
    load_local_batch(*valid_data_, 1, e.batches, tokens);
    const Loss l = forward_loss(tokens, false, nullptr);
    sum += l.ce;
    ++e.batches;
    e.stop_requested = l.stop_requested;
  }
  e.loss = sum / e.batches;
  return e;
}

std::string Trainer::first_nonfinite_tensor() const {
  // Values first: a non-finite parameter makes everything after it non-finite too.
  // code = i (value of tensor i) or n + i (its gradient); 2n: none on this rank.
  const int n = int(ps_.infos().size());
  int mine[2] = {2 * n, groups_.rank()}, first[2];
  // Offloaded tensors (memory.experts = nvme) are not in memory: their gradients are
  // judged by the sums of squares taken in the backward, their values not at all.
  for (int i = 0; i < n && mine[0] == 2 * n; ++i)
    if (!ps_.offloaded(i, memory::Family::Param) && !std::isfinite(k::sum_squares<float>(ps_.slice(ps_.params(), i)))) mine[0] = i;
  for (int i = 0; i < n && mine[0] == 2 * n; ++i)
    if (!std::isfinite(ps_.offloaded(i, memory::Family::Grad) ? offloaded_sq_[std::size_t(i)] : k::sum_squares<float>(ps_.slice(ps_.grads(), i))))
      mine[0] = n + i;
  mpiCheck(MPI_Allreduce(mine, first, 1, MPI_2INT, MPI_MINLOC, groups_.world()));
  if (first[0] == 2 * n) return "every parameter and gradient is finite (the forward overflowed)";
  const bool value = first[0] < n;
  return std::string("first non-finite tensor: ") + (value ? "value" : "gradient") + " of " +
         ps_.info(value ? first[0] : first[0] - n).name +
         (groups_.size() > 1 ? " (rank " + std::to_string(first[1]) + ")" : "");
}

void Trainer::inject_test_fault(long step) {
  if (groups_.rank() != 0 || std::find(fault_steps_.begin(), fault_steps_.end(), step + 1) == fault_steps_.end())
    return;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Kokkos::deep_copy(Kokkos::subview(ps_.slice(ps_.grads(), ps_.find(fault_tensor_)), std::make_pair(0, 1)), nan);
}

}  // namespace furnace::train
