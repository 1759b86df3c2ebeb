#include "memory/arena.hpp"

#include <algorithm>

namespace furnace::memory {

Arena::Arena(std::string label, Category category, Ledger& ledger, Mode mode, std::size_t chunk_bytes)
    : label_(std::move(label)), category_(category), ledger_(ledger), mode_(mode), chunk_bytes_(chunk_bytes) {}

Arena::~Arena() {
  if (reserved_ > 0) ledger_.release(category_, Tier::Device, label_, reserved_);
}

namespace {
constexpr std::size_t kAlign = 64;
}

void Arena::reserve(std::size_t bytes) {
  if (mode_ == Mode::Measure || bytes == 0) return;
  // Zeroed, so every page is touched now: a run that does not fit fails at set-up, not
  // at the step whose routing first fills a buffer, and the resident memory is what the
  // ledger says.
  chunks_.emplace_back(label_ + "::chunk", bytes);
  ledger_.add(category_, Tier::Device, label_, bytes);
  chunk_size_ = bytes;
  offset_ = 0;
  reserved_ += bytes;
}

void* Arena::allocate_bytes(std::size_t bytes) {
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;
  if (mode_ == Mode::Measure) {  // exact bytes, no chunks
    ledger_.add(category_, Tier::Device, label_, bytes);
    reserved_ += bytes;
    used_ += bytes;
    return nullptr;
  }
  if (reserved_ == 0 || offset_ + bytes > chunk_size_) {
    // A request larger than a chunk gets a chunk of its own size.
    const std::size_t size = std::max(bytes, chunk_bytes_);
    chunks_.emplace_back(label_ + "::chunk", size);  // zeroed, as in reserve()
    ledger_.add(category_, Tier::Device, label_, size);
    chunk_size_ = size;
    offset_ = 0;
    reserved_ += size;
  }
  void* p = chunks_.back().data() + offset_;
  offset_ += bytes;
  used_ += bytes;
  return p;
}

Arenas::Arenas(const std::string& owner, Ledger& ledger, Mode mode)
    : activations(owner + "::activations", Category::Activations, ledger, mode),
      communication(owner + "::communication", Category::Communication, ledger, mode),
      workspace(owner + "::workspace", Category::Workspace, ledger, mode) {}

void Arenas::reserve(const Ledger& measured) {
  for (Arena* a : {&activations, &communication, &workspace}) a->reserve(measured.label_peak(a->label()));
}

}  // namespace furnace::memory
