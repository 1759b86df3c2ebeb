#include "memory/state_store.hpp"

#include <algorithm>
#include <cstring>
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

const char* family_name(Family f) {
  switch (f) {
    case Family::Param: return "param";
    case Family::Grad: return "grad";
    case Family::ExpAvg: return "exp_avg";
    case Family::ExpAvgSq: return "exp_avg_sq";
  }
  return "?";
}

Category category_of(Family f) {
  switch (f) {
    case Family::Param: return Category::Parameters;
    case Family::Grad: return Category::Gradients;
    default: return Category::Optimizer;
  }
}

Tier Placement::of(Family f) const {
  switch (f) {
    case Family::Param: return params;
    case Family::Grad: return grads;
    default: return optimizer;
  }
}

StateStore::~StateStore() {
  if (!ledger_) return;
  for (Family f : kStateFamilies) {
    const std::uint64_t host = host_expert_bytes(f);
    ledger_->release(category_of(f), tier(f), std::string("StateStore::") + family_name(f), family_bytes(f) - host);
    if (host > 0) ledger_->release(category_of(f), Tier::Host, std::string("StateStore::") + family_name(f) + " (experts)", host);
    if (mode_ == Mode::Measure) {
      if (!groups_.empty() && family_offloaded(f))
        ledger_->release(category_of(f), tier(f), window_label(f), largest_group_bytes());
    } else {
      for (std::size_t g = 0; g < groups_.size(); ++g)
        if (committed_[std::size_t(f)][g])
          ledger_->release(category_of(f), tier(f), window_label(f), std::uint64_t(groups_[g].elems()) * sizeof(float));
    }
  }
}

std::uint64_t StateStore::host_expert_bytes(Family f) const {
  if (placement_.experts != Tier::Host || offloads()) return 0;
  std::int64_t n = 0;
  for (int i = 0; i < int(infos_.size()); ++i)
    if (infos_[std::size_t(i)].kind == ParamKind::Expert)
      n += f == Family::ExpAvg || f == Family::ExpAvgSq ? shards_.part(i).count : infos_[std::size_t(i)].size;
  return std::uint64_t(n) * sizeof(float);
}

std::string StateStore::window_label(Family f) {
  return std::string("StateStore::") + family_name(f) + " (nvme window)";
}

std::uint64_t StateStore::largest_group_bytes() const {
  std::int64_t most = 0;
  for (const auto& g : groups_) most = std::max(most, g.elems());
  return std::uint64_t(most) * sizeof(float);
}

void StateStore::zero_resident(Family f) {
  if (!offloads()) {
    Kokkos::deep_copy(family(f), 0.0f);
    return;
  }
  std::int64_t at = 0;
  auto zero = [&](std::int64_t end) {
    if (end > at) Kokkos::deep_copy(kernels::View1<float>(family(f).data() + at, end - at), 0.0f);
  };
  if (family_offloaded(f))
    for (const auto& g : groups_) {
      zero(g.begin);
      at = g.end;
    }
  zero(total_);
}

void StateStore::offload(Offload what, std::uint64_t group_bytes) {
  if (!infos_.empty()) throw std::logic_error("StateStore::offload after add");
  offload_ = what;
  group_target_ = std::int64_t(std::max<std::uint64_t>(group_bytes / sizeof(float), 1));
}

bool StateStore::offloaded(int i) const {
  switch (offload_) {
    case Offload::None: return false;
    case Offload::Experts: return infos_[std::size_t(i)].kind == ParamKind::Expert;
    case Offload::Moments: return true;
  }
  return false;
}

bool StateStore::offloaded(int i, Family f) const { return family_offloaded(f) && offloaded(i); }

std::vector<Family> StateStore::offloaded_families() const {
  std::vector<Family> out;
  for (Family f : kStateFamilies)
    if (family_offloaded(f)) out.push_back(f);
  return out;
}

void StateStore::commit(Family f, int group) {
  if (!family_offloaded(f)) throw std::logic_error(std::string("StateStore::commit: ") + family_name(f) + " is not offloaded");
  auto&& flag = committed_[std::size_t(f)].at(std::size_t(group));
  if (flag) return;
  const OffloadGroup& g = groups_[std::size_t(group)];
  const std::uint64_t bytes = std::uint64_t(g.elems()) * sizeof(float);
  if (mode_ == Mode::Allocate) reserved_[std::size_t(f)].commit(std::size_t(g.begin) * sizeof(float), bytes);
  ledger_->add(category_of(f), tier(f), window_label(f), bytes);
  flag = true;
}

void StateStore::decommit(Family f, int group) {
  auto&& flag = committed_[std::size_t(f)].at(std::size_t(group));
  if (!flag) return;
  const OffloadGroup& g = groups_[std::size_t(group)];
  const std::uint64_t bytes = std::uint64_t(g.elems()) * sizeof(float);
  if (mode_ == Mode::Allocate) reserved_[std::size_t(f)].decommit(std::size_t(g.begin) * sizeof(float), bytes);
  ledger_->release(category_of(f), tier(f), window_label(f), bytes);
  flag = false;
}

