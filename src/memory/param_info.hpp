// What the state store knows of one tensor: its name, local and global shape, where
// this rank's slice sits in the global tensor and in the family buffers, and how it
// is initialised and decayed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace furnace::memory {

// Where a tensor of `elems` floats starts in a family buffer: every tensor 64-byte
// aligned (16 floats), and large ones on a 4 KiB page, so that checkpoint loads read
// them with O_DIRECT straight from the device (io::ReadAhead). The state store and
// the ZeRO-1 moment packing both place tensors with it, so that unsharded moments
// have exactly the parameters' layout.
inline constexpr std::size_t kPageBytes = 4096;
inline constexpr std::int64_t kPageFloats = kPageBytes / sizeof(float);
inline constexpr std::int64_t kPageAlignFrom = 64 << 10;  // tensors of at least this many floats
inline std::int64_t place_tensor(std::int64_t end_of_previous, std::int64_t elems) {
  const std::int64_t align = elems >= kPageAlignFrom ? kPageFloats : 16;
  return (end_of_previous + align - 1) / align * align;
}

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

}  // namespace furnace::memory
