// The nvme tier: named regions (a tensor, a layer's experts) of one per-rank file
// (NvmeFile), moved through a fixed set of aligned host staging slots by one
// background I/O thread, so that reading the next region overlaps the work on the
// current one:
//
//   t0 = store.prefetch(0);
//   for (i = 0; i < n; ++i) {
//     t1 = i + 1 < n ? store.prefetch(i + 1) : 0;  // read under way while we work on i
//     auto bytes = store.wait(t0);                   // region i, in a staging slot
//     ...work on bytes...; store.write_back(i, result);
//     store.release(t0); t0 = t1;
//   }
//   store.flush();
//
// Bounded: the slots (their count and size) are fixed at construction and recorded
// in the Ledger on the host tier under the store's category ("NvmeStore::staging");
// the regions' file bytes are recorded on the nvme tier ("NvmeStore::file"). Nothing
// is allocated from what a file contains. Operations run in the order they were
// queued, so a read queued after a write_back of the same region sees the new bytes.
//
// Errors: a failed transfer (short read or write, ENOSPC, EIO, ...) is kept with its
// errno text, the region and the file's path, and thrown as one std::runtime_error
// line by wait() for that read, by flush(), and by every later call: after a failure
// the store's contents are unknown, so it fails every operation until it is
// destroyed. Agreeing on the failure across ranks is the caller's (the trainer's).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "memory/ledger.hpp"
#include "memory/nvme_file.hpp"

namespace furnace::memory {

struct NvmeStoreOptions {
  std::string dir;                       // memory.nvme_dir
  std::string origin = "memory.nvme_dir";  // names `dir` in messages
  int rank = 0;
  std::string family = "state";          // the file is <dir>/rank<rank>/<family>.bin
  std::size_t slot_bytes = 0;            // the largest region (rounded up to the alignment)
  int slots = 2;                         // 2: one region worked on while the next one is read
  Category category = Category::Optimizer;
  bool force_buffered = false;           // skip O_DIRECT (tests; file systems that misbehave with it)
};

class NvmeStore {
 public:
  using Ticket = std::uint64_t;  // never 0
  struct Region {
    std::string name;
    std::uint64_t offset = 0, bytes = 0, span = 0;  // span: bytes rounded up to the alignment
  };

  // Throws std::runtime_error (one line) when the directory or file is unusable;
  // `ledger` must outlive the store.
  NvmeStore(NvmeStoreOptions options, Ledger& ledger);
  ~NvmeStore();  // stops the thread (queued transfers are dropped), removes the file
  NvmeStore(const NvmeStore&) = delete;
  NvmeStore& operator=(const NvmeStore&) = delete;

  // The next region of the file, reserved on disk now (zeros until written); its index.
  int add_region(const std::string& name, std::uint64_t bytes);
  const Region& region(int i) const { return regions_.at(std::size_t(i)); }
  int regions() const { return int(regions_.size()); }
  const NvmeFile& file() const { return file_; }
  int slots() const { return int(slots_.size()); }

  // Queues a read of region i into a free slot. Blocks while every free slot is
  // waiting for its write; std::logic_error when no slot can become free (each holds
  // a read not yet released).
  Ticket prefetch(int i);
  // True when wait(t) would not block (the read is done or failed).
  bool ready(Ticket t) const;
  // The region's bytes, valid until release(t). Throws the read's error.
  std::span<const std::byte> wait(Ticket t);
  void release(Ticket t);
  // Copies `data` (region(i).bytes) into a free slot and queues its write; returns as
  // soon as the copy is made, so `data` may be reused at once.
  void write_back(int i, const void* data);
  // Returns when every queued transfer is done, throwing the first error; `durable`:
  // then fdatasync as well.
  void flush(bool durable = false);

  // Bytes moved and seconds the I/O thread spent in transfers, since construction.
  struct Counters {
    std::uint64_t bytes_read = 0, bytes_written = 0;
    double read_s = 0, write_s = 0;  // in transfers of each direction
  };
  Counters counters() const;
  // Testers: the next write fails as a real one would ("injected fault at nvme.write
  // (FURNACE_FAULT)"); the trainer arms it when FURNACE_FAULT names nvme.write.
  void inject_write_fault();

 private:
  enum class State { Free, Reading, Ready, Held, Writing };
  struct Slot {
    std::byte* data = nullptr;
    State state = State::Free;
    Ticket ticket = 0;
    int region = -1;
  };
  void run();
  int acquire_slot(std::unique_lock<std::mutex>& lock);  // a Free slot, index
  Slot& slot_of(Ticket t, const char* who);              // under the lock
  void throw_if_failed() const;                          // under the lock
  std::string describe(const Slot& s, bool write) const;

  NvmeStoreOptions options_;
  Ledger& ledger_;
  NvmeFile file_;
  std::size_t slot_span_;
  std::unique_ptr<AlignedBuffer> staging_;
  std::vector<Region> regions_;
  std::uint64_t file_bytes_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // a slot changed state, or work was queued
  std::vector<Slot> slots_;
  std::deque<int> queue_;            // slots whose transfer is to run, in order
  int in_flight_ = 0;                // queued or running transfers
  Ticket next_ticket_ = 1;
  std::string error_;                // the first failure, as thrown
  Counters counters_;
  std::atomic<bool> fail_next_write_{false};
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace furnace::memory
