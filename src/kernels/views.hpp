// View aliases for every tensor role in Furnace, and the execution policy alias.
// Kernels take unmanaged, row-major (LayoutRight) Views: storage is owned by the
// pooled buffers in src/memory (one buffer per tensor family, named views into it),
// so a kernel never allocates and never cares who owns the bytes.
#pragma once
#include <Kokkos_Core.hpp>
#include <cstdint>
#include <type_traits>

namespace furnace::kernels {

using ExecSpace = Kokkos::DefaultExecutionSpace;
using MemSpace = ExecSpace::memory_space;
using Unmanaged = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
using Range = Kokkos::RangePolicy<ExecSpace>;

// Vectors, matrices [rows, cols], rank-3 and rank-4 tensors, row-major.
template <class T> using View1 = Kokkos::View<T*, Kokkos::LayoutRight, MemSpace, Unmanaged>;
template <class T> using View2 = Kokkos::View<T**, Kokkos::LayoutRight, MemSpace, Unmanaged>;
template <class T> using View3 = Kokkos::View<T***, Kokkos::LayoutRight, MemSpace, Unmanaged>;
template <class T> using View4 = Kokkos::View<T****, Kokkos::LayoutRight, MemSpace, Unmanaged>;

// True when the default memory space is host memory (Serial/OpenMP builds): the
// device and host tiers are then the same memory.
constexpr bool device_is_host() { return std::is_same_v<MemSpace, Kokkos::HostSpace>; }

// Token ids and routing indices are 32-bit signed integers everywhere.
using index_t = std::int32_t;

// The same bytes seen as a flat vector (elementwise kernels work on any rank).
template <class V>
inline View1<typename V::value_type> flat(const V& v) {
  return View1<typename V::value_type>(v.data(), v.size());
}

}  // namespace furnace::kernels
