// `furnace plan`: bytes, fit and step time of a configuration on a described machine,
// for one node count, a search over layouts, or a sweep over node counts.
#include <mpi.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "app/commands.hpp"
#include "app/plan_model.hpp"
#include "io/clip.hpp"
#include "memory/ledger.hpp"

namespace furnace::app {

namespace {

std::string gib(double b) { return memory::format_bytes(std::uint64_t(std::max(0.0, b))); }

std::string seconds(double s) {
  char b[32];
  if (s >= 1) std::snprintf(b, sizeof b, "%.3f s", s);
  else if (s >= 1e-3) std::snprintf(b, sizeof b, "%.2f ms", s * 1e3);
  else std::snprintf(b, sizeof b, "%.1f us", s * 1e6);
  return b;
}

std::string describe_layout(const io::Config& c, const Plan& p) {
  std::ostringstream o;
  o << p.nodes << " node(s) x " << p.layout.ranks_per_node << " rank(s) = " << p.layout.world << " ranks (dp "
    << p.layout.dp() << " x ep " << p.layout.ep << "), batch " << c.train.batch_size / p.layout.world
    << " per rank, " << c.train.precision << ", zero " << c.memory.zero << ", recompute " << c.memory.recompute
    << ", optimizer on " << c.memory.optimizer << ", experts on " << c.memory.experts << ", alltoall "
    << c.comm.alltoall;
  return o.str();
}

// The most sequences per rank that fit (0: not even one), by doubling then bisection.
int largest_batch(io::Config c, const Machine& m, const PlanRequest& req, const comm::Layout& layout) {
  auto fits = [&](int b) {
    c.train.batch_size = b * layout.world;
    try {
      return make_plan(c, m, req).fits;
    } catch (const std::exception&) {
      return false;
    }
  };
  if (!fits(1)) return 0;
  int lo = 1, hi = 2;
  while (hi <= (1 << 20) / std::max(1, layout.world) && fits(hi)) lo = hi, hi *= 2;
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

// Peak bytes per category and tier of rank 0 (the tiers that hold anything).
void print_bytes(const Plan& p) {
  const auto& led = p.memory.ledger;
  const double total_params = double(p.memory.params - p.memory.expert_params) +
                              double(p.memory.expert_params) * p.layout.ep;
  std::printf("model: %.4g parameters; rank 0 holds %.4g (%.4g of them expert)\n", total_params,
              double(p.memory.params), double(p.memory.expert_params));
  std::vector<memory::Tier> tiers;
  for (auto t : memory::kTiers)
    if (led.peak(t) > 0) tiers.push_back(t);
  std::printf("bytes per rank (rank 0; the trainer's own sizing code)\n  %-14s", "");
  for (auto t : tiers) std::printf(" %12s", memory::tier_name(t));
  std::printf("\n");
  for (auto c : memory::kCategories) {
    std::printf("  %-14s", memory::category_name(c));
    for (auto t : tiers) std::printf(" %12s", gib(double(led.peak(c, t))).c_str());
    std::printf("\n");
  }
  std::printf("  %-14s", "total");
  for (auto t : tiers) std::printf(" %12s", gib(double(led.peak(t))).c_str());
  std::printf("\n");
}

void print_plan(const std::string& what, const io::Config& c, const Machine& m, const Plan& p, int best_batch) {
  std::printf("plan: %s on %s\n  %s\n", what.c_str(), m.name.c_str(), describe_layout(c, p).c_str());
  print_bytes(p);
  std::printf("fit: %s; binding: %s\n", p.fits ? "fits" : "DOES NOT FIT", p.binding.c_str());
  for (const auto& t : p.tiers)
    std::printf("  %-26s need %10s of %10s (%5.1f%%)%s\n", t.name.c_str(), gib(t.need).c_str(), gib(t.have).c_str(),
                t.have > 0 ? 100 * t.need / t.have : 0.0, t.fits() ? "" : "  <- over");
  if (best_batch >= 0)
    std::printf("largest batch that fits: %d sequence(s) per rank (train.batch_size = %lld)\n", best_batch,
                (long long)best_batch * p.layout.world);
  const auto& t = p.time;
  const double total = t.total();
  std::printf("step time (predicted, slowest rank): %s; routing imbalance %.2f (experts), %.2f (exchange)\n",
              seconds(total).c_str(), p.imbalance, p.exchange_imbalance);
  if (p.layout.ranks_per_node > m.cores_per_node)
    std::printf(c.comm.wait == "spin"
                    ? "  (%d ranks on %d cores per node: oversubscribed, and comm.wait = \"spin\": ranks waiting in "
                      "MPI hold cores, which the model leaves out: the time is a lower bound)\n"
                    : "  (%d ranks on %d cores per node: oversubscribed; the model shares each core among its ranks, "
                      "as comm.wait's yielding waits let them)\n",
                p.layout.ranks_per_node, m.cores_per_node);
  const std::pair<const char*, double> parts[] = {
      {"gemm", t.gemm}, {"elementwise", t.elementwise}, {"optimizer", t.optimizer}, {"all-to-all", t.alltoall},
      {"grad reduction", t.allreduce}, {"offload I/O", t.offload}, {"checkpoint", t.checkpoint}};
  for (const auto& [name, v] : parts)
    std::printf("  %-15s %10s  %5.1f%%\n", name, seconds(v).c_str(), total > 0 ? 100 * v / total : 0.0);
  if (!p.exchange.reason.empty()) std::printf("token exchange: %s\n", p.exchange.reason.c_str());
  std::printf("throughput: %.4g tokens/s; %.4g model FLOP/s (%.1f%% MFU of the %s peak)\n", p.tokens_per_s,
              total > 0 ? p.model_flops / total : 0.0, 100 * p.mfu, c.train.precision == "fp32" ? "fp32" : "16-bit");
}

nlohmann::json plan_json(const io::Config& c, const Machine& m, const Plan& p) {
  nlohmann::json j;
  j["nodes"] = p.nodes;
  j["world"] = p.layout.world;
  j["ep"] = p.layout.ep;
  j["batch_per_rank"] = c.train.batch_size / p.layout.world;
  j["fits"] = p.fits;
  j["oversubscribed"] = p.layout.ranks_per_node > m.cores_per_node;
  j["binding"] = p.binding;
  j["imbalance"] = p.imbalance;
  j["exchange_imbalance"] = p.exchange_imbalance;
  j["alltoall"] = p.exchange.algorithm == comm::RowExchange::Algorithm::Hierarchical ? "hierarchical" : "flat";
  j["alltoall_s"] = {{"flat", p.exchange.flat_s}, {"hierarchical", p.exchange.hierarchical_s}};
  j["peak_bytes"] = nlohmann::json::parse(p.memory.ledger.peak_json());
  for (auto tier : memory::kTiers) j["tier_peak_bytes"][memory::tier_name(tier)] = p.memory.ledger.peak(tier);
  const auto& t = p.time;
  j["time_s"] = {{"gemm", t.gemm}, {"elementwise", t.elementwise}, {"optimizer", t.optimizer},
                 {"alltoall", t.alltoall}, {"allreduce", t.allreduce}, {"offload", t.offload},
                 {"checkpoint", t.checkpoint}, {"total", t.total()}};
  j["tokens_per_s"] = p.tokens_per_s;
  j["model_flops"] = p.model_flops;
  j["mfu"] = p.mfu;
  return j;
}

// The layouts --search tries at one node count; the best that fits (highest tokens/s),
// or, when none fits, the one closest to fitting (its binding tier names why).
struct SearchResult {
  io::Config cfg;
  Plan plan;
  bool found = false;
  int tried = 0;
  std::string first_refusal;  // why the first layout that was refused was refused
};
SearchResult search(const io::Config& base, const Machine& m, const PlanRequest& req) {
  SearchResult best;
  double least_over = 1e300;
  const int world = req.nodes * (req.ranks_per_node > 0 ? req.ranks_per_node : m.ranks_per_node);
  std::vector<int> eps;
  for (int ep = 1; ep <= std::max(1, base.moe.experts); ++ep)
    if ((base.moe.experts == 0 ? ep == 1 : base.moe.experts % ep == 0) && world % ep == 0) eps.push_back(ep);
  const std::vector<std::string> tiers = m.nvme_bytes > 0 ? std::vector<std::string>{"device", "host", "nvme"}
                                                          : std::vector<std::string>{"device", "host"};
  for (int ep : eps)
    for (int zero : {0, 1})
      for (const char* rc : {"none", "attention", "block"})
        for (const auto& opt : tiers)
          for (const auto& ex : tiers) {
            io::Config c = base;
            c.parallel.ep = ep, c.memory.zero = zero, c.memory.recompute = rc;
            c.memory.optimizer = opt, c.memory.experts = ex;
            if (c.moe.experts == 0 && ex != "device") continue;
            Plan p;
            try {
              p = make_plan(c, m, req);
            } catch (const std::exception& e) {
              if (best.first_refusal.empty()) best.first_refusal = e.what();
              continue;  // does not divide, or a combination the trainer refuses
            }
            ++best.tried;
            double over = 0;
            for (const auto& t : p.tiers) over = std::max(over, t.have > 0 ? t.need / t.have : 1e300);
            if (p.fits && (!best.found || p.tokens_per_s > best.plan.tokens_per_s))
              best.cfg = c, best.plan = p, best.found = true;
            if (!best.found && over < least_over) least_over = over, best.cfg = c, best.plan = p;
          }
  return best;
}

std::vector<int> parse_nodes(const std::string& list) {
  std::vector<int> v;
  std::stringstream in(list);
  for (std::string s; std::getline(in, s, ',');) {
    char* end = nullptr;
    const long n = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || n < 1 || n > (1 << 24))
      throw io::ConfigError("--sweep-nodes '" + io::clip(list) + "': expected node counts like 1,2,4,8");
    v.push_back(int(n));
  }
  if (v.empty() || v.size() > 64) throw io::ConfigError("--sweep-nodes takes 1 to 64 node counts");
  return v;
}

int sweep(const io::Config& cfg, const Machine& m, const PlanOptions& opt) {
  const auto nodes = parse_nodes(opt.sweep_nodes);
  std::ofstream csv;
  if (!opt.csv.empty()) {
    csv.open(opt.csv);
    if (!csv) throw io::ConfigError("--csv '" + io::clip(opt.csv) + "' cannot be written");
    csv << "mode,nodes,ranks,fits,binding,step_s,tokens_per_s,mfu,efficiency\n";
  }
  const int rpn = opt.ranks_per_node > 0 ? opt.ranks_per_node : m.ranks_per_node;
  std::printf("%s scaling of the configuration on %s (%d rank(s) per node; %s)\n", opt.weak ? "weak" : "strong",
              m.name.c_str(), rpn,
              opt.weak ? "batch per rank fixed, E = T1 / TN" : "global batch fixed, E = T1 / (N TN) x N1");
  std::printf("%8s %8s %6s %12s %14s %7s %6s  %s\n", "nodes", "ranks", "fits", "step", "tokens/s", "MFU", "E",
              "binding");
  double t1 = 0;
  int n1 = 0;
  for (int n : nodes) {
    io::Config c = cfg;
    if (opt.weak) c.train.batch_size = cfg.train.batch_size / (nodes.front() * rpn) * n * rpn;
    const Plan p = make_plan(c, m,
                             {.nodes = n, .ranks_per_node = opt.ranks_per_node, .imbalance = opt.imbalance,
                              .exchange_imbalance = opt.exchange_imbalance});
    const double t = p.time.total();
    if (!t1) t1 = t, n1 = n;
    const double e = opt.weak ? t1 / t : t1 * n1 / (double(n) * t);
    std::printf("%8d %8d %6s %12s %14.4g %6.1f%% %6.3f  %s\n", n, p.layout.world, p.fits ? "yes" : "no",
                seconds(t).c_str(), p.tokens_per_s, 100 * p.mfu, e, p.binding.c_str());
    if (csv)
      csv << (opt.weak ? "weak" : "strong") << "," << n << "," << p.layout.world << "," << p.fits << ",\""
          << p.binding << "\"," << t << "," << p.tokens_per_s << "," << p.mfu << "," << e << "\n";
  }
  return kOk;
}

}  // namespace

int cmd_plan(const PlanOptions& opt) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) return kOk;  // a planner needs one process; the others have nothing to do
  try {
    const io::Config cfg = io::load_config(opt.config, opt.overrides);
    const Machine m = load_machine(opt.machine);
    const PlanRequest req{.nodes = opt.nodes, .ranks_per_node = opt.ranks_per_node, .imbalance = opt.imbalance,
                          .exchange_imbalance = opt.exchange_imbalance};
    if (!opt.sweep_nodes.empty()) return sweep(cfg, m, opt);
    if (opt.search) {
      const auto r = search(cfg, m, req);
      if (r.tried == 0)
        throw io::ConfigError("no layout can run at " + std::to_string(opt.nodes) + " node(s): " + r.first_refusal);
      std::printf("search: %d layouts tried at %d node(s); %s\n", r.tried, opt.nodes,
                  r.found ? "the fastest that fits:" : "none fits; the closest:");
      print_plan(opt.config, r.cfg, m, r.plan, largest_batch(r.cfg, m, req, r.plan.layout));
      if (opt.nodes > 1) {
        PlanRequest fewer = req;
        fewer.nodes = opt.nodes / 2;
        const auto s = search(cfg, m, fewer);
        if (s.found)
          std::printf("at %d node(s) a layout fits too (%s, %.4g tokens/s)\n", fewer.nodes,
                      describe_layout(s.cfg, s.plan).c_str(), s.plan.tokens_per_s);
        else if (s.tried > 0)
          std::printf("at %d node(s) no layout fits: %s is the binding resource (closest: %s)\n", fewer.nodes,
                      s.plan.binding.c_str(), describe_layout(s.cfg, s.plan).c_str());
      }
      return r.found ? kOk : kBadConfig;
    }
    const Plan p = make_plan(cfg, m, req);
    if (opt.json) {
      std::printf("%s\n", plan_json(cfg, m, p).dump().c_str());
      return kOk;
    }
    print_plan(opt.config, cfg, m, p, largest_batch(cfg, m, req, p.layout));
    return kOk;
  } catch (const io::ConfigError& e) {
    std::fprintf(stderr, "furnace: %s\n", io::clip(e.what(), 800).c_str());
    return kBadConfig;
  } catch (const std::overflow_error& e) {
    std::fprintf(stderr, "furnace: %s: the configuration is far beyond any machine\n", io::clip(e.what(), 400).c_str());
    return kBadConfig;
  } catch (const std::length_error& e) {
    std::fprintf(stderr, "furnace: %s\n", io::clip(e.what(), 400).c_str());
    return kBadConfig;
  }
}

}  // namespace furnace::app
