#include "app/setup_check.hpp"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <optional>
#include <vector>

#include "comm/mpi_check.hpp"
#include "comm/wait.hpp"
#include "io/clip.hpp"
#include "kernels/blas_runtime.hpp"
#include "kernels/views.hpp"

namespace furnace::app {
namespace fs = std::filesystem;

namespace {

std::string gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(1ull << 30));
  return buf;
}

}  // namespace

std::string make_run_dir(const std::string& key, const std::string& dir) {
  const std::string name = key + " = \"" + io::clip(dir) + "\"";
  // Room for what we create inside: ckpt/step_XXXXXXXX.h5.tmp, metrics.jsonl, ...
  constexpr std::size_t kRoom = 64;
  if (dir.size() + kRoom >= PATH_MAX)
    return name + " is " + std::to_string(dir.size()) + " bytes long; with the files inside it a path must stay under " +
           std::to_string(PATH_MAX) + " bytes (PATH_MAX): choose a shorter directory";
  const fs::path path(dir);
  for (const auto& part : path)
    if (part.native().size() > NAME_MAX)
      return name + " has a " + std::to_string(part.native().size()) + "-byte component; names are limited to " +
             std::to_string(NAME_MAX) + " bytes (NAME_MAX): choose a shorter directory";
  // Every existing prefix must be a directory (named precisely, before mkdir would
  // only say "Not a directory"); then the directory is made, as the run would.
  fs::path prefix;
  for (const auto& part : path) {
    prefix /= part;
    std::error_code ec;
    const auto st = fs::status(prefix, ec);
    if (st.type() == fs::file_type::not_found) break;
    if (ec) return name + ": '" + io::clip(prefix.string()) + "' cannot be examined (" + ec.message() + ")";
    if (!fs::is_directory(st))
      return name + ": '" + io::clip(prefix.string()) + "' is an existing file, not a directory; set " + key +
             " to a directory (it is created when missing)";
  }
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec || access(dir.c_str(), W_OK | X_OK) != 0)
    return name + " cannot be created or written in (" + (ec ? ec.message() : std::strerror(errno)) +
           "); choose a writable directory";
  return "";
}

namespace {

std::optional<double> read_number(const std::string& path, double scale = 1) {
  std::ifstream in(path);
  double x = 0;
  if (in >> x) return x * scale;
  return std::nullopt;  // absent, or "max"
}

// A "Key:   123 kB" line of /proc/meminfo or /proc/self/status, in bytes.
std::optional<double> proc_kb(const char* file, const std::string& key) {
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::atof(line.c_str() + key.size() + 1) * 1024;
  return std::nullopt;
}

// The free part of this process's cgroup memory limit (v2, else v1), if it has one.
std::optional<double> cgroup_free() {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const auto c1 = line.find(':'), c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    const std::string controllers = line.substr(c1 + 1, c2 - c1 - 1), rel = line.substr(c2 + 1);
    const bool v2 = controllers.empty(), v1 = controllers.find("memory") != std::string::npos;
    if (!v2 && !v1) continue;
    const std::string root = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
    const char* limit = v2 ? "/memory.max" : "/memory.limit_in_bytes";
    const char* usage = v2 ? "/memory.current" : "/memory.usage_in_bytes";
    // Inside a container the listed path may not exist under our mount: then the root.
    for (const std::string& dir : {root + rel, root}) {
      const auto lim = read_number(dir + limit), use = read_number(dir + usage);
      if (lim && use && *lim < 1e18) return std::max(0.0, *lim - *use);
      if (lim || use) break;
    }
  }
  return std::nullopt;
}

}  // namespace

