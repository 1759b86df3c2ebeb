// The training state of one rank, by family: parameters, gradients and the two AdamW
// moments, each its own contiguous buffer with its own element type, tier and byte
// category, addressed by name (Family::Param, ...), with a named view per tensor at
// the same offset in every family (one allreduce, one checkpoint loop, one optimizer
// sweep); with ZeRO-1 the moment families hold this rank's owned parts only, packed
// (ShardPlan). The registry records each tensor's logical (global) shape and which slice
// of it this rank holds, so checkpoints and references can be layout-independent.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/views.hpp"
#include "memory/arena.hpp"
#include "memory/ledger.hpp"
#include "memory/param_info.hpp"
#include "memory/shard_plan.hpp"

namespace furnace::memory {

// The state families. Element type: float32 for all of them today (the
// mixed-precision issue adds 16-bit parameters and float32 masters).
enum class Family { Param, Grad, ExpAvg, ExpAvgSq };
inline constexpr std::array<Family, 4> kStateFamilies = {Family::Param, Family::Grad, Family::ExpAvg,
                                                         Family::ExpAvgSq};
const char* family_name(Family f);  // "param", "grad", "exp_avg", "exp_avg_sq"
Category category_of(Family f);     // Parameters, Gradients, Optimizer, Optimizer

// Where each family lives (memory.* keys). The device and host tiers are
// implemented; the nvme tier (memory::NvmeStore) is not wired into the store yet.
struct Placement {
  Tier params = Tier::Device, grads = Tier::Device, optimizer = Tier::Device;
  Tier of(Family f) const;
};

// The memory of the host tier. Under CUDA this should be pinned host memory the GPU
// can reach (Kokkos::SharedHostPinnedSpace), but Kokkos 3.4 (Debian's, which the
// project must build with) does not have that space, so HostSpace for now; on a CPU
// build it is the device tier's memory, only counted under another tier.
using HostTierSpace = Kokkos::HostSpace;

class StateStore {
 public:
  StateStore() = default;
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Registration phase: returns the tensor's index.
  int add(ParamInfo info);
  // Allocates every family (zeroed) once every tensor is registered, and records the
  // bytes in `ledger` (which must outlive the store). Measure: records only. With a
  // sharded `zero` layout (ZeRO-1) the moment families hold this rank's parts only.
  void allocate(Ledger& ledger, const Placement& placement = {}, Mode mode = Mode::Allocate,
                const ShardLayout& zero = {});
  // Deterministic initialisation: each tensor from its own counter-based stream,
  // indexed by global element number, so any sharding gives the same values.
  void initialize(std::uint64_t seed);

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int i) const { return infos_[i]; }
  int find(const std::string& name) const;  // -1 if absent
  std::int64_t total() const { return total_; }  // elements per family (with alignment padding)

  // A whole family, flat [total()].
  kernels::View1<float> family(Family f) const { return views_[std::size_t(f)]; }
  Tier tier(Family f) const { return placement_.of(f); }
  // Elements of a family: total(), or the moment parts this rank owns (ShardPlan).
  std::int64_t family_elems(Family f) const;
  // Bytes allocated per family: its elements and the lead that puts the view on a page.
  std::uint64_t family_bytes(Family f) const { return std::uint64_t(family_elems(f) + lead_room()) * sizeof(float); }
  kernels::View1<float> params() const { return family(Family::Param); }
  kernels::View1<float> grads() const { return family(Family::Grad); }
  kernels::View1<float> exp_avg() const { return family(Family::ExpAvg); }
  kernels::View1<float> exp_avg_sq() const { return family(Family::ExpAvgSq); }

  // Which part of each tensor's moments this rank keeps (all of it unless sharded).
  const ShardPlan& shards() const { return shards_; }
  bool moments_sharded() const { return sharded_; }
  // The part of tensor i that this rank updates, in family f, flat: the same elements
  // of every family (moments at their packed offset, the others in place).
  kernels::View1<float> owned(Family f, int i) const;

  // One tensor's slice of a family buffer, flat.
  kernels::View1<float> slice(kernels::View1<float> buf, int i) const;
  // Typed views of tensor i in a buffer (rank must match the registered shape).
  kernels::View1<float> v1(kernels::View1<float> buf, int i) const;
  kernels::View2<float> v2(kernels::View1<float> buf, int i) const;
  kernels::View3<float> v3(kernels::View1<float> buf, int i) const;

 private:
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, int> by_name_;
  std::int64_t total_ = 0;
  bool page_aligned_ = false;  // some tensor starts on a page (then the views do too)
  std::int64_t lead_room() const { return page_aligned_ ? kPageFloats : 0; }
  bool allocated_ = false;
  Ledger* ledger_ = nullptr;
  Placement placement_;
  ShardPlan shards_;
  bool sharded_ = false;
  std::array<Kokkos::View<float*, kernels::MemSpace>, kStateFamilies.size()> buffers_;
  std::array<Kokkos::View<float*, HostTierSpace>, kStateFamilies.size()> host_buffers_;  // host-tier families
  std::array<kernels::View1<float>, kStateFamilies.size()> views_;
};

}  // namespace furnace::memory
