// Byte accounting of one rank: every allocation of the training state, the
// activations, the communication buffers and the workspace is recorded here under
// its category and tier, with its label, so the memory report, the budgets and
// `furnace plan` count the same bytes the allocator holds (not a second formula).
//
// A Ledger can also be filled without allocating (Arena and StateStore in Measure
// mode): the report and the budget check then run before the first large allocation.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace furnace::memory {

enum class Category { Parameters, Gradients, Optimizer, Activations, Communication, Workspace };
inline constexpr std::array<Category, 6> kCategories = {Category::Parameters, Category::Gradients,
                                                       Category::Optimizer,  Category::Activations,
                                                       Category::Communication, Category::Workspace};
const char* category_name(Category c);  // "parameters", "gradients", "optimizer", ...

// Where bytes live: Kokkos' default memory space (the same as host on a CPU build),
// host memory (HostSpace; pinned under CUDA), or files in memory.nvme_dir.
enum class Tier { Device, Host, Nvme };
inline constexpr std::array<Tier, 3> kTiers = {Tier::Device, Tier::Host, Tier::Nvme};
const char* tier_name(Tier t);  // "device", "host", "nvme"

class Ledger {
 public:
  void add(Category c, Tier t, const std::string& label, std::uint64_t bytes);
  void release(Category c, Tier t, const std::string& label, std::uint64_t bytes);

  std::uint64_t current(Category c, Tier t) const { return cell(c, t).current; }
  std::uint64_t peak(Category c, Tier t) const { return cell(c, t).peak; }
  std::uint64_t current(Tier t) const;     // all categories
  std::uint64_t peak(Tier t) const { return tier_peak_[std::size_t(t)]; }  // of the tier's total
  std::uint64_t current_total() const;     // device + host (memory this process holds)
  // Bytes per label (summed over its allocations): now, and at their peak.
  std::uint64_t label_current(const std::string& label) const;
  std::uint64_t label_peak(const std::string& label) const;

  // The report: one line per tier that holds bytes, then one per category with its
  // current and peak bytes in each tier. `title` heads it.
  std::string report(const std::string& title) const;
  // {"parameters": peak bytes over tiers, ...} as a JSON object's text.
  std::string peak_json() const;

 private:
  struct Cell {
    std::uint64_t current = 0, peak = 0;
    void add(std::uint64_t b) { peak = std::max(peak, current += b); }
  };
  const Cell& cell(Category c, Tier t) const { return cells_[std::size_t(c)][std::size_t(t)]; }
  std::array<std::array<Cell, kTiers.size()>, kCategories.size()> cells_{};
  std::array<std::uint64_t, kTiers.size()> tier_peak_{};
  std::map<std::string, Cell> labels_;
};

// A "Key:  123 kB" line of /proc/self/status in bytes ("VmRSS", "VmHWM"), 0 when the
// system has none: what the process really holds, to check the ledger against.
std::uint64_t process_status_bytes(const std::string& key);

// a * b, or std::overflow_error naming `what` when the product does not fit 2^62 (a
// byte count that large is a configuration error, not a wrapped-around small number).
std::uint64_t checked_product(std::uint64_t a, std::uint64_t b, const std::string& what);

// "1.5 GiB", "12.0 MiB", "512 B".
std::string format_bytes(std::uint64_t bytes);

}  // namespace furnace::memory
