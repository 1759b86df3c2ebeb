// RowExchange (see alltoall.hpp). Counts and displacements go to MPI in rows of a
// contiguous datatype of `width` floats, so int counts reach 2^31 rows, not floats.
#include "comm/alltoall.hpp"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

#include "comm/mpi_check.hpp"
#include "comm/wait.hpp"

namespace furnace::comm {
namespace {

int to_int(std::int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) {
    const std::string msg = std::string("RowExchange: ") + what + " = " + std::to_string(v) +
                            " is outside [0, 2^31) rows";
    abort_job(msg.c_str(), 4);
  }
  return static_cast<int>(v);
}

// MPI wants int counts and displacements; fills both from row counts and offsets.
void counts_displs(const std::vector<std::int64_t>& rows, const std::vector<std::int64_t>& off,
                   std::vector<int>& counts, std::vector<int>& displs) {
  counts.resize(rows.size());
  displs.resize(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    counts[i] = to_int(rows[i], "row count");
    displs[i] = to_int(off[i], "row offset");
    to_int(off[i] + rows[i], "last row");
  }
}

// Offsets of rows laid out back to back, in peer order.
std::vector<std::int64_t> contiguous(const std::vector<std::int64_t>& rows) {
  std::vector<std::int64_t> off(rows.size(), 0);
  for (std::size_t i = 1; i < rows.size(); ++i) off[i] = off[i - 1] + rows[i - 1];
  return off;
}

// The process says a fallback once, however many layers build a RowExchange.
bool g_fallback_said = false;

}  // namespace

RowExchange::RowExchange(const Groups& groups, Algorithm algorithm, int width, memory::Ledger* ledger)
    : requested_(algorithm),
      algorithm_(Algorithm::Flat),
      width_(width),
      pool_(kStagingLabel, memory::Category::Communication, memory::Tier::Host,
            ledger ? *ledger : own_ledger_) {
  if (width < 1) abort_job("RowExchange: row width must be >= 1", 4);
  mpiCheck(MPI_Type_contiguous(width, MPI_FLOAT, &rows_fp32_.type));
  mpiCheck(MPI_Type_commit(&rows_fp32_.type));
  rows_fp32_.bytes = std::size_t(width) * sizeof(float);
  mpiCheck(MPI_Type_contiguous(width, MPI_UINT16_T, &rows_16bit_.type));
  mpiCheck(MPI_Type_commit(&rows_16bit_.type));
  rows_16bit_.bytes = std::size_t(width) * sizeof(std::uint16_t);
  // Our own communicator, so our messages never match anyone else's on ep_comm.
  mpiCheck(MPI_Comm_dup(groups.ep_comm(), &ep_));
  mpiCheck(MPI_Comm_rank(ep_, &ep_rank_));
  mpiCheck(MPI_Comm_size(ep_, &ep_size_));

  // A node's id is the lowest world rank on it; the ep group learns every member's id.
  int world_rank = groups.rank(), node_id = 0;
  mpiCheck(MPI_Allreduce(&world_rank, &node_id, 1, MPI_INT, MPI_MIN, groups.node_comm()));
  std::vector<int> ids(ep_size_);
  mpiCheck(MPI_Allgather(&node_id, 1, MPI_INT, ids.data(), 1, MPI_INT, ep_));

  // Equal, contiguous blocks: L = size of the first block; every block of L ranks must
  // share one id and no id may appear in two blocks. All ranks see the same ids, so
  // they reach the same verdict and enter the same collectives below.
  const int P = ep_size_;
  int L = static_cast<int>(std::count(ids.begin(), ids.end(), ids[0]));
  bool even = P % L == 0;
  for (int r = 0; even && r < P; ++r) {
    even = ids[r] == ids[(r / L) * L];
    if (even && r % L == 0)
      for (int b = 0; b < r; b += L) even = even && ids[b] != ids[r];
  }
  nodes_ = even ? P / L : 0;
  per_node_ = even ? L : 0;
  bool fallback = false;
  if (algorithm == Algorithm::Hierarchical) {
    if (!even) {
      fallback = true;
      note_ = "the ep group's ranks are not equal contiguous blocks per node; using flat";
    } else if (nodes_ == 1 || per_node_ == 1) {
      // Hierarchical would be Flat plus two copies here.
      note_ = nodes_ == 1 ? "one node: hierarchical = flat" : "one rank per node: hierarchical = flat";
    } else {
      algorithm_ = Algorithm::Hierarchical;
      node_ = ep_rank_ / L;
      local_ = ep_rank_ % L;
      mpiCheck(MPI_Comm_split(ep_, node_, local_, &intra_));
      mpiCheck(MPI_Comm_split(ep_, local_, node_, &inter_));
    }
  }
  // Rank 0 speaks for every ep group (groups differ when nodes are uneven).
  int any = fallback ? 1 : 0, anywhere = 0;
  mpiCheck(MPI_Allreduce(&any, &anywhere, 1, MPI_INT, MPI_MAX, groups.world()));
  if (anywhere && groups.rank() == 0 && !g_fallback_said) {
    g_fallback_said = true;
    std::fprintf(stderr,
                 "furnace: hierarchical all-to-all needs equal nodes of contiguous ep ranks "
                 "(%s); falling back to flat\n",
                 groups.describe().c_str());
    std::fflush(stderr);
  }
}

