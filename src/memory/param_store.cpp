#include "memory/param_store.hpp"

#include <numeric>
#include <stdexcept>

#include "kernels/random.hpp"

namespace furnace::memory {

ParamInfo expert_slab(std::string name, std::vector<std::int64_t> global_shape, int ep, int ep_rank) {
  ParamInfo p;
  p.name = std::move(name);
  p.kind = ParamKind::Expert;
  p.shape = global_shape;
  p.shape[0] = global_shape[0] / ep;
  p.global_offset0 = p.shape[0] * ep_rank;
  p.global_shape = std::move(global_shape);
  return p;
}

int ParamStore::add(ParamInfo info) {
  if (storage_.size() != 0) throw std::logic_error("ParamStore::add after allocate: " + info.name);
  if (by_name_.count(info.name)) throw std::logic_error("duplicate parameter " + info.name);
  if (info.global_shape.empty()) info.global_shape = info.shape;
  info.size = std::accumulate(info.shape.begin(), info.shape.end(), std::int64_t(1),
                              std::multiplies<std::int64_t>());
  // Keep every tensor 64-byte aligned inside the buffer (16 floats).
  info.offset = (total_ + 15) / 16 * 16;
  total_ = info.offset + info.size;
  by_name_[info.name] = static_cast<int>(infos_.size());
  infos_.push_back(std::move(info));
  return static_cast<int>(infos_.size()) - 1;
}

void ParamStore::allocate() {
  storage_ = StateBuffer("ParamStore::storage", 4 * ((total_ + 15) / 16 * 16));
  bind_views();
}

void ParamStore::bind_views() {
  params_ = state_part(storage_, 0);
  grads_ = state_part(storage_, 1);
  m_ = state_part(storage_, 2);
  v_ = state_part(storage_, 3);
}

ParamStore::StateBuffer ParamStore::make_state_buffer() const {
  return StateBuffer(Kokkos::view_alloc("ParamStore::storage", Kokkos::WithoutInitializing),
                     storage_.extent(0));
}

kernels::View1<float> ParamStore::state_part(const StateBuffer& b, int part) const {
  const std::int64_t n = (total_ + 15) / 16 * 16;
  return kernels::View1<float>(b.data() + part * n, total_);
}

void ParamStore::adopt_state(StateBuffer b) {
  if (b.extent(0) != storage_.extent(0)) throw std::logic_error("ParamStore::adopt_state: wrong size");
  storage_ = std::move(b);
  bind_views();
  Kokkos::deep_copy(grads_, 0.0f);
}

void ParamStore::initialize(std::uint64_t seed) {
  for (const auto& p : infos_) {
    auto x = kernels::View1<float>(params_.data() + p.offset, p.size);
    if (p.init_std > 0) {
      std::int64_t per_row = p.size / (p.shape.empty() ? 1 : p.shape[0]);
      kernels::fill_normal(x, kernels::stream_key(seed, p.name), p.global_offset0 * per_row,
                           p.init_std);
    } else {
      kernels::fill(x, p.init_value);
    }
  }
}

int ParamStore::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

kernels::View1<float> ParamStore::slice(kernels::View1<float> buf, int i) const {
  return kernels::View1<float>(buf.data() + infos_[i].offset, infos_[i].size);
}

kernels::View1<float> ParamStore::v1(kernels::View1<float> buf, int i) const {
  const auto& s = infos_[i].shape;
  if (s.size() != 1) throw std::logic_error(infos_[i].name + " is not 1-D");
  return slice(buf, i);
}

kernels::View2<float> ParamStore::v2(kernels::View1<float> buf, int i) const {
  const auto& s = infos_[i].shape;
  if (s.size() != 2) throw std::logic_error(infos_[i].name + " is not 2-D");
  return kernels::View2<float>(buf.data() + infos_[i].offset, s[0], s[1]);
}

kernels::View3<float> ParamStore::v3(kernels::View1<float> buf, int i) const {
  const auto& s = infos_[i].shape;
  if (s.size() != 3) throw std::logic_error(infos_[i].name + " is not 3-D");
  return kernels::View3<float>(buf.data() + infos_[i].offset, s[0], s[1], s[2]);
}

}  // namespace furnace::memory