int StateStore::add(ParamInfo info) {
  if (allocated_) throw std::logic_error("StateStore::add after allocate: " + info.name);
  if (by_name_.count(info.name)) throw std::logic_error("duplicate parameter " + info.name);
  if (info.global_shape.empty()) info.global_shape = info.shape;
  std::uint64_t size = 1;
  for (std::int64_t extent : info.shape) size = checked_product(size, std::uint64_t(extent), "tensor " + info.name);
  checked_product(size, 4 * sizeof(float), "tensor " + info.name + "'s state");  // every family of it
  info.size = std::int64_t(size);
  // 64-byte aligned, large tensors on a page (place_tensor); the views start on a page.
  // Experts: an offloaded tensor has its pages to itself: it starts on one, and so does
  // the next. Moments: a group starts on a page once the open one is full.
  const bool isolated = offload_ == Offload::Experts && info.kind == ParamKind::Expert;
  auto to_page = [](std::int64_t x) { return (x + kPageFloats - 1) / kPageFloats * kPageFloats; };
  const bool new_group = offload_ == Offload::Moments && (infos_.empty() || group_fill_ >= group_target_);
  info.offset = isolated || new_group ? to_page(total_) : place_tensor(total_, info.size);
  if (new_group) group_starts_.push_back(int(infos_.size())), group_fill_ = 0;
  group_fill_ += info.size;
  const bool large = info.size >= kPageAlignFrom;
  page_aligned_ = page_aligned_ || large || isolated || new_group;
  total_ = isolated ? to_page(info.offset + info.size) : info.offset + info.size;
  by_name_[info.name] = static_cast<int>(infos_.size());
  infos_.push_back(std::move(info));
  return static_cast<int>(infos_.size()) - 1;
}

void StateStore::allocate(Ledger& ledger, const Placement& placement, Mode mode, const ShardLayout& zero) {
  if (allocated_) throw std::logic_error("StateStore::allocate twice");
  for (Family f : kStateFamilies) {
    // A host-tier family seen through a device view: right where the device is the
    // host; on a GPU the kernels would need it streamed to the device, not built yet.
    const bool host_ok = placement.of(f) == Tier::Host && kernels::device_is_host();
    if (placement.of(f) != Tier::Device && !host_ok)
      throw std::logic_error(std::string("StateStore: the ") + tier_name(placement.of(f)) + " tier for " +
                             family_name(f) + " is not implemented" +
                             (placement.of(f) == Tier::Host ? " on a device that is not the host" : ""));
  }
  total_ = (total_ + 15) / 16 * 16;
  if (offloads()) total_ = (total_ + kPageFloats - 1) / kPageFloats * kPageFloats;  // a Reservation is whole pages
  placement_ = placement;
  shards_ = ShardPlan(infos_, zero);
  sharded_ = zero.sharded();
  mode_ = mode;
  ledger_ = &ledger;
  if (offloads()) {
    allocate_reserved(ledger, mode);
    allocated_ = true;
    return;
  }
  if (placement.experts == Tier::Host && !kernels::device_is_host())
    throw std::logic_error("StateStore: the host tier for the experts is not implemented on a device that is not the host");
  for (Family f : kStateFamilies) {
    const std::string label = std::string("StateStore::") + family_name(f);
    const std::uint64_t host = host_expert_bytes(f);
    ledger.add(category_of(f), tier(f), label, family_bytes(f) - host);
    if (host > 0) ledger.add(category_of(f), Tier::Host, label + " (experts)", host);
    if (mode == Mode::Allocate) {
      const std::int64_t room = family_elems(f) + lead_room();
      float* data = tier(f) == Tier::Host
                        ? (host_buffers_[std::size_t(f)] = Kokkos::View<float*, HostTierSpace>(label, room)).data()
                        : (buffers_[std::size_t(f)] = Kokkos::View<float*, kernels::MemSpace>(label, room)).data();
      const auto address = reinterpret_cast<std::uintptr_t>(data);
      const std::int64_t lead =
          lead_room() > 0 ? std::int64_t((kPageBytes - address % kPageBytes) % kPageBytes / sizeof(float)) : 0;
      views_[std::size_t(f)] = kernels::View1<float>(data + lead, family_elems(f));  // zeroed either way
    } else {
      views_[std::size_t(f)] = kernels::View1<float>(nullptr, family_elems(f));
    }
  }
  allocated_ = true;
}

