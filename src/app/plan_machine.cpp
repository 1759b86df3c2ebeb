#include "app/plan_machine.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "io/clip.hpp"
#include "io/config.hpp"

namespace furnace::app {

double GemmCurve::rate(double flops) const {
  if (points.empty()) return 0;
  if (flops <= points.front().first) return points.front().second;
  if (flops >= points.back().first) return points.back().second;
  auto hi = std::lower_bound(points.begin(), points.end(), flops,
                             [](const auto& p, double f) { return p.first < f; });
  auto lo = hi - 1;
  const double t = std::log(flops / lo->first) / std::log(hi->first / lo->first);
  return lo->second + t * (hi->second - lo->second);
}

namespace {

// The machine file's keys, read with their units converted; every miss or bad value
// names the file and the key.
class Reader {
 public:
  Reader(const toml::table& t, std::string where) : t_(t), where_(std::move(where)) {}

  double number(const std::string& key, double lo, double hi, bool required = true, double dflt = 0) const {
    const auto n = t_.at_path(key);
    if (!n) {
      if (required) fail(key, "is missing");
      return dflt;
    }
    const auto v = n.value<double>();
    if (!v || !std::isfinite(*v) || *v < lo || *v > hi)
      fail(key, "must be a number in [" + fmt(lo) + ", " + fmt(hi) + "]");
    return *v;
  }
  std::string text(const std::string& key, const std::string& dflt) const {
    const auto n = t_.at_path(key);
    if (!n) return dflt;
    const auto v = n.value<std::string>();
    if (!v) fail(key, "must be a string");
    return io::clip(*v, 200);
  }
  bool flag(const std::string& key, bool dflt) const {
    const auto n = t_.at_path(key);
    if (!n) return dflt;
    const auto v = n.value<bool>();
    if (!v) fail(key, "must be true or false");
    return *v;
  }
  // [[flops, gflop/s], ...] ascending in flops.
  GemmCurve curve(const std::string& key) const {
    GemmCurve c;
    const auto n = t_.at_path(key);
    if (!n) return c;
    const auto* arr = n.as_array();
    if (!arr || arr->empty() || arr->size() > 256) fail(key, "must be a list of 1 to 256 [flops, gflops] pairs");
    for (const auto& e : *arr) {
      const auto* pair = e.as_array();
      const auto f = pair && pair->size() == 2 ? (*pair)[0].value<double>() : std::nullopt;
      const auto g = pair && pair->size() == 2 ? (*pair)[1].value<double>() : std::nullopt;
      if (!f || !g || !(*f > 0) || !(*g > 0) || !std::isfinite(*f) || !std::isfinite(*g))
        fail(key, "must hold [flops, gflops] pairs of positive numbers");
      if (!c.points.empty() && *f <= c.points.back().first) fail(key, "must be ascending in flops");
      c.points.emplace_back(*f, *g * 1e9);
    }
    return c;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw io::ConfigError(where_ + ": " + key + " " + why + " (keys: docs/plan.md)");
  }

