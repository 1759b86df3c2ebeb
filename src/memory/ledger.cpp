#include "memory/ledger.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace furnace::memory {

const char* category_name(Category c) {
  switch (c) {
    case Category::Parameters: return "parameters";
    case Category::Gradients: return "gradients";
    case Category::Optimizer: return "optimizer";
    case Category::Activations: return "activations";
    case Category::Communication: return "communication";
    case Category::Workspace: return "workspace";
  }
  return "?";
}

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::Device: return "device";
    case Tier::Host: return "host";
    case Tier::Nvme: return "nvme";
  }
  return "?";
}

std::uint64_t checked_product(std::uint64_t a, std::uint64_t b, const std::string& what) {
  constexpr std::uint64_t kLimit = std::uint64_t(1) << 62;
  if (a != 0 && b > kLimit / a)
    throw std::overflow_error(what + " needs more than 2^62 bytes (" + std::to_string(a) + " x " + std::to_string(b) + ")");
  return a * b;
}

void Ledger::add(Category c, Tier t, const std::string& label, std::uint64_t bytes) {
  if (bytes > (std::uint64_t(1) << 62) || current_total() + current(Tier::Nvme) > (std::uint64_t(1) << 62) - bytes)
    throw std::overflow_error(label + ": the byte count exceeds 2^62");
  cells_[std::size_t(c)][std::size_t(t)].add(bytes);
  tier_peak_[std::size_t(t)] = std::max(tier_peak_[std::size_t(t)], current(t));
  labels_[label].add(bytes);
}

void Ledger::release(Category c, Tier t, const std::string& label, std::uint64_t bytes) {
  Cell& x = cells_[std::size_t(c)][std::size_t(t)];
  auto it = labels_.find(label);
  if (bytes > x.current || it == labels_.end() || bytes > it->second.current)
    throw std::logic_error("Ledger::release: " + label + " releases more than it holds");
  x.current -= bytes;
  it->second.current -= bytes;
}

std::uint64_t Ledger::label_current(const std::string& label) const {
  const auto it = labels_.find(label);
  return it == labels_.end() ? 0 : it->second.current;
}

std::uint64_t Ledger::label_peak(const std::string& label) const {
  const auto it = labels_.find(label);
  return it == labels_.end() ? 0 : it->second.peak;
}

std::uint64_t Ledger::current(Tier t) const {
  std::uint64_t s = 0;
  for (Category c : kCategories) s += current(c, t);
  return s;
}

std::uint64_t Ledger::current_total() const { return current(Tier::Device) + current(Tier::Host); }

std::uint64_t process_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::uint64_t(std::strtoull(line.c_str() + key.size() + 1, nullptr, 10)) * 1024;
  return 0;
}

std::string format_bytes(std::uint64_t bytes) {
  char buf[32];
  const double b = double(bytes);
  if (b >= double(1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ull << 30));
  else if (b >= double(1 << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / double(1 << 20));
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

std::string Ledger::report(const std::string& title) const {
  std::string out = title + "\n";
  char line[256];
  std::snprintf(line, sizeof line, "  %-14s", "");
  out += line;
  std::vector<Tier> used;
  for (Tier t : kTiers)
    if (peak(t) > 0) used.push_back(t);
  for (Tier t : used) {
    std::snprintf(line, sizeof line, " %25s", (std::string(tier_name(t)) + " (current / peak)").c_str());
    out += line;
  }
  out += "\n";
  auto row = [&](const char* name, auto cur, auto pk) {
    std::snprintf(line, sizeof line, "  %-14s", name);
    out += line;
    for (Tier t : used) {
      std::snprintf(line, sizeof line, " %12s / %10s", format_bytes(cur(t)).c_str(), format_bytes(pk(t)).c_str());
      out += line;
    }
    out += "\n";
  };
  for (Category c : kCategories)
    row(category_name(c), [&](Tier t) { return current(c, t); }, [&](Tier t) { return peak(c, t); });
  row("total", [&](Tier t) { return current(t); }, [&](Tier t) { return peak(t); });
  return out;
}

std::string Ledger::peak_json() const {
  std::string out = "{";
  for (Category c : kCategories) {
    std::uint64_t p = 0;
    for (Tier t : kTiers) p += peak(c, t);
    out += std::string(out.size() > 1 ? ", " : "") + "\"" + category_name(c) + "\": " + std::to_string(p);
  }
  return out + "}";
}

}  // namespace furnace::memory
