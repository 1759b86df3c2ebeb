// The nvme tier of a StateStore that offloads (StateStore::offload): each offloaded
// family lives in a file (<nvme_dir>/rank<R>/<family>.bin, a memory::NvmeStore each,
// so the nvme and staging bytes are counted under the family's own category), and a
// group of tensors comes into memory only for its work:
//   Experts (memory.experts = nvme): all four families of each MoE layer's experts;
//     the trainer brings a layer's parameters in for its forward, its parameters and
//     (zeroed) gradients for its backward, writes the gradients out once reduced, and
//     runs the optimizer group by group once the gradient norm is known;
//   Moments (memory.optimizer = nvme): the AdamW moments of every tensor, brought in
//     group by group for the update and written back.
// Reads of the next group are queued ahead (prefetch) so that they overlap the work
// on the current one; each store has two staging slots, so a read and a write can be
// in flight while the current group is worked on.
//
// At most one group is in memory at a time: bringing one in evicts any other (its
// updated families must have been written first; write() copies into staging, so
// eviction may follow at once). A read queued before a write of the same region would
// return the old bytes: write() refuses a region with a read still queued.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "memory/nvme_store.hpp"
#include "memory/state_store.hpp"

namespace furnace::memory {

class StateOffload {
 public:
  static constexpr int kSlotsPerFamily = 2;

  // The stores' host staging (host tier, per offloaded family) and their files (nvme
  // tier) for `ps`'s groups: what Measure mode records before any file exists.
  static std::uint64_t staging_bytes(const StateStore& ps);
  static void record_staging(const StateStore& ps, Ledger& ledger);

  // Creates the files (throws std::runtime_error naming the directory or file); the
  // groups start out of memory, zero in the files. `files`: the directory, its origin
  // for messages, the rank and force_buffered; the rest is set per family.
  StateOffload(StateStore& ps, const NvmeStoreOptions& files, Ledger& ledger);

  int groups() const { return int(ps_.offload_groups().size()); }
  // The group tensor i belongs to, -1 when it is always in memory.
  int group_of(int tensor) const { return group_of_[std::size_t(tensor)]; }
  // The offloaded families, and those of them a checkpoint holds (no gradients).
  const std::vector<Family>& families() const { return families_; }
  const std::vector<Family>& checkpointed() const { return checkpointed_; }
  bool has(Family f) const { return stores_[std::size_t(f)] != nullptr; }

  // Experts: the parameters of every group from the seed (StateStore::initialize),
  // written out. Moments: nothing to do (the files' zeros are the initial moments).
  void initialize(std::uint64_t seed);
  // Queues reads of group g's families that are neither in memory nor queued.
  void prefetch(int g, const std::vector<Family>& families);
  // In memory on return, read from the file (or taken from its queued read); evicts
  // every other group first.
  void bring(int g, const std::vector<Family>& families);
  // In memory on return, all zeros, no read; evicts every other group.
  void bring_zeroed(int g, Family f);
  // Queues writes of group g's families (they must be in memory).
  void write(int g, const std::vector<Family>& families);
  void evict(int g);
  // Waits for every queued transfer; `durable`: fdatasync the files too.
  void flush(bool durable = false);

  // Totals since construction, for the bandwidth the tier achieved.
  struct Traffic {
    std::uint64_t bytes_read = 0, bytes_written = 0;
    double read_s = 0, write_s = 0;  // in transfers, summed over the stores' I/O threads
  };
  Traffic traffic() const;
  const NvmeStore& store(Family f) const { return *stores_[std::size_t(f)]; }
  void inject_write_fault(Family f) { stores_[std::size_t(f)]->inject_write_fault(); }

 private:
  void evict_others(int g);
  StateStore& ps_;
  std::vector<int> group_of_;
  std::vector<Family> families_, checkpointed_;
  std::array<std::unique_ptr<NvmeStore>, kStateFamilies.size()> stores_;
  // A queued read per (family, group), 0 for none.
  std::array<std::vector<NvmeStore::Ticket>, kStateFamilies.size()> pending_;
};

}  // namespace furnace::memory
