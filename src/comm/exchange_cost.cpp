#include "comm/exchange_cost.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "comm/mpi_check.hpp"

namespace furnace::comm {
namespace {

struct Tiers {
  int L, N;  // ranks of the ep group per node, nodes
};
Tiers tiers(const ExchangeShape& s) {
  const int L = std::max(1, std::min(s.ranks_per_node, s.ep));
  return {L, std::max(1, s.ep / L)};
}

// The staging copy's rate: memcpy of 4 MiB, the fastest of 3 (bytes/s).
double copy_rate() {
  std::vector<char> a(std::size_t(4) << 20, 1), b(a.size());
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), a.size());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return double(a.size()) / std::max(best, 1e-9);
}

}  // namespace

double flat_exchange_time(const ExchangeShape& s, const Link& intra, const Link& inter) {
  const auto [L, N] = tiers(s);
  const double local = intra.time(s.bytes * (L - 1) / s.ep, 2.0 * (L - 1));
  const double remote = N > 1 ? inter.time(L * s.bytes * (s.ep - L) / s.ep, 2.0 * (s.ep - L)) : 0;
  return std::max(local, remote);
}

double hierarchical_exchange_time(const ExchangeShape& s, const Link& intra, const Link& inter,
                                  double copy_bandwidth) {
  const auto [L, N] = tiers(s);
  return intra.time(s.bytes * (L - 1) / L, double(L - 1) * 2) + inter.time(L * s.bytes * (N - 1) / N, N - 1) +
         2 * s.bytes / copy_bandwidth;
}

ExchangeChoice choose_exchange(const ExchangeShape& s, const Link& intra, const Link& inter, double copy_bandwidth) {
  ExchangeChoice c;
  c.flat_s = flat_exchange_time(s, intra, inter);
  const auto [L, N] = tiers(s);
  char line[256];
  if (N < 2 || L < 2) {
    std::snprintf(line, sizeof line, "flat (%s: the hierarchical exchange would run flat)",
                  N < 2 ? "the ep group is on one node" : "one rank of the ep group per node");
    c.reason = line;
    return c;
  }
  c.hierarchical_s = hierarchical_exchange_time(s, intra, inter, copy_bandwidth);
  if (c.hierarchical_s < c.flat_s) c.algorithm = RowExchange::Algorithm::Hierarchical;
  std::snprintf(line, sizeof line, "%s (alpha-beta model per exchange of %.0f KiB: flat %.3f ms, hierarchical %.3f ms)",
                c.algorithm == RowExchange::Algorithm::Hierarchical ? "hierarchical" : "flat", s.bytes / 1024,
                c.flat_s * 1e3, c.hierarchical_s * 1e3);
  c.reason = line;
  return c;
}

double ping_pong(MPI_Comm comm, int a, int b, std::size_t bytes, int reps) {
  int rank = 0;
  mpiCheck(MPI_Comm_rank(comm, &rank));
  std::vector<char> buf(std::max<std::size_t>(bytes, 1));
  double best = 1e30;
  for (int r = 0; r < reps + 2; ++r) {  // two untimed warm-up trips
    mpiCheck(MPI_Barrier(comm));
    const double t0 = MPI_Wtime();
    if (rank == a) {
      mpiCheck(MPI_Send(buf.data(), int(bytes), MPI_BYTE, b, 0, comm));
      mpiCheck(MPI_Recv(buf.data(), int(bytes), MPI_BYTE, b, 0, comm, MPI_STATUS_IGNORE));
    } else if (rank == b) {
      mpiCheck(MPI_Recv(buf.data(), int(bytes), MPI_BYTE, a, 0, comm, MPI_STATUS_IGNORE));
      mpiCheck(MPI_Send(buf.data(), int(bytes), MPI_BYTE, a, 0, comm));
    }
    if (r >= 2) best = std::min(best, (MPI_Wtime() - t0) / 2);
  }
  mpiCheck(MPI_Bcast(&best, 1, MPI_DOUBLE, a, comm));
  return best;
}

double swap_time(MPI_Comm comm, int a, int b, std::size_t bytes, int reps) {
  int rank = 0;
  mpiCheck(MPI_Comm_rank(comm, &rank));
  std::vector<char> out(std::max<std::size_t>(bytes, 1)), in(out.size());
  std::vector<double> times;
  for (int r = 0; r < reps + 1; ++r) {  // one untimed warm-up
    mpiCheck(MPI_Barrier(comm));
    const double t0 = MPI_Wtime();
    if (rank == a || rank == b)
      mpiCheck(MPI_Sendrecv(out.data(), int(bytes), MPI_BYTE, rank == a ? b : a, 1, in.data(), int(bytes), MPI_BYTE,
                            rank == a ? b : a, 1, comm, MPI_STATUS_IGNORE));
    if (r >= 1) times.push_back(MPI_Wtime() - t0);
  }
  std::nth_element(times.begin(), times.begin() + std::ptrdiff_t(times.size() / 2), times.end());
  double t = times[times.size() / 2];
  mpiCheck(MPI_Bcast(&t, 1, MPI_DOUBLE, a, comm));
  return t;
}

Link measure_pair(MPI_Comm comm, int a, int b, std::size_t big, int small_reps, int big_reps) {
  const double alpha = ping_pong(comm, a, b, 8, small_reps);
  const double t_big = swap_time(comm, a, b, big, big_reps);
  return {alpha, double(big) / std::max(t_big - alpha, 0.5 * t_big)};
}

MeasuredLinks measure_links(const Groups& g, std::size_t big, int small_reps, int big_reps) {
  const MPI_Comm world = g.world();
  // Every rank's node, named by the world rank of its node's first rank.
  int leader = g.rank();
  mpiCheck(MPI_Bcast(&leader, 1, MPI_INT, 0, g.node_comm()));
  std::vector<int> node(std::size_t(g.size()));
  mpiCheck(MPI_Allgather(&leader, 1, MPI_INT, node.data(), 1, MPI_INT, world));
  int intra_peer = -1, inter_peer = -1;
  for (int r = 1; r < g.size(); ++r) {
    if (node[std::size_t(r)] == node[0] && intra_peer < 0) intra_peer = r;
    if (node[std::size_t(r)] != node[0] && inter_peer < 0) inter_peer = r;
  }
  MeasuredLinks m;
  if (intra_peer > 0) m.intra = measure_pair(world, 0, intra_peer, big, small_reps, big_reps), m.has_intra = true;
  if (inter_peer > 0) m.inter = measure_pair(world, 0, inter_peer, big, small_reps, big_reps), m.has_inter = true;
  if (!m.has_intra) m.intra = m.inter;
  if (!m.has_inter) m.inter = m.intra;
  m.copy_bandwidth = g.rank() == 0 ? copy_rate() : 0;
  mpiCheck(MPI_Bcast(&m.copy_bandwidth, 1, MPI_DOUBLE, 0, world));
  return m;
}

}  // namespace furnace::comm
