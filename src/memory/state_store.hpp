// The training state of one rank, by family: parameters, gradients and the two AdamW
// moments, each its own contiguous buffer with its own element type, tier and byte
// category, addressed by name (Family::Param, ...), with a named view per tensor at
// the same offset in every family (one allreduce, one checkpoint loop, one optimizer
// sweep). The registry records each tensor's logical (global) shape and which slice
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

namespace furnace::memory {

enum class ParamKind {
  Dense,   // replicated on every rank; gradients averaged over the world
  Expert,  // sharded over the expert-parallel group along dim 0 (experts)
};

struct ParamInfo {
  std::string name;
  std::vector<std::int64_t> shape;         // local shape (dim 0 = local experts for Expert)
  std::vector<std::int64_t> global_shape;  // logical shape over all ranks
  std::int64_t global_offset0 = 0;         // first global index along dim 0 held here
  std::int64_t offset = 0;                 // element offset in the buffers
  std::int64_t size = 0;                   // local element count
  ParamKind kind = ParamKind::Dense;
  bool decay = true;                       // weight decay applies (matrices, not norms)
  double init_std = 0.0;                   // N(0, init_std); init_std < 0: fill with init_value
  float init_value = 0.0f;
};

// The slab of an Expert tensor of global shape [E, ...] that rank `ep_rank` of an
// expert-parallel group of `ep` ranks holds (E / ep experts, contiguous).
ParamInfo expert_slab(std::string name, std::vector<std::int64_t> global_shape, int ep, int ep_rank);

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
  // bytes in `ledger` (which must outlive the store). Measure: records only.
  void allocate(Ledger& ledger, const Placement& placement = {}, Mode mode = Mode::Allocate);
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
  // Bytes allocated per family: total() and the lead that puts the view on a page.
  std::uint64_t family_bytes(Family) const { return std::uint64_t(storage_) * sizeof(float); }
  kernels::View1<float> params() const { return family(Family::Param); }
  kernels::View1<float> grads() const { return family(Family::Grad); }
  kernels::View1<float> exp_avg() const { return family(Family::ExpAvg); }
  kernels::View1<float> exp_avg_sq() const { return family(Family::ExpAvgSq); }

  // One tensor's slice of a family buffer, flat.
  kernels::View1<float> slice(kernels::View1<float> buf, int i) const;
  // Typed views of tensor i in a buffer (rank must match the registered shape).
  kernels::View1<float> v1(kernels::View1<float> buf, int i) const;
  kernels::View2<float> v2(kernels::View1<float> buf, int i) const;
  kernels::View3<float> v3(kernels::View1<float> buf, int i) const;

 private:
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, int> by_name_;
  static constexpr std::size_t kPageBytes = 4096;
  static constexpr std::int64_t kPageFloats = kPageBytes / sizeof(float);
  static constexpr std::int64_t kPageAlignFrom = 64 << 10;  // tensors of at least this many floats
  std::int64_t total_ = 0;
  std::int64_t storage_ = 0;  // floats allocated per family (total_ + page lead)
  bool page_aligned_ = false; // some tensor starts on a page (then the view does too)
  bool allocated_ = false;
  Ledger* ledger_ = nullptr;
  Placement placement_;
  std::array<Kokkos::View<float*, kernels::MemSpace>, kStateFamilies.size()> buffers_;
  std::array<Kokkos::View<float*, HostTierSpace>, kStateFamilies.size()> host_buffers_;  // host-tier families
  std::array<kernels::View1<float>, kStateFamilies.size()> views_;
};

}  // namespace furnace::memory
