// `furnace bench alltoall` (see bench_alltoall.hpp). The three contenders run in turn
// inside each repetition, so all see the same machine state; a barrier precedes each
// timing and the slowest rank's time counts, as it would in a training step.
#include "app/bench_alltoall.hpp"
#include "app/bench_util.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "comm/alltoall.hpp"
#include "comm/exchange_cost.hpp"
#include "kernels/random.hpp"
#include "comm/groups.hpp"
#include "comm/mpi_check.hpp"

namespace furnace::app {
namespace {

using comm::RowExchange;

}  // namespace

int bench_alltoall(const BenchAllToAllOptions& opt) {
  int rank = 0, P = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  const std::int64_t rows = opt.tokens * opt.top_k;
  const char* bad = nullptr;
  if (opt.tokens < 1 || opt.d_model < 1 || opt.top_k < 1 || opt.reps < 1)
    bad = "tokens, d_model, top_k and reps must be >= 1";
  else if (opt.ranks_per_node < 0)
    bad = "ranks_per_node must be >= 0 (0 = detect)";
  else if (rows * opt.d_model > INT_MAX)
    bad = "tokens * top_k * d_model must stay below 2^31 floats per rank (raw MPI_Alltoallv counts)";
  if (bad) {
    if (rank == 0) std::fprintf(stderr, "furnace bench alltoall: %s\n", bad);
    return 2;
  }

  comm::Groups groups(MPI_COMM_WORLD, P, opt.ranks_per_node);
  MPI_Comm world = groups.world();
  const int d = opt.d_model;
  RowExchange flat(groups, RowExchange::Algorithm::Flat, d);
  RowExchange hier(groups, RowExchange::Algorithm::Hierarchical, d);

  // Routing: each of tokens * top_k rows goes to a pseudo-random rank; rows are then
  // grouped by destination, as the MoE layer's permute leaves them.
  std::vector<std::int64_t> send_rows(P, 0);
  for (std::int64_t r = 0; r < rows; ++r) ++send_rows[kernels::splitmix64(std::uint64_t(rank) << 40 | r) % P];
  const std::vector<std::int64_t> recv_rows = flat.exchange_counts(send_rows, 1);
  std::int64_t nrecv = 0;
  for (auto n : recv_rows) nrecv += n;

  std::vector<float> x(rows * d), y(nrecv * d), back(rows * d), y_hier(nrecv * d);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(kernels::splitmix64(rank * 1000003ULL + i) & 0xFFFF);

  // Raw baseline: the same counts in floats on a private duplicate of the world.
  MPI_Comm raw_comm = MPI_COMM_NULL;
  mpiCheck(MPI_Comm_dup(world, &raw_comm));
  std::vector<int> sc(P), sd(P), rc(P), rd(P);
  for (int p = 0, s = 0, r = 0; p < P; ++p) {
    sc[p] = int(send_rows[p] * d), sd[p] = s, s += sc[p];
    rc[p] = int(recv_rows[p] * d), rd[p] = r, r += rc[p];
  }
  auto raw = [&] {
    mpiCheck(MPI_Alltoallv(x.data(), sc.data(), sd.data(), MPI_FLOAT, y.data(), rc.data(),
                           rd.data(), MPI_FLOAT, raw_comm));
    mpiCheck(MPI_Alltoallv(y.data(), rc.data(), rd.data(), MPI_FLOAT, back.data(), sc.data(),
                           sd.data(), MPI_FLOAT, raw_comm));
  };
  auto via = [&](RowExchange& ex, std::vector<float>& mid) {
    return [&x, &back, &send_rows, &recv_rows, e = &ex, m = &mid] {
      e->exchange(x.data(), send_rows, m->data(), recv_rows);
      e->exchange(m->data(), recv_rows, back.data(), send_rows);
    };
  };
  // The same rows as 16-bit values (train.precision = bf16 | fp16 sends these): half
  // the bytes. Only the exchange is timed; the dispatch's conversion is not in it.
  std::vector<std::uint16_t> x16(x.size()), y16(y.size()), y16_hier(y.size()), back16(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x16[i] = std::uint16_t(kernels::splitmix64(rank * 7919ULL + i));
  auto via16 = [&](RowExchange& ex, std::vector<std::uint16_t>& mid) {
    return [&, e = &ex, m = &mid] {
      e->exchange(x16.data(), send_rows, m->data(), recv_rows);
      e->exchange(m->data(), recv_rows, back16.data(), send_rows);
    };
  };
  constexpr int kRuns = 5;
  const std::function<void()> runs[kRuns] = {raw, via(flat, y), via(hier, y_hier), via16(flat, y16),
                                             via16(hier, y16_hier)};

  // Correctness first: both algorithms must deliver the same bits (and x must return).
  runs[1]();
  runs[2]();
  int wrong = std::memcmp(y.data(), y_hier.data(), y.size() * sizeof(float)) != 0 ||
              std::memcmp(x.data(), back.data(), x.size() * sizeof(float)) != 0;
  runs[3]();
  runs[4]();
  wrong |= y16 != y16_hier || back16 != x16;
  int any_wrong = 0;
  mpiCheck(MPI_Allreduce(&wrong, &any_wrong, 1, MPI_INT, MPI_MAX, world));

  const int warmup = 3;
  std::vector<double> t[kRuns];
  for (int rep = 0; rep < warmup + opt.reps; ++rep)
    for (int k = 0; k < kRuns; ++k) {
      const int a = (rep + k) % kRuns;  // rotate who goes first
      const double s = slowest_rank_time(world, runs[a]);
      if (rep >= warmup) t[a].push_back(s);
    }
  mpiCheck(MPI_Comm_free(&raw_comm));

  // Token bytes of one dispatch + combine: every rank's sent + received, both ways.
  double local = 2.0 * double(rows + nrecv) * d * sizeof(float), bytes = 0;
  mpiCheck(MPI_Allreduce(&local, &bytes, 1, MPI_DOUBLE, MPI_SUM, world));
  // What comm.alltoall = auto would pick here: the trainer's own measurement and model
  // (one exchange of a rank's rows; an iteration above is two: dispatch and combine).
  const comm::MeasuredLinks links = comm::measure_links(groups);
  const comm::ExchangeChoice choice = comm::choose_exchange(
      {.ep = P, .ranks_per_node = groups.layout().ranks_per_node, .bytes = double(rows) * d * 4}, links.intra,
      links.inter, links.copy_bandwidth);
  if (rank == 0) {
    std::printf("furnace bench alltoall: %s; ep %d over %d node(s)\n", groups.describe().c_str(), P,
                hier.nodes() ? hier.nodes() : -1);
    std::printf("MoE dispatch + combine: %lld tokens/rank x top_k %d, d_model %d (%.1f MiB "
                "sent+received per iteration, all ranks); median of %d reps, max over ranks\n",
                (long long)opt.tokens, opt.top_k, d, bytes / (1 << 20), opt.reps);
    std::printf("%-15s %10s %9s %8s  %s\n", "algorithm", "ms/iter", "GB/s", "vs raw", "note");
    const char* names[kRuns] = {"raw alltoallv", "flat", "hierarchical", "flat 16-bit", "hier. 16-bit"};
    const double raw_t = median(t[0]);
    for (int a = 0; a < kRuns; ++a) {
      const double m = median(t[a]);
      const double moved = a >= 3 ? bytes / 2 : bytes;  // 16-bit rows: half the bytes
      std::string note = a >= 3 ? "rows of 16-bit values (half the bytes)" : "";
      if (a == 4) note += "; ";
      if (a == 2 || a == 4)
        note += hier.algorithm() == RowExchange::Algorithm::Hierarchical
                   ? std::to_string(hier.nodes()) + " nodes x " +
                         std::to_string(hier.ranks_per_node()) + " ranks, 2 phases"
                   : "runs flat: " + hier.note();
      std::printf("%-15s %10.3f %9.2f %8.3f  %s\n", names[a], m * 1e3, moved / m * 1e-9, raw_t / m,
                  note.c_str());
    }
    std::printf("auto: %s; links: intra-node %.1f us %.2f GB/s, inter-node %.1f us %.2f GB/s\n",
                choice.reason.c_str(), links.intra.latency_s * 1e6, links.intra.bandwidth / 1e9,
                links.inter.latency_s * 1e6, links.inter.bandwidth / 1e9);
    if (any_wrong) std::printf("ERROR: flat and hierarchical results differ\n");
    std::fflush(stdout);
  }
  return any_wrong ? 1 : 0;
}

}  // namespace furnace::app