MemoryBudget rank_memory_budget(int ranks_on_node) {
  const int ranks = std::max(1, ranks_on_node);
  MemoryBudget b{std::numeric_limits<double>::infinity(), "no memory limit known"};
  const std::string per = ranks > 1 ? " / " + std::to_string(ranks) + " ranks on this node" : "";
  if (auto avail = proc_kb("/proc/meminfo", "MemAvailable"); avail && *avail / ranks < b.bytes)
    b = {*avail / ranks, "MemAvailable " + gib(*avail) + per};
  if (auto free = cgroup_free(); free && *free / ranks < b.bytes)
    b = {*free / ranks, "cgroup memory limit, " + gib(*free) + " free" + per};
  rlimit as{};
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
    const double left = std::max(0.0, double(as.rlim_cur) - proc_kb("/proc/self/status", "VmSize").value_or(0));
    if (left < b.bytes) b = {left, "RLIMIT_AS (ulimit -v), " + gib(left) + " left to this process"};
  }
  return b;
}

namespace {
std::string number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}
}  // namespace

std::string memory_problem(const io::Config& c, const memory::Ledger& planned, const MemoryBudget& have) {
  using memory::Category;
  using memory::Tier;
  const std::uint64_t dev = planned.peak(Tier::Device), host = planned.peak(Tier::Host);
  std::string over;
  if (c.memory.device_budget_gb > 0 && double(dev) > c.memory.device_budget_gb * double(1ull << 30))
    over = "the device tier needs " + memory::format_bytes(dev) + " per rank, over memory.device_budget_gb = " +
           number(c.memory.device_budget_gb) + " GiB";
  else if (c.memory.host_budget_gb > 0 && double(host) > c.memory.host_budget_gb * double(1ull << 30))
    over = "the host tier needs " + memory::format_bytes(host) + " per rank, over memory.host_budget_gb = " +
           number(c.memory.host_budget_gb) + " GiB";
  else if (kernels::device_is_host() && double(dev + host) > have.bytes)
    over = "the run needs " + memory::format_bytes(dev + host) + " per rank but a rank can have " + gib(have.bytes) +
           " (" + have.source + ")";
  if (over.empty()) return "";
  // What the bytes are, and advice that follows the largest category.
  std::string parts;
  Category largest = Category::Parameters;
  std::uint64_t most = 0;
  for (Category cat : memory::kCategories) {
    const std::uint64_t b = planned.peak(cat, Tier::Device) + planned.peak(cat, Tier::Host);
    if (b == 0) continue;
    parts += std::string(parts.empty() ? "" : ", ") + memory::category_name(cat) + " " + memory::format_bytes(b);
    if (b > most) most = b, largest = cat;
  }
  std::string lower;
  switch (largest) {
    case Category::Activations:
    case Category::Workspace:
      lower = "lower train.batch_size or model.seq_len (attention's [B,H,T,T] grows with its square), set "
              "memory.recompute, or run on more ranks";
      break;
    case Category::Communication:
      lower = "lower moe.capacity_factor (a dropless layer, capacity_factor <= 0, sizes for the worst case) or train.batch_size";
      break;
    default:
      lower = "lower model.d_model, model.n_layers, moe.experts or moe.expert_hidden, or raise parallel.ep";
  }
  return over + " (" + parts + "; model.d_model = " + std::to_string(c.model.d_model) + ", model.seq_len = " +
         std::to_string(c.model.seq_len) + ", train.batch_size = " + std::to_string(c.train.batch_size) + "); " +
         lower + "; `furnace train --dry-run` prints the whole memory report";
}

train::MemoryCheck memory_check(const io::Config& cfg, int ranks_on_node) {
  return [&cfg, ranks_on_node](const memory::Ledger& planned) {
    const std::string why = memory_problem(cfg, planned, rank_memory_budget(ranks_on_node));
    if (!why.empty()) throw io::ConfigError(why);
  };
}

void check_run_setup(const io::Config& cfg) {
  std::string why = make_run_dir("output.dir", cfg.output.dir);
  if (why.empty())
    why = cfg.checkpoint.dir.empty() ? make_run_dir("checkpoint.dir (default: output.dir/ckpt)", cfg.output.dir + "/ckpt")
                                     : make_run_dir("checkpoint.dir", cfg.checkpoint.dir);
  if (!why.empty()) throw io::ConfigError(why);
}

bool is_allocation_failure(const std::exception& e) {
  return dynamic_cast<const std::bad_alloc*>(&e) || std::strstr(e.what(), "failed to allocate");
}

