// Parameters, gradients and AdamW moments of one rank, each in one contiguous buffer
// with a named view per tensor (one allreduce, one checkpoint loop, one optimizer
// sweep). The registry records each tensor's logical (global) shape and which slice
// of it this rank holds, so checkpoints and references can be layout-independent.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/views.hpp"

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

class ParamStore {
 public:
  // Registration phase: returns the tensor's index.
  int add(ParamInfo info);
  // Allocates params, grads, m, v (zeroed) once every tensor is registered.
  void allocate();
  // Deterministic initialisation: each tensor from its own counter-based stream,
  // indexed by global element number, so any sharding gives the same values.
  void initialize(std::uint64_t seed);

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int i) const { return infos_[i]; }
  int find(const std::string& name) const;  // -1 if absent
  std::int64_t total() const { return total_; }

  // Whole-buffer views.
  kernels::View1<float> params() const { return params_; }
  kernels::View1<float> grads() const { return grads_; }
  kernels::View1<float> exp_avg() const { return m_; }
  kernels::View1<float> exp_avg_sq() const { return v_; }

  // Loading without touching the current state until the load succeeded: a fresh,
  // uninitialised buffer laid out like the store's (params | grads | m | v), its
  // parts, and the commit that makes it the store's state (gradients zeroed).
  using StateBuffer = Kokkos::View<float*, kernels::MemSpace>;
  StateBuffer make_state_buffer() const;
  kernels::View1<float> state_part(const StateBuffer& b, int part) const;  // 0 params, 2 m, 3 v
  // Invalidates pointers into the previous buffers (views are re-fetched from the
  // store by every user: model, optimizer, gradient sync, checkpointer).
  void adopt_state(StateBuffer b);

  // One tensor's slice of a buffer, flat.
  kernels::View1<float> slice(kernels::View1<float> buf, int i) const;
  // Typed views of tensor i in a buffer (rank must match the registered shape).
  kernels::View1<float> v1(kernels::View1<float> buf, int i) const;
  kernels::View2<float> v2(kernels::View1<float> buf, int i) const;
  kernels::View3<float> v3(kernels::View1<float> buf, int i) const;

 private:
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, int> by_name_;
  std::int64_t total_ = 0;
  StateBuffer storage_;  // 4 * padded total: params | grads | m | v
  void bind_views();
  kernels::View1<float> params_, grads_, m_, v_;
};

}  // namespace furnace::memory
