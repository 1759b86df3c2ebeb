// `furnace bench nvme` (see bench_nvme.hpp). Per rank, `size_mb` in regions of
// `region_mb`, written and read through a memory::NvmeStore with 2 staging slots, and
// the same bytes through a plain file in the same directory: one pwrite/pread per
// region, in order, on this thread, from one aligned buffer, opened in the store's
// mode (O_DIRECT when the store has it, else buffered), so the ratio is what the
// store's queue, thread and staging copy cost or gain, not a difference of modes.
// Every repetition runs both in turn, alternating which goes first; a barrier precedes
// each timing and the slowest rank's time counts. Writes end with fdatasync (timed,
// both). Before each pair of reads both files are rewritten region by region in turn
// and dropped from the guest's page cache (fdatasync + posix_fadvise(DONTNEED)), all
// untimed: see prepare_reads. Each region's first 8 bytes are stamped with its index
// and the repetition, checked on every read; the last repetition is compared in full.
#include "app/bench_nvme.hpp"
#include "app/bench_util.hpp"

#include <fcntl.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "memory/nvme_store.hpp"

namespace furnace::app {
namespace {
namespace fs = std::filesystem;
using memory::AlignedBuffer;
using memory::NvmeStore;

// The plain baseline's file, closed and removed on every way out.
struct PlainFile {
  std::string path;
  int fd = -1;
  ~PlainFile() {
    if (fd >= 0) ::close(fd), ::unlink(path.c_str());
  }
};

std::uint64_t stamp_of(int region, int rep) { return std::uint64_t(region) * 1000003u + std::uint64_t(rep) + 1; }
void stamp(std::byte* p, int region, int rep) {
  const std::uint64_t s = stamp_of(region, rep);
  std::memcpy(p, &s, sizeof s);
}
std::string check(const std::byte* p, int region, int rep, const char* who) {
  std::uint64_t s = 0;
  std::memcpy(&s, p, sizeof s);
  return s == stamp_of(region, rep) ? "" : std::string(who) + " read back another region's or repetition's bytes";
}

// "" or the message of the exception fn throws.
std::string caught(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

int bench_nvme(const BenchNvmeOptions& opt) {
  int rank = 0, P = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  const MPI_Comm world = MPI_COMM_WORLD;
  if (!(opt.size_mb > 0) || opt.size_mb > 1 << 20 || !(opt.region_mb > 0) || opt.region_mb > 4096 ||
      opt.repeat < 1 || !(opt.compute_ms >= 0) || opt.dir.empty()) {
    if (rank == 0)
      std::fprintf(stderr, "furnace: bench nvme: --size-mb must be in (0, 1048576], --region-mb in (0, 4096], "
                           "--repeat >= 1, --compute-ms >= 0, --dir not empty\n");
    return 2;
  }
  std::error_code ec;
  const bool created = rank == 0 && !fs::exists(opt.dir, ec) && fs::create_directories(opt.dir, ec);
  mpiCheck(MPI_Barrier(world));

  const std::uint64_t total = std::uint64_t(opt.size_mb * double(1 << 20));
  const std::uint64_t region = std::min<std::uint64_t>(std::uint64_t(opt.region_mb * double(1 << 20)), total);
  const int n = int((total + region - 1) / region);
  memory::Ledger ledger;
  std::unique_ptr<NvmeStore> store;
  PlainFile plain{(fs::path(opt.dir) / ("plain.rank" + std::to_string(rank) + ".bin")).string()};
  std::string error = caught([&] {
    store = std::make_unique<NvmeStore>(
        memory::NvmeStoreOptions{.dir = opt.dir, .origin = "--dir", .rank = rank, .family = "bench",
                                 .slot_bytes = region, .slots = 2, .category = memory::Category::Workspace,
                                 .force_buffered = opt.buffered},
        ledger);
    for (int i = 0; i < n; ++i) store->add_region("region " + std::to_string(i), std::min(region, total - i * region));
    plain.fd = ::open(plain.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | (store->file().direct() ? O_DIRECT : 0), 0600);
    if (plain.fd < 0) throw std::runtime_error(sys_error("cannot create", plain.path));
    const NvmeStore::Region& last = store->region(n - 1);
    if (::fallocate(plain.fd, 0, 0, off_t(last.offset + last.span)) != 0)
      throw std::runtime_error(sys_error("cannot reserve the baseline's bytes in", plain.path));
  });
  if (const auto agreed = comm::agree_on_error(world, error.empty() ? std::nullopt : std::optional(error), 2)) {
    if (rank == 0) std::fprintf(stderr, "furnace: bench nvme: %s\n", agreed->c_str());
    store.reset();
    if (created) fs::remove(opt.dir, ec);
    return 2;
  }

  const std::size_t align = store->file().alignment();
  AlignedBuffer src(store->region(0).span, align), dst(store->region(0).span, align);
  for (std::size_t j = 0; j < src.size(); ++j) src.data()[j] = std::byte((j * 2654435761u) >> 13);
  int rep = 0;
  double compute_s = opt.compute_ms * 1e-3;

  auto store_write = [&]() -> std::string {
    return caught([&] {
      for (int i = 0; i < n; ++i) stamp(src.data(), i, rep), store->write_back(i, src.data());
      store->flush(true);
    });
  };
  auto plain_write = [&]() -> std::string {
    for (int i = 0; i < n; ++i) {
      stamp(src.data(), i, rep);
      const auto& r = store->region(i);
      if (!full_io(true, plain.fd, reinterpret_cast<char*>(src.data()), r.span, off_t(r.offset)))
        return sys_error("write failed on", plain.path);
    }
    return ::fdatasync(plain.fd) == 0 ? "" : sys_error("fdatasync failed on", plain.path);
  };
  // Reads, with `work` seconds of compute per region after it arrives: the store has
  // the next region's read in flight meanwhile, the plain loop reads only after it.
  auto store_read = [&](double work) -> std::string {
    std::string err;
    err += caught([&] {
      NvmeStore::Ticket t = store->prefetch(0);
      for (int i = 0; i < n && err.empty(); ++i) {
        const NvmeStore::Ticket next = i + 1 < n ? store->prefetch(i + 1) : 0;
        err = check(store->wait(t).data(), i, rep, "the store");
        spin_for(work);
        store->release(t);
        t = next;
      }
      if (t) store->release(t);
    });
    return err;
  };
  auto plain_read = [&](double work) -> std::string {
    for (int i = 0; i < n; ++i) {
      const auto& r = store->region(i);
      if (!full_io(false, plain.fd, reinterpret_cast<char*>(dst.data()), r.span, off_t(r.offset)))
        return sys_error("read failed on", plain.path);
      if (std::string err = check(dst.data(), i, rep, "the plain read"); !err.empty()) return err;
      spin_for(work);
    }
    return "";
  };
  // Before each pair of reads (untimed): both files rewritten region by region in turn,
  // so that neither holds the more recently written bytes. On a VM the virtual disk is
  // a file on the host, whose page cache the guest cannot drop: the file written last
  // would otherwise read faster (measured: x1.3 to x1.8 for whichever went second).
  // Then the guest's cache is dropped for both.
  auto prepare_reads = [&] {
    timed(world, [&] {
      return caught([&] {
        for (int i = 0; i < n; ++i) {
          stamp(src.data(), i, rep), store->write_back(i, src.data());
          const auto& r = store->region(i);
          if (!full_io(true, plain.fd, reinterpret_cast<char*>(src.data()), r.span, off_t(r.offset)))
            throw std::runtime_error(sys_error("write failed on", plain.path));
          store->flush();
        }
      });
    }, error);
    drop_cache(store->file().path());
    drop_cache(plain.path);
  };

  std::vector<double> tsw, tpw, tsr, tpr, tso, tpo;
  // One timing of each, alternating which goes first from one repetition to the next.
  auto both = [&](std::vector<double>& ts, std::vector<double>& tp, const std::function<std::string()>& s,
                  const std::function<std::string()>& p, bool prepare) {
    if (prepare && error.empty()) prepare_reads();
    for (int k = 0; k < 2 && error.empty(); ++k) {
      const bool is_store = (k == 0) == (rep % 2 == 0);
      (is_store ? ts : tp).push_back(timed(world, is_store ? s : p, error));
    }
  };
  for (rep = 0; rep < opt.repeat && error.empty(); ++rep) {
    both(tsw, tpw, store_write, plain_write, false);
    both(tsr, tpr, [&] { return store_read(0); }, [&] { return plain_read(0); }, true);
    if (error.empty() && rep == 0 && opt.compute_ms == 0) compute_s = tpr.back() / n;
    both(tso, tpo, [&] { return store_read(compute_s); }, [&] { return plain_read(compute_s); }, true);
  }
  // The last repetition's bytes, every one of them, through the store (untimed).
  if (error.empty()) {
    --rep;
    timed(world, [&] {
      return caught([&] {
        for (int i = 0; i < n; ++i) {
          const NvmeStore::Ticket t = store->prefetch(i);
          stamp(src.data(), i, rep);
          if (std::memcmp(store->wait(t).data(), src.data(), store->region(i).bytes) != 0)
            throw std::runtime_error("the store read back different bytes than were written to " + store->region(i).name);
          store->release(t);
        }
      });
    }, error);
  }
  const std::string mode = store->file().mode();
  const bool direct = store->file().direct();
  const std::uint64_t staging = ledger.label_current("NvmeStore::staging");
  store.reset();  // removes its file
  ::close(plain.fd), ::unlink(plain.path.c_str()), plain.fd = -1;
  mpiCheck(MPI_Barrier(world));
  if (created) fs::remove(opt.dir, ec);  // only when empty: ours
  if (!error.empty()) {
    if (rank == 0) std::fprintf(stderr, "furnace: bench nvme: %s\n", error.c_str());
    return 1;
  }
  if (rank != 0) return 0;

  const double bytes = double(total) * P, MiB = double(1 << 20);
  std::printf("bench nvme: %d rank(s), dir %s, %.1f MiB per rank in %d regions of %.1f MiB, median of %d reps\n", P,
              opt.dir.c_str(), double(total) / MiB, n, double(region) / MiB, opt.repeat);
  std::printf("  store: %s, 2 staging slots (%s on the host tier), one I/O thread\n", mode.c_str(),
              memory::format_bytes(staging).c_str());
  std::printf("  plain: one pwrite/pread per region, in order, on the calling thread, %s, same directory\n",
              direct ? "O_DIRECT like the store" : "buffered like the store");
  std::printf("  writes end with fdatasync (timed, both); before each pair of reads both files are rewritten "
              "region by region in turn, fdatasynced and posix_fadvise(DONTNEED)ed (untimed)\n");
  std::printf("  %-34s %10s %10s %12s %8s\n", "", "store GB/s", "plain GB/s", "store/plain", "paired");
  auto row = [&](const std::string& what, const std::vector<double>& ts, const std::vector<double>& tp) {
    std::printf("  %-34s %10.2f %10.2f %12.3f %8.3f\n", what.c_str(), bytes / median(ts) / 1e9,
                bytes / median(tp) / 1e9, median(tp) / median(ts), paired_ratio(tp, ts));
  };
  row("write", tsw, tpw);
  row("read", tsr, tpr);
  char label[64];
  std::snprintf(label, sizeof label, "read + %.1f ms compute per region", compute_s * 1e3);
  row(label, tso, tpo);
  std::printf("  (the compute row: the store reads the next region while this one is worked on; the plain "
              "loop reads, then works; up to 2x when compute equals the read)\n");
  const double w = paired_ratio(tpw, tsw), r = paired_ratio(tpr, tsr);
  std::printf("  target: store/plain >= 0.7, median of the paired ratios (write %s, read %s)\n",
              w >= 0.7 ? "met" : "NOT met", r >= 0.7 ? "met" : "NOT met");
  std::fflush(stdout);
  return 0;
}

}  // namespace furnace::app