 private:
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  const toml::table& t_;
  std::string where_;
};

constexpr double kGB = 1e9, kGiB = double(1ull << 30);

}  // namespace

Machine load_machine(const std::string& path) {
  const std::string where = "machine file '" + io::clip(path) + "'";
  const std::string text = io::read_small_text_file(path, "machine file");
  toml::table t;
  try {
    t = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw io::ConfigError(where + ": line " + std::to_string(e.source().begin.line) + ": " +
                          io::clip(std::string(e.description()), 200));
  }
  const Reader r(t, where);
  Machine m;
  m.path = path;
  m.name = r.text("machine.name", path);
  m.cores_per_node = int(r.number("machine.cores_per_node", 1, 1 << 20));
  m.ranks_per_node = int(r.number("machine.ranks_per_node", 1, 1 << 16));
  m.max_nodes = int(r.number("machine.max_nodes", 1, 1e7));
  m.device_is_host = r.flag("machine.device_is_host", true);
  m.host_bytes = r.number("memory.host_gib", 1e-3, 1e7) * kGiB;
  m.device_bytes = m.device_is_host ? 0 : r.number("memory.device_gib", 1e-3, 1e6) * kGiB;
  m.nvme_bytes = r.number("memory.nvme_gib", 0, 1e9, false) * kGiB;
  m.per_thread = r.flag("compute.per_thread", m.device_is_host);
  m.peak_fp32 = r.number("compute.peak_tflops_fp32", 1e-6, 1e6) * 1e12;
  m.peak_16bit = r.number("compute.peak_tflops_16bit", 1e-6, 1e6) * 1e12;
  m.gemm_fp32 = r.curve("compute.gemm_fp32");
  m.gemm_16bit = r.curve("compute.gemm_16bit");
  m.gemm_fp32_node = r.curve("compute.gemm_fp32_node");
  m.gemm_16bit_node = r.curve("compute.gemm_16bit_node");
  m.kernel_threads = int(r.number("compute.kernel_threads", 0, 1 << 16, false, 0));
  // Without a measured curve: the peak times one efficiency (a flat curve).
  const double eff = r.number("compute.gemm_efficiency", 1e-3, 1, m.gemm_fp32.points.empty() ||
                                                                      m.gemm_16bit.points.empty(), 0.5);
  const double unit = m.per_thread ? double(m.cores_per_node) / m.ranks_per_node : 1.0;
  if (m.gemm_fp32.points.empty()) m.gemm_fp32.points = {{1.0, m.peak_fp32 * eff / unit}};
  if (m.gemm_16bit.points.empty()) m.gemm_16bit.points = {{1.0, m.peak_16bit * eff / unit}};
  m.thread_efficiency = r.number("compute.thread_efficiency", 1e-3, 1, false, 1.0);
  m.memory_bandwidth = r.number("memory.bandwidth_gbs", 1e-3, 1e7) * kGB;
  m.memory_bandwidth_thread = r.number("memory.bandwidth_thread_gbs", 0, 1e7, false) * kGB;
  m.kernel_bandwidth = r.number("memory.kernel_bandwidth_gbs", 0, 1e7, false) * kGB;
  m.activation_bandwidth = r.number("memory.activation_bandwidth_gbs", 0, 1e7, false) * kGB;
  m.intra = {r.number("network.intra.latency_us", 0, 1e6) * 1e-6, r.number("network.intra.bandwidth_gbs", kMinRateBytes / kGB, 1e6) * kGB};
  m.inter = {r.number("network.inter.latency_us", 0, 1e6) * 1e-6, r.number("network.inter.bandwidth_gbs", kMinRateBytes / kGB, 1e6) * kGB};
  m.taper_group = int(r.number("network.inter.taper_group_nodes", 0, 1e7, false, 0));
  m.taper = r.number("network.inter.taper", 1, 1e3, false, 1);
  m.h2d = r.number("io.h2d_gbs", kMinRateBytes / kGB, 1e6, !m.device_is_host, 0) * kGB;
  m.d2h = r.number("io.d2h_gbs", kMinRateBytes / kGB, 1e6, !m.device_is_host, 0) * kGB;
  m.nvme_read = r.number("io.nvme_read_gbs", 0, 1e6, m.nvme_bytes > 0, 0) * kGB;
  m.nvme_write = r.number("io.nvme_write_gbs", 0, 1e6, m.nvme_bytes > 0, 0) * kGB;
  m.checkpoint_write = r.number("io.checkpoint_write_gbs", kMinRateBytes / kGB, 1e6) * kGB;
  return m;
}

void save_machine(const Machine& m, const std::string& path, const std::string& comment) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write machine file '" + path + "'");
  auto curve = [&](const char* key, const GemmCurve& c) {
    out << key << " = [";
    for (std::size_t i = 0; i < c.points.size(); ++i)
      out << (i ? ", " : "") << "[" << c.points[i].first << ", " << c.points[i].second / 1e9 << "]";
    out << "]\n";
  };
  out << comment << "\n[machine]\nname = \"" << m.name << "\"\ncores_per_node = " << m.cores_per_node
      << "\nranks_per_node = " << m.ranks_per_node << "\nmax_nodes = " << m.max_nodes
      << "\ndevice_is_host = true\n\n[memory]\nhost_gib = " << m.host_bytes / kGiB
      << "\nnvme_gib = " << m.nvme_bytes / kGiB << "\nbandwidth_gbs = " << m.memory_bandwidth / kGB
      << "\nbandwidth_thread_gbs = " << m.memory_bandwidth_thread / kGB
      << "\nkernel_bandwidth_gbs = " << m.kernel_bandwidth / kGB << "  # the trainer's norm kernels, one thread"
      << "\nactivation_bandwidth_gbs = " << m.activation_bandwidth / kGB << "  # its GELU, one thread\n"
      << "\n[compute]\nper_thread = true\nkernel_threads = " << m.kernel_threads
      << "  # 1: a Serial Kokkos build runs the elementwise kernels on one thread\n"
      << "peak_tflops_fp32 = " << m.peak_fp32 / 1e12 << "  # the best measured rate of all cores\n"
      << "peak_tflops_16bit = " << m.peak_16bit / 1e12 << "\nthread_efficiency = " << m.thread_efficiency << "\n";
  out << "# [flops of one call, GFLOP/s]: one thread, then one rank on all cores_per_node threads\n";
  curve("gemm_fp32", m.gemm_fp32);
  curve("gemm_16bit", m.gemm_16bit);
  if (!m.gemm_fp32_node.points.empty()) curve("gemm_fp32_node", m.gemm_fp32_node);
  if (!m.gemm_16bit_node.points.empty()) curve("gemm_16bit_node", m.gemm_16bit_node);
  out << "\n[network.intra]\nlatency_us = " << m.intra.latency_s * 1e6 << "\nbandwidth_gbs = " << m.intra.bandwidth / kGB
      << "\n\n[network.inter]  # " << (m.inter_note.empty() ? "one node here: the intra-node path stands in" : m.inter_note)
      << "\nlatency_us = "
      << m.inter.latency_s * 1e6 << "\nbandwidth_gbs = " << m.inter.bandwidth / kGB << "\n\n[io]\nnvme_read_gbs = "
      << m.nvme_read / kGB << "\nnvme_write_gbs = " << m.nvme_write / kGB
      << "\ncheckpoint_write_gbs = " << m.checkpoint_write / kGB << "\n";
  if (!out.flush()) throw std::runtime_error("cannot write machine file '" + path + "'");
}

}  // namespace furnace::app
