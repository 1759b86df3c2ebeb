#include "memory/state_offload.hpp"

#include <cstring>
#include <stdexcept>

namespace furnace::memory {
namespace {

std::uint64_t group_bytes(const StateStore& ps, int g) {
  return std::uint64_t(ps.offload_groups()[std::size_t(g)].elems()) * sizeof(float);
}

float* group_data(const StateStore& ps, Family f, int g) {
  return ps.family(f).data() + ps.offload_groups()[std::size_t(g)].begin;
}

}  // namespace

std::uint64_t StateOffload::staging_bytes(const StateStore& ps) {
  // NvmeStore rounds a slot to the file's alignment; groups are whole pages, which
  // is that alignment on every file system seen so far.
  return ps.offload_groups().empty() ? 0 : round_up(ps.largest_group_bytes(), 4096) * kSlotsPerFamily;
}

void StateOffload::record_staging(const StateStore& ps, Ledger& ledger) {
  if (ps.offload_groups().empty()) return;
  for (Family f : ps.offloaded_families()) ledger.add(category_of(f), Tier::Host, "NvmeStore::staging", staging_bytes(ps));
  for (Family f : ps.offloaded_families())
    for (int g = 0; g < int(ps.offload_groups().size()); ++g)
      ledger.add(category_of(f), Tier::Nvme, "NvmeStore::file", round_up(group_bytes(ps, g), 4096));
}

StateOffload::StateOffload(StateStore& ps, const NvmeStoreOptions& files, Ledger& ledger)
    : ps_(ps), group_of_(ps.infos().size(), -1), families_(ps.offloaded_families()) {
  const auto& groups = ps.offload_groups();
  for (int g = 0; g < int(groups.size()); ++g)
    for (int i = groups[std::size_t(g)].first; i <= groups[std::size_t(g)].last; ++i) group_of_[std::size_t(i)] = g;
  for (Family f : families_)
    if (f != Family::Grad) checkpointed_.push_back(f);
  for (Family f : families_) {
    NvmeStoreOptions o = files;
    o.family = family_name(f);
    o.slot_bytes = std::size_t(ps.largest_group_bytes());
    o.slots = kSlotsPerFamily;
    o.category = category_of(f);
    auto& store = stores_[std::size_t(f)] = std::make_unique<NvmeStore>(o, ledger);
    for (int g = 0; g < int(groups.size()); ++g)
      store->add_region("group " + std::to_string(g) + " (" + ps.info(groups[std::size_t(g)].first).name + "...)",
                        group_bytes(ps, g));
    pending_[std::size_t(f)].assign(groups.size(), 0);
  }
}

void StateOffload::evict_others(int g) {
  for (int o = 0; o < groups(); ++o)
    if (o != g) evict(o);
}

void StateOffload::evict(int g) {
  for (Family f : families_) ps_.decommit(f, g);
}

void StateOffload::initialize(std::uint64_t seed) {
  if (!has(Family::Param)) return;
  for (int g = 0; g < groups(); ++g) {
    bring_zeroed(g, Family::Param);
    const auto& grp = ps_.offload_groups()[std::size_t(g)];
    for (int i = grp.first; i <= grp.last; ++i) ps_.initialize(seed, i);
    write(g, {Family::Param});
  }
  for (int g = 0; g < groups(); ++g) evict(g);
  flush();
}

void StateOffload::prefetch(int g, const std::vector<Family>& families) {
  for (Family f : families) {
    auto& t = pending_[std::size_t(f)].at(std::size_t(g));
    if (t == 0 && !ps_.committed(f, g)) t = stores_[std::size_t(f)]->prefetch(g);
  }
}

void StateOffload::bring(int g, const std::vector<Family>& families) {
  evict_others(g);
  prefetch(g, families);
  for (Family f : families) {
    auto& t = pending_[std::size_t(f)][std::size_t(g)];
    if (t == 0) continue;  // in memory already
    NvmeStore& store = *stores_[std::size_t(f)];
    const auto bytes = store.wait(t);
    ps_.commit(f, g);
    std::memcpy(group_data(ps_, f, g), bytes.data(), bytes.size());
    store.release(t);
    t = 0;
  }
}

void StateOffload::bring_zeroed(int g, Family f) {
  evict_others(g);
  if (pending_[std::size_t(f)][std::size_t(g)] != 0)
    throw std::logic_error("StateOffload::bring_zeroed: a read of the same region is queued");
  if (ps_.committed(f, g))
    std::memset(group_data(ps_, f, g), 0, group_bytes(ps_, g));
  else
    ps_.commit(f, g);  // fresh pages read as zero
}

void StateOffload::write(int g, const std::vector<Family>& families) {
  for (Family f : families) {
    if (!ps_.committed(f, g)) throw std::logic_error("StateOffload::write: the group is not in memory");
    if (pending_[std::size_t(f)][std::size_t(g)] != 0)
      throw std::logic_error("StateOffload::write: a read of the same region is still queued");
    stores_[std::size_t(f)]->write_back(g, group_data(ps_, f, g));
  }
}

void StateOffload::flush(bool durable) {
  for (auto& s : stores_)
    if (s) s->flush(durable);
}

StateOffload::Traffic StateOffload::traffic() const {
  Traffic t;
  for (const auto& s : stores_) {
    if (!s) continue;
    const auto c = s->counters();
    t.bytes_read += c.bytes_read;
    t.bytes_written += c.bytes_written;
    t.read_s += c.read_s;
    t.write_s += c.write_s;
  }
  return t;
}

}  // namespace furnace::memory
