#include "memory/nvme_store.hpp"

#include <chrono>
#include <cstring>
#include <stdexcept>

namespace furnace::memory {
namespace {
const std::string kStagingLabel = "NvmeStore::staging";
const std::string kFileLabel = "NvmeStore::file";
}  // namespace

NvmeStore::NvmeStore(NvmeStoreOptions options, Ledger& ledger)
    : options_(std::move(options)),
      ledger_(ledger),
      file_(options_.dir, options_.origin, options_.rank, options_.family, options_.force_buffered),
      slot_span_(round_up(std::max<std::size_t>(options_.slot_bytes, 1), file_.alignment())) {
  if (options_.slots < 1) throw std::logic_error("NvmeStore: slots must be >= 1");
  const std::uint64_t bytes = checked_product(slot_span_, std::uint64_t(options_.slots), kStagingLabel);
  staging_ = std::make_unique<AlignedBuffer>(bytes, file_.alignment());
  ledger_.add(options_.category, Tier::Host, kStagingLabel, bytes);
  slots_.resize(std::size_t(options_.slots));
  for (std::size_t s = 0; s < slots_.size(); ++s) slots_[s].data = staging_->data() + s * slot_span_;
  thread_ = std::thread([this] { run(); });
}

NvmeStore::~NvmeStore() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    queue_.clear();  // the file is removed next: nothing queued needs to reach it
  }
  changed_.notify_all();
  thread_.join();
  ledger_.release(options_.category, Tier::Host, kStagingLabel, staging_->size());
  if (file_bytes_ > 0) ledger_.release(options_.category, Tier::Nvme, kFileLabel, file_bytes_);
}

int NvmeStore::add_region(const std::string& name, std::uint64_t bytes) {
  // The I/O thread reads regions_ while a transfer runs; push_back may move it.
  std::lock_guard lock(mutex_);
  if (in_flight_ > 0) throw std::logic_error("NvmeStore::add_region: " + name + " added while transfers run");
  if (bytes > options_.slot_bytes)
    throw std::logic_error("NvmeStore::add_region: " + name + " (" + std::to_string(bytes) +
                           " bytes) is larger than a staging slot (" + std::to_string(options_.slot_bytes) + ")");
  Region r{name, file_bytes_, bytes, round_up(bytes, file_.alignment())};
  file_.reserve(r.offset, r.span);
  ledger_.add(options_.category, Tier::Nvme, kFileLabel, r.span);
  file_bytes_ += r.span;
  regions_.push_back(std::move(r));
  return int(regions_.size()) - 1;
}

void NvmeStore::throw_if_failed() const {
  if (!error_.empty()) throw std::runtime_error(error_);
}

int NvmeStore::acquire_slot(std::unique_lock<std::mutex>& lock) {
  for (;;) {
    throw_if_failed();
    bool writing = false;
    for (std::size_t s = 0; s < slots_.size(); ++s) {
      if (slots_[s].state == State::Free) return int(s);
      writing = writing || slots_[s].state == State::Writing;
    }
    if (!writing)
      throw std::logic_error("NvmeStore: all " + std::to_string(slots_.size()) +
                             " staging slots hold reads not yet released; release one first");
    changed_.wait(lock);
  }
}

NvmeStore::Slot& NvmeStore::slot_of(Ticket t, const char* who) {
  for (Slot& s : slots_)
    if (t != 0 && s.ticket == t && s.state != State::Free && s.state != State::Writing) return s;
  throw std::logic_error(std::string("NvmeStore::") + who + ": ticket " + std::to_string(t) +
                         " is not an outstanding read (released already, or never issued)");
}

NvmeStore::Ticket NvmeStore::prefetch(int i) {
  region(i);  // the bounds check
  std::unique_lock lock(mutex_);
  Slot& s = slots_[std::size_t(acquire_slot(lock))];
  s.state = State::Reading;
  s.region = i;
  s.ticket = next_ticket_++;
  queue_.push_back(int(&s - slots_.data()));
  ++in_flight_;
  changed_.notify_all();
  return s.ticket;
}

bool NvmeStore::ready(Ticket t) const {
  std::lock_guard lock(mutex_);
  for (const Slot& s : slots_)
    if (t != 0 && s.ticket == t) return s.state == State::Ready || s.state == State::Held || !error_.empty();
  return false;
}

std::span<const std::byte> NvmeStore::wait(Ticket t) {
  std::unique_lock lock(mutex_);
  Slot& s = slot_of(t, "wait");
  changed_.wait(lock, [&] { return s.state != State::Reading || !error_.empty(); });
  throw_if_failed();
  s.state = State::Held;
  return {s.data, std::size_t(regions_[std::size_t(s.region)].bytes)};
}

void NvmeStore::release(Ticket t) {
  std::unique_lock lock(mutex_);
  Slot& s = slot_of(t, "release");
  // A read still running: let it land first, the slot is then free for the next one.
  changed_.wait(lock, [&] { return s.state != State::Reading || !error_.empty(); });
  s.state = State::Free;
  s.ticket = 0;
  changed_.notify_all();
}

void NvmeStore::write_back(int i, const void* data) {
  const Region& r = region(i);
  std::unique_lock lock(mutex_);
  Slot& s = slots_[std::size_t(acquire_slot(lock))];
  // A Free slot belongs to this thread alone until it is queued: copy without the lock
  // held, so the I/O thread goes on with the transfer before this one meanwhile.
  s.state = State::Writing;
  s.region = i;
  lock.unlock();
  std::memcpy(s.data, data, r.bytes);
  std::memset(s.data + r.bytes, 0, r.span - r.bytes);  // deterministic padding in the file
  lock.lock();
  queue_.push_back(int(&s - slots_.data()));
  ++in_flight_;
  changed_.notify_all();
}

void NvmeStore::flush(bool durable) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return in_flight_ == 0 || !error_.empty(); });
  throw_if_failed();
  if (!durable) return;
  if (const std::string e = file_.sync(); !e.empty())
    throw std::runtime_error(error_ = "nvme tier: fdatasync of '" + file_.path() + "' failed: " + e);
}

void NvmeStore::inject_write_fault() { fail_next_write_.store(true); }

NvmeStore::Counters NvmeStore::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

std::string NvmeStore::describe(const Slot& s, bool write) const {
  const Region& r = regions_[std::size_t(s.region)];
  return std::string("nvme tier: ") + (write ? "writing" : "reading") + " region '" + r.name + "' (" +
         std::to_string(r.bytes) + " bytes at offset " + std::to_string(r.offset) + ") " +
         (write ? "to" : "of") + " '" + file_.path() + "' failed: ";
}

void NvmeStore::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Slot& s = slots_[std::size_t(queue_.front())];
    queue_.pop_front();
    const bool write = s.state == State::Writing;
    const Region& r = regions_[std::size_t(s.region)];
    std::string err;
    if (error_.empty()) {  // after a failure, nothing more touches the file
      lock.unlock();
      const auto t0 = std::chrono::steady_clock::now();
      if (write && fail_next_write_.exchange(false))
        err = "injected fault at nvme.write (FURNACE_FAULT)";
      else
        err = write ? file_.write(s.data, r.span, r.offset) : file_.read(s.data, r.span, r.offset);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      lock.lock();
      (write ? counters_.write_s : counters_.read_s) += dt;
      (write ? counters_.bytes_written : counters_.bytes_read) += r.span;
    }
    if (!err.empty() && error_.empty()) error_ = describe(s, write) + err;
    s.state = write ? State::Free : State::Ready;
    --in_flight_;
    changed_.notify_all();
  }
}

}  // namespace furnace::memory