void StateStore::allocate_reserved(Ledger& ledger, Mode mode) {
  if (sharded_) throw std::logic_error("StateStore: offloaded tensors with sharded moments are not implemented");
  if (!kernels::device_is_host())
    throw std::logic_error("StateStore: the nvme tier needs a device that is the host (a GPU build would stage it)");
  // Moments: the groups cut at group_starts_ (pages), the last one to the end.
  for (std::size_t k = 0; offload_ == Offload::Moments && k < group_starts_.size(); ++k) {
    const int first = group_starts_[k];
    const int last = k + 1 < group_starts_.size() ? group_starts_[k + 1] - 1 : int(infos_.size()) - 1;
    const std::int64_t end = k + 1 < group_starts_.size() ? infos_[std::size_t(last + 1)].offset : total_;
    groups_.push_back({.first = first, .last = last, .begin = infos_[std::size_t(first)].offset, .end = end});
  }
  // Experts: the groups are the maximal runs of consecutive offloaded tensors.
  for (int i = 0; offload_ == Offload::Experts && i < int(infos_.size()); ++i) {
    if (!offloaded(i)) continue;
    const ParamInfo& p = infos_[std::size_t(i)];
    const std::int64_t end = (p.offset + p.size + kPageFloats - 1) / kPageFloats * kPageFloats;
    if (!groups_.empty() && groups_.back().last == i - 1) {
      groups_.back().last = i;
      groups_.back().end = end;
    } else {
      groups_.push_back({.first = i, .last = i, .begin = p.offset, .end = end});
    }
  }
  for (const auto& g : groups_) offloaded_elems_ += g.elems();
  for (Family f : kStateFamilies) {
    const std::string label = std::string("StateStore::") + family_name(f);
    ledger.add(category_of(f), tier(f), label, family_bytes(f));
    committed_[std::size_t(f)].assign(groups_.size(), false);
    if (mode == Mode::Measure) {
      // The most an offloaded family holds at once: one group (StateOffload).
      if (!groups_.empty() && family_offloaded(f))
        ledger.add(category_of(f), tier(f), window_label(f), largest_group_bytes());
      views_[std::size_t(f)] = kernels::View1<float>(nullptr, total_);
      continue;
    }
    Reservation& r = reserved_[std::size_t(f)] = Reservation(std::size_t(total_) * sizeof(float));
    // Everything between the groups is in memory for the whole run, zeroed and
    // resident from the start like every other allocation.
    std::int64_t at = 0;
    auto resident = [&](std::int64_t end) {
      if (end <= at) return;
      r.commit(std::size_t(at) * sizeof(float), std::size_t(end - at) * sizeof(float));
      std::memset(r.data() + at * sizeof(float), 0, std::size_t(end - at) * sizeof(float));
    };
    if (family_offloaded(f))
      for (const auto& g : groups_) {
        resident(g.begin);
        at = g.end;
      }
    resident(total_);
    views_[std::size_t(f)] = kernels::View1<float>(reinterpret_cast<float*>(r.data()), total_);
  }
}

void StateStore::initialize(std::uint64_t seed) {
  for (int i = 0; i < int(infos_.size()); ++i)
    if (!offloaded(i, Family::Param)) initialize(seed, i);
}

void StateStore::initialize(std::uint64_t seed, int i) {
  {
    const auto& p = infos_[std::size_t(i)];
    auto x = slice(params(), i);
    if (p.init_std > 0) {
      std::int64_t per_row = p.size / (p.shape.empty() ? 1 : p.shape[0]);
      kernels::fill_normal(x, kernels::stream_key(seed, p.name), p.global_offset0 * per_row,
                           p.init_std);
    } else {
      kernels::fill(x, p.init_value);
    }
  }
}

int StateStore::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

std::int64_t StateStore::family_elems(Family f) const {
  // Unsharded, the moments have the parameters' layout (ShardPlan), total_ included.
  return sharded_ && (f == Family::ExpAvg || f == Family::ExpAvgSq) ? shards_.total() : total_;
}

kernels::View1<float> StateStore::owned(Family f, int i) const {
  const ShardPlan::Part& part = shards_.part(i);
  const std::int64_t at = f == Family::ExpAvg || f == Family::ExpAvgSq ? part.offset : infos_[i].offset + part.first;
  return kernels::View1<float>(family(f).data() + at, part.count);
}

kernels::View1<float> StateStore::slice(kernels::View1<float> buf, int i) const {
  return kernels::View1<float>(buf.data() + infos_[i].offset, infos_[i].size);
}

kernels::View1<float> StateStore::v1(kernels::View1<float> buf, int i) const {
  const auto& s = infos_[i].shape;
  if (s.size() != 1) throw std::logic_error(infos_[i].name + " is not 1-D");
  return slice(buf, i);
}

kernels::View2<float> StateStore::v2(kernels::View1<float> buf, int i) const {
  const auto& s = infos_[i].shape;
  if (s.size() != 2) throw std::logic_error(infos_[i].name + " is not 2-D");
  return kernels::View2<float>(buf.data() + infos_[i].offset, s[0], s[1]);
}

kernels::View3<float> StateStore::v3(kernels::View1<float> buf, int i) const {
  const auto& s = infos_[i].shape;
  if (s.size() != 3) throw std::logic_error(infos_[i].name + " is not 3-D");
  return kernels::View3<float>(buf.data() + infos_[i].offset, s[0], s[1], s[2]);
}

}  // namespace furnace::memory
