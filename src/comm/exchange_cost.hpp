// The alpha-beta cost of one token exchange, flat or hierarchical, and the choice that
// comm.alltoall = "auto" makes with it. `furnace plan` predicts the all-to-all with
// these same functions (from a machine file's links), and the trainer chooses with them
// (from links it measures at start), so the choice and the prediction cannot disagree.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <string>

#include "comm/alltoall.hpp"
#include "comm/groups.hpp"

namespace furnace::comm {

// One network tier: a message of b bytes takes latency + b / bandwidth.
struct Link {
  double latency_s = 0;
  double bandwidth = 0;  // bytes/s (intra: per rank; inter: per node, shared by its ranks)
  // No bytes cost no bandwidth (also for an unmeasured link, bandwidth 0: one rank).
  double time(double bytes, double messages) const {
    return messages * latency_s + (bytes > 0 ? bytes / bandwidth : 0.0);
  }
};

struct ExchangeShape {
  int ep = 1;              // ranks of the ep group
  int ranks_per_node = 1;  // of them on one node (L); ep / L nodes (N)
  double bytes = 0;        // the busiest rank's bytes per exchange (sent, and received)
};

// Flat: ep - 1 messages; the inter-node share leaves over the node's link, which its L
// ranks share; the two tiers run concurrently (the slower one counts).
double flat_exchange_time(const ExchangeShape& s, const Link& intra, const Link& inter);
// Hierarchical: an intra-node exchange to the node's ranks, then one message per remote
// node carrying L ranks' rows, plus the staging copy in and out (at copy_bandwidth,
// bytes/s). Only meaningful for N > 1 and L > 1 (otherwise it runs flat).
double hierarchical_exchange_time(const ExchangeShape& s, const Link& intra, const Link& inter,
                                  double copy_bandwidth);

struct ExchangeChoice {
  RowExchange::Algorithm algorithm = RowExchange::Algorithm::Flat;
  double flat_s = 0, hierarchical_s = 0;  // per exchange; hierarchical_s = 0 where it cannot run
  std::string reason;                     // one line: what was compared (for the start-up log)
};
// The faster of the two by the model; flat where hierarchical cannot run (N or L is 1).
ExchangeChoice choose_exchange(const ExchangeShape& s, const Link& intra, const Link& inter, double copy_bandwidth);

// The links as this job sees them, measured by ping-pong between world rank 0 and the
// nearest rank on its node (intra) and the first rank on another node (inter), and a
// memcpy rate for the staging. Collective over groups.world(); a tier with no pair
// (one rank per node, one node) copies the other. Takes a few milliseconds.
// Half the fastest round trip of `bytes` between ranks a and b of comm over `reps`
// trips (the minimum: a descheduled rank inflates single trips), on every rank.
// Collective over comm.
double ping_pong(MPI_Comm comm, int a, int b, std::size_t bytes, int reps);

// The median of `reps` simultaneous exchanges (MPI_Sendrecv) of `bytes` each way
// between ranks a and b of comm, on every rank: the rate a step typically sees (the
// fastest came out 15-30 % above what the emulated cluster's collectives moved). With
// more ranks than cores it reflects the scheduler's time slices, 10-100x below the
// link (measured: 0.02-0.07 GB/s over TCP at 2 ranks per core). Collective over comm.
double swap_time(MPI_Comm comm, int a, int b, std::size_t bytes, int reps);

// alpha-beta of the pair (a, b) of comm: alpha from an 8-byte ping-pong; beta from `big`
// bytes moved both ways at once (swap_time) less alpha, as an all-to-all or an
// allreduce moves them: a ping-pong loads one direction at a time, and over TCP (the
// emulated cluster) the per-rank rate with both directions busy was measured 25-35%
// lower. Never more than twice the plain rate (a noisy alpha near the large message's
// time must not divide by ~0). Collective over comm.
Link measure_pair(MPI_Comm comm, int a, int b, std::size_t big, int small_reps, int big_reps);

struct MeasuredLinks {
  Link intra, inter;
  double copy_bandwidth = 0;
  bool has_intra = false, has_inter = false;
};
// `big`, `small_reps`, `big_reps` as in measure_pair (bench calibrate measures longer).
MeasuredLinks measure_links(const Groups& groups, std::size_t big = std::size_t(1) << 20, int small_reps = 50,
                            int big_reps = 5);

}  // namespace furnace::comm