std::size_t RowExchange::balanced_staging_bytes(Algorithm algorithm, std::int64_t rows, std::size_t row_bytes) {
  if (algorithm != Algorithm::Hierarchical || rows <= 0) return 0;
  using Pool = memory::Pool<Kokkos::HostSpace>;
  return Pool::class_bytes(Pool::class_of(std::size_t(rows) * row_bytes));
}

RowExchange::~RowExchange() {
  for (MPI_Comm* c : {&inter_, &intra_, &ep_})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
  for (MPI_Datatype* t : {&rows_fp32_.type, &rows_16bit_.type})
    if (*t != MPI_DATATYPE_NULL) MPI_Type_free(t);
}

std::vector<std::int64_t> RowExchange::exchange_counts(const std::vector<std::int64_t>& counts,
                                                       int slots) {
  if (slots < 1 || counts.size() != std::size_t(ep_size_) * slots)
    abort_job("RowExchange::exchange_counts: need ep_size * slots counts", 4);
  std::vector<std::int64_t> recv(counts.size());
  alltoall(counts.data(), slots, MPI_INT64_T, recv.data(), slots, MPI_INT64_T, ep_);
  return recv;
}

std::int64_t RowExchange::max_over_group(std::int64_t value) {
  std::int64_t most = 0;
  allreduce(&value, &most, 1, MPI_INT64_T, MPI_MAX, ep_);
  return most;
}

void RowExchange::exchange(const float* send, const Rows& send_rows, float* recv, const Rows& recv_rows) {
  exchange(send, send_rows, contiguous(send_rows), recv, recv_rows, contiguous(recv_rows));
}

void RowExchange::exchange(const float* send, const Rows& send_rows, const Rows& send_off, float* recv,
                           const Rows& recv_rows, const Rows& recv_off) {
  exchange_rows(rows_fp32_, reinterpret_cast<const std::byte*>(send), send_rows, send_off,
                reinterpret_cast<std::byte*>(recv), recv_rows, recv_off);
}

void RowExchange::exchange(const std::uint16_t* send, const Rows& send_rows, std::uint16_t* recv,
                           const Rows& recv_rows) {
  exchange(send, send_rows, contiguous(send_rows), recv, recv_rows, contiguous(recv_rows));
}

void RowExchange::exchange(const std::uint16_t* send, const Rows& send_rows, const Rows& send_off,
                           std::uint16_t* recv, const Rows& recv_rows, const Rows& recv_off) {
  exchange_rows(rows_16bit_, reinterpret_cast<const std::byte*>(send), send_rows, send_off,
                reinterpret_cast<std::byte*>(recv), recv_rows, recv_off);
}

void RowExchange::exchange_rows(const RowFormat& row, const std::byte* send, const Rows& send_rows,
                                const Rows& send_off, std::byte* recv, const Rows& recv_rows,
                                const Rows& recv_off) {
  const std::size_t P = std::size_t(ep_size_);
  if (send_rows.size() != P || recv_rows.size() != P || send_off.size() != P || recv_off.size() != P)
    abort_job("RowExchange::exchange: row counts and offsets need one entry per ep rank", 4);
  timer_.begin(ep_);
  if (algorithm_ == Algorithm::Hierarchical)
    hierarchical(row, send, send_rows, send_off, recv, recv_rows, recv_off);
  else
    flat(row, send, send_rows, send_off, recv, recv_rows, recv_off);
  timer_.end();
}

void RowExchange::flat(const RowFormat& row, const std::byte* send, const Rows& send_rows, const Rows& send_off,
                       std::byte* recv, const Rows& recv_rows, const Rows& recv_off) {
  std::vector<int> sc, sd, rc, rd;
  counts_displs(send_rows, send_off, sc, sd);
  counts_displs(recv_rows, recv_off, rc, rd);
  alltoallv(send, sc.data(), sd.data(), row.type, recv, rc.data(), rd.data(), row.type, ep_);
}

