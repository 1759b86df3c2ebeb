// Small helpers that make every HDF5 call checked and every HDF5 id owned. HDF5's own
// error-stack printing is switched off: a failure becomes one h5::Error whose message
// names the call, our source line, and HDF5's innermost reason.
#pragma once
#include <hdf5.h>
#include <mpi.h>

#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace furnace::io::h5 {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Debian's parallel HDF5 is not built thread-safe, and a background checkpoint
// writes while the training thread reads batches. Every HDF5 call of ours holds
// this recursive lock (H5_CHECKED takes it for the duration of the call), which is
// what a thread-safe HDF5 build does internally. Holding it across a collective
// call cannot deadlock: the other thread's HDF5 work is independent I/O only.
std::recursive_mutex& library_mutex();
struct LibraryLock {
  std::lock_guard<std::recursive_mutex> guard{library_mutex()};
};

// Call once at program start, before any other HDF5 call: HDF5 must not register its
// atexit handler, which closes open files with MPI calls while a rank is ending the
// job (MPI_Abort) and turns a one-line failure into an MPICH assertion. Files are
// closed by their Handles. (No H5close at exit either: a file whose close failed,
// e.g. on a full disk, stays open inside HDF5, and closing it again crashes.)
void init();

// Turns off HDF5's automatic error-stack printing (idempotent, cheap).
void silence();
// HDF5's innermost error description (e.g. "truncated file: eof = ..."), or "" when the
// stack is empty; clears the stack.
std::string last_error();
[[noreturn]] void fail(const char* call, const char* file, int line);

template <class T>
T check(T result, const char* call, const char* file, int line) {
  if (result < 0) fail(call, file, line);
  return result;
}

// H5_CHECKED(H5Dread(...)): the result, or h5::Error naming the call and this line.
// The lock temporary lives until the end of the full expression, i.e. past the call.
#define H5_CHECKED(call)                                                  \
  (::furnace::io::h5::LibraryLock(), ::furnace::io::h5::silence(),        \
   ::furnace::io::h5::check((call), #call, __FILE__, __LINE__))

// An owned HDF5 id, closed with `close` (H5Fclose, H5Dclose, ...) at scope exit.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    reset();
    id_ = std::exchange(o.id_, -1);
    close_ = o.close_;
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() { return std::exchange(id_, -1); }  // the caller closes it now
  void reset() {
    LibraryLock lock;
    if (id_ >= 0) close_(id_);  // a failing close in a destructor has no one to tell
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// Leaves an open file to HDF5 without closing it (after a failed collective write,
// see checkpoint_write.cpp) and records that the process must end without
// MPI_Finalize, whose HDF5 shutdown would try to close it.
void abandon(Handle& file);
bool abandoned();

// Scalar attributes on a file, group or dataset. Every read checks the attribute's
// shape (one element), type class and size against the buffer before reading, and
// throws Error naming the attribute when they do not match.
void write_attr(hid_t obj, const char* name, int value);
void write_attr(hid_t obj, const char* name, const std::string& value);
std::optional<int> read_int_attr(hid_t obj, const char* name);  // nullopt when absent
void write_i64_attr(hid_t obj, const char* name, long long value);
void write_u64_attr(hid_t obj, const char* name, unsigned long long value);
std::optional<long long> read_i64_attr(hid_t obj, const char* name);
std::optional<unsigned long long> read_u64_attr(hid_t obj, const char* name);
// A fixed-length string attribute of at most kMaxStringAttr bytes; nullopt when
// absent, h5::Error when not a scalar fixed-length string or longer.
inline constexpr std::size_t kMaxStringAttr = 64 << 10;
std::optional<std::string> read_string_attr(hid_t obj, const char* name);
// A 1-D uint64 attribute of exactly `count` elements (nullopt when absent).
void write_u64_array_attr(hid_t obj, const char* name, const std::vector<unsigned long long>& values);
std::optional<std::vector<unsigned long long>> read_u64_array_attr(hid_t obj, const char* name, std::size_t count);
// A scalar fixed-length string dataset of at most max_bytes (config_json, manifests):
// checks shape, class and size before reading.
std::string read_string_dataset(hid_t loc, const char* name, std::size_t max_bytes);

// The ranks of `comm` agree on a failure before anyone throws, so no rank is left
// waiting in a collective call: returns the message of the lowest failing rank on
// every rank, or nullopt when no rank failed (comm::agree_on_error: a failing rank
// whose partners are stuck elsewhere ends the job with exit `abort_code`). Callers
// throw their own error type.
std::optional<std::string> agree_on_error(MPI_Comm comm, const std::optional<std::string>& error,
                                          int abort_code = 3);

}  // namespace furnace::io::h5
