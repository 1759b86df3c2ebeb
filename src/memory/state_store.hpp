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
#include "memory/reservation.hpp"
#include "memory/shard_plan.hpp"

namespace furnace::memory {

// The state families. Element type: float32 for all of them today (the
// mixed-precision issue adds 16-bit parameters and float32 masters).
enum class Family { Param, Grad, ExpAvg, ExpAvgSq };
inline constexpr std::array<Family, 4> kStateFamilies = {Family::Param, Family::Grad, Family::ExpAvg,
                                                         Family::ExpAvgSq};
const char* family_name(Family f);  // "param", "grad", "exp_avg", "exp_avg_sq"
Category category_of(Family f);     // Parameters, Gradients, Optimizer, Optimizer

// Where each family lives (memory.* keys): the device and host tiers. The nvme tier
// holds whole tensors of one kind instead (StateStore::offload, memory.experts = nvme).
// `experts`: Device, or Host (memory.experts = host): the Expert tensors' share of every
// family counted on the host tier. On a build whose device is the host that is where
// they are already (one buffer per family, as ever); a GPU build would keep them in
// pinned host memory and stream them, which is not built (refused there).
struct Placement {
  Tier params = Tier::Device, grads = Tier::Device, optimizer = Tier::Device;
  Tier experts = Tier::Device;
  Tier of(Family f) const;
};

// The memory of the host tier. Under CUDA this should be pinned host memory the GPU
// can reach (Kokkos::SharedHostPinnedSpace), but Kokkos 3.4 (Debian's, which the
// project must build with) does not have that space, so HostSpace for now; on a CPU
// build it is the device tier's memory, only counted under another tier.
using HostTierSpace = Kokkos::HostSpace;

// A run of consecutive offloaded tensors [first, last] (one MoE layer's experts) and
// its elements [begin, end) in every family buffer, whole pages.
struct OffloadGroup {
  int first = 0, last = 0;
  std::int64_t begin = 0, end = 0;
  std::int64_t elems() const { return end - begin; }
};

class StateStore {
 public:
  StateStore() = default;
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Before add(): parts of the state live on the nvme tier, in memory only while their
  // group is committed (memory::StateOffload moves the bytes):
  //   Experts  every family of the Expert tensors (memory.experts = nvme); each such
  //            tensor starts and ends on a page of its own, a group is a run of them
  //            (one MoE layer's experts);
  //   Moments  the two moment families of every tensor (memory.optimizer = nvme); a
  //            group is a run of consecutive tensors of at least group_bytes, starting
  //            on a page.
  // Every family is then a Reservation, so a group's pages can leave memory while the
  // views, the optimizer and the reductions keep their addresses. Not with sharded
  // moments.
  enum class Offload { None, Experts, Moments };
  void offload(Offload what, std::uint64_t group_bytes = 64 << 20);
  bool offloads() const { return offload_ != Offload::None; }
  // Family f of tensor i lives on the nvme tier.
  bool offloaded(int i, Family f) const;
  // Some family of tensor i does (its update runs with its group's: StateOffload).
  bool offloaded(int i) const;
  // The families that leave memory, in kStateFamilies order.
  std::vector<Family> offloaded_families() const;
  const std::vector<OffloadGroup>& offload_groups() const { return groups_; }
  // The largest group's bytes in one family (the window, and a staging slot).
  std::uint64_t largest_group_bytes() const;
  // A group's range of family f in memory (zeros) or out of it (its contents lost);
  // counted in the ledger under "StateStore::<family> (nvme window)". Measure mode
  // records the largest group of every family instead: the window's bound.
  void commit(Family f, int group);
  void decommit(Family f, int group);
  bool committed(Family f, int group) const { return committed_[std::size_t(f)][std::size_t(group)]; }
  // Zeroes family f where it is always in memory (all of it without offloaded tensors).
  void zero_resident(Family f);

  // Registration phase: returns the tensor's index.
  int add(ParamInfo info);
  // Allocates every family (zeroed) once every tensor is registered, and records the
  // bytes in `ledger` (which must outlive the store). Measure: records only. With a
  // sharded `zero` layout (ZeRO-1) the moment families hold this rank's parts only.
  void allocate(Ledger& ledger, const Placement& placement = {}, Mode mode = Mode::Allocate,
                const ShardLayout& zero = {});
  // Deterministic initialisation: each tensor from its own counter-based stream,
  // indexed by global element number, so any sharding gives the same values.
  // Offloaded tensors are skipped: their group is initialised while committed, with
  // initialize(seed, i) for each of its tensors (StateOffload).
  void initialize(std::uint64_t seed);
  void initialize(std::uint64_t seed, int i);

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int i) const { return infos_[i]; }
  int find(const std::string& name) const;  // -1 if absent
  std::int64_t total() const { return total_; }  // elements per family (with alignment padding)

  // A whole family, flat [total()].
  kernels::View1<float> family(Family f) const { return views_[std::size_t(f)]; }
  Tier tier(Family f) const { return placement_.of(f); }
  // Elements of a family: total(), or the moment parts this rank owns (ShardPlan).
  std::int64_t family_elems(Family f) const;
  // Bytes allocated per family: its elements and the lead that puts the view on a page;
  // with offloaded tensors, those of the tensors always in memory.
  std::uint64_t family_bytes(Family f) const {
    return std::uint64_t(family_elems(f) - (family_offloaded(f) ? offloaded_elems_ : 0) + lead_room()) * sizeof(float);
  }
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
  // A Reservation starts on a page: no lead then.
  std::int64_t lead_room() const { return page_aligned_ && !offloads() ? kPageFloats : 0; }
  bool allocated_ = false;
  Ledger* ledger_ = nullptr;
  Placement placement_;
  ShardPlan shards_;
  bool sharded_ = false;
  std::array<Kokkos::View<float*, kernels::MemSpace>, kStateFamilies.size()> buffers_;
  std::array<Kokkos::View<float*, HostTierSpace>, kStateFamilies.size()> host_buffers_;  // host-tier families
  std::array<kernels::View1<float>, kStateFamilies.size()> views_;
  // Offload (memory.experts or memory.optimizer = nvme).
  Offload offload_ = Offload::None;
  std::int64_t group_target_ = 0, group_fill_ = 0;  // Moments: floats per group, and in the open one
  std::vector<int> group_starts_;                    // Moments: the first tensor of each group
  bool family_offloaded(Family f) const {
    return offload_ == Offload::Experts || (offload_ == Offload::Moments && (f == Family::ExpAvg || f == Family::ExpAvgSq));
  }
  std::vector<OffloadGroup> groups_;
  std::int64_t offloaded_elems_ = 0;
  Mode mode_ = Mode::Allocate;
  std::array<Reservation, kStateFamilies.size()> reserved_;
  std::array<std::vector<bool>, kStateFamilies.size()> committed_;
  static std::string window_label(Family f);
  // memory.experts = host: the bytes of family f that the Expert tensors hold here.
  std::uint64_t host_expert_bytes(Family f) const;
  void allocate_reserved(Ledger& ledger, Mode mode);
};

}  // namespace furnace::memory