void throw_allocation_failure(const io::Config& cfg, const std::exception& e) {
  std::string what = e.what();
  what = what.substr(0, what.find('\n'));  // Kokkos appends a traceback paragraph
  throw io::ConfigError("allocating the model's memory failed (" + io::clip(what, 300) +
                        "): the configuration needs more memory than this rank can have; lower model.seq_len (" +
                        std::to_string(cfg.model.seq_len) + "), model.d_model (" + std::to_string(cfg.model.d_model) +
                        "), model.n_layers (" + std::to_string(cfg.model.n_layers) + ") or train.batch_size (" +
                        std::to_string(cfg.train.batch_size) + "), or run on more ranks");
}

namespace {
// This process's CPU affinity and that of every rank on its node (allgather on the
// node's communicator, duplicated and freed here).
struct NodeAffinity {
  cpu_set_t mine;
  std::vector<cpu_set_t> all;
};
NodeAffinity node_affinity(MPI_Comm world) {
  MPI_Comm node = MPI_COMM_NULL;
  mpiCheck(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  NodeAffinity a;
  CPU_ZERO(&a.mine);
  if (sched_getaffinity(0, sizeof a.mine, &a.mine) != 0) CPU_SET(0, &a.mine);  // unknown: assume one CPU
  int size = 1;
  mpiCheck(MPI_Comm_size(node, &size));
  a.all.resize(static_cast<std::size_t>(size));
  mpiCheck(MPI_Allgather(&a.mine, sizeof a.mine, MPI_BYTE, a.all.data(), sizeof a.mine, MPI_BYTE, node));
  mpiCheck(MPI_Comm_free(&node));
  return a;
}
}  // namespace

NodeCpus node_cpus(MPI_Comm world) {
  const NodeAffinity a = node_affinity(world);
  cpu_set_t any = a.mine;
  for (auto& other : a.all) CPU_OR(&any, &any, &other);
  return {CPU_COUNT(&any), CPU_COUNT(&a.mine)};
}

ThreadBudget thread_budget(MPI_Comm world) {
  const NodeAffinity a = node_affinity(world);
  const cpu_set_t& mine = a.mine;
  const auto& all = a.all;
  int sharing = 0;  // ranks of this node that may run on one of our CPUs (ourselves included)
  for (const auto& other : all) {
    cpu_set_t both;
    CPU_AND(&both, &mine, &other);
    sharing += CPU_COUNT(&both) > 0;
  }
  const char* omp = std::getenv("OMP_NUM_THREADS");
  ThreadBudget b{kernels::choose_threads(nullptr, omp, CPU_COUNT(&mine), sharing),
                 kernels::choose_threads(std::getenv("OPENBLAS_NUM_THREADS"), omp, CPU_COUNT(&mine), sharing)};
  b.cpus = CPU_COUNT(&mine);
  b.sharing = sharing;
  b.oversubscribed = sharing > b.cpus;
  for (const auto* c : {&b.kokkos, &b.blas})
    if (!c->error.empty()) throw io::ConfigError(c->error);
  return b;
}

ThreadBudget& thread_budget_in_use() {
  static ThreadBudget b;
  return b;
}

std::string choose_wait_mode(const std::string& setting) {
  const ThreadBudget& b = thread_budget_in_use();  // main() set it
  int yield = setting == "yield" || (setting == "auto" && b.oversubscribed);
  mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &yield, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  comm::set_wait_mode(yield ? comm::WaitMode::Yield : comm::WaitMode::Spin);
  std::string why = setting != "auto" ? "comm.wait = " + setting
                    : !yield ? "comm.wait = auto: every rank has a CPU"
                    : b.oversubscribed ? "comm.wait = auto: " + std::to_string(b.sharing) + " ranks share " +
                                             std::to_string(b.cpus) + " CPU(s)"
                                       : "comm.wait = auto: another node's ranks outnumber its CPUs";
  return std::string("MPI waits: ") + (yield ? "yield" : "spin") + " (" + why + ")";
}

}  // namespace furnace::app