// Ep rank d = b * L + j (node block b, local index j); N node blocks.
//   counts   intra-node all-to-all of N counts per peer: c1[i*N + b] = rows that local
//            rank i sends this rank in phase 1, bound for (b, local_).
//   phase 1  intra-node: one message per (local peer, destination node), straight from
//            the send buffer into a staging block, landing (b, i)-ordered; point-to-point rather
//            than alltoallv so that neither side needs a pack or unpack copy.
//   phase 2  inter-node alltoallv: to node b the rows of (node_, 0..L-1) bound for
//            (b, local_), contiguous in the staging block; from node b the rows of (b, 0..L-1), in
//            order, which is exactly source-ep-rank order, as Flat delivers.
//   gaps     phase 2 delivers node b's sources back to back; when recv_off leaves a gap
//            inside a node's block (a round of the MoE dispatcher) it lands in a pool block
//            and is copied to its offsets.
void RowExchange::hierarchical(const RowFormat& row, const std::byte* send, const Rows& send_rows,
                               const Rows& send_off, std::byte* recv, const Rows& recv_rows, const Rows& recv_off) {
  const int N = nodes_, L = per_node_;
  const std::size_t w = row.bytes;  // offsets below are in rows: row r starts at byte r * w

  std::vector<std::int64_t> c0(std::size_t(L) * N), c1(std::size_t(L) * N);
  for (int j = 0; j < L; ++j)
    for (int b = 0; b < N; ++b) c0[j * N + b] = send_rows[b * L + j];
  alltoall(c0.data(), N, MPI_INT64_T, c1.data(), N, MPI_INT64_T, intra_);

  // stage_ row offsets in (b, i) order; phase 2 sends block b = (b, 0..L-1).
  std::vector<std::int64_t> stage_off(std::size_t(N) * L + 1, 0), p2_send(N, 0), p2_recv(N, 0);
  for (int b = 0; b < N; ++b)
    for (int i = 0; i < L; ++i) {
      stage_off[b * L + i + 1] = stage_off[b * L + i] + c1[i * N + b];
      p2_send[b] += c1[i * N + b];
      p2_recv[b] += recv_rows[b * L + i];
    }
  to_int(stage_off.back(), "staged rows");
  // From the pool: the block of last call's size class comes back, without new bytes.
  const auto stage_block = pool_.acquire(std::size_t(stage_off.back()) * w);
  std::byte* const stage = stage_block.data<std::byte>();

  // Tags name the destination node, so each (peer, node) message is unambiguous; empty
  // messages are skipped on both sides, which know the same counts.
  std::vector<MPI_Request> reqs;
  reqs.reserve(2 * std::size_t(N) * L);
  for (int i = 0; i < L; ++i)
    for (int b = 0; b < N; ++b) {
      const std::int64_t n = c1[i * N + b];
      if (n == 0 || i == local_) continue;
      reqs.emplace_back();
      mpiCheck(MPI_Irecv(stage + stage_off[b * L + i] * w, int(n), row.type, i, b, intra_, &reqs.back()));
    }
  for (int j = 0; j < L; ++j)
    for (int b = 0; b < N; ++b) {
      const int d = b * L + j;
      const std::int64_t n = send_rows[d];
      if (n == 0) continue;
      if (j == local_) {  // our own rows for (b, local_): a copy, no message
        std::memcpy(stage + stage_off[b * L + j] * w, send + send_off[d] * w, static_cast<std::size_t>(n) * w);
        continue;
      }
      reqs.emplace_back();
      mpiCheck(MPI_Isend(send + send_off[d] * w, to_int(n, "row count"), row.type, j, b, intra_, &reqs.back()));
    }
  wait_all(int(reqs.size()), reqs.data());

  // Phase 2 receives node b's L sources back to back: straight into recv when they are
  // back to back there too, else into a second pool block first.
  bool gapless = true;
  for (int b = 0; b < N; ++b)
    for (int i = 0; i + 1 < L; ++i)
      gapless = gapless && recv_off[b * L + i + 1] == recv_off[b * L + i] + recv_rows[b * L + i];
  std::vector<std::int64_t> p2_off(N, 0);
  for (int b = 0; b < N; ++b) p2_off[b] = gapless ? recv_off[b * L] : (b ? p2_off[b - 1] + p2_recv[b - 1] : 0);
  memory::Pool<Kokkos::HostSpace>::Block unpack;
  if (!gapless) unpack = pool_.acquire(std::size_t(p2_off[N - 1] + p2_recv[N - 1]) * w);
  std::byte* const landing = gapless ? recv : unpack.data<std::byte>();
  std::vector<int> sc, sd, rc, rd;
  counts_displs(p2_send, contiguous(p2_send), sc, sd);
  counts_displs(p2_recv, p2_off, rc, rd);
  alltoallv(stage, sc.data(), sd.data(), row.type, landing, rc.data(), rd.data(), row.type, inter_);
  if (gapless) return;
  std::int64_t from = 0;
  for (int s = 0; s < N * L; ++s) {
    std::memcpy(recv + recv_off[s] * w, landing + from * w, static_cast<std::size_t>(recv_rows[s]) * w);
    from += recv_rows[s];
  }
}

}  // namespace furnace::comm
