// The process groups of the MoDa layout (world = dp x ep), built once and freed by
// their owner. Rank r has ep_rank = r % ep and dp_rank = r / ep:
//   ep group   ranks with the same dp_rank: together they hold all E experts
//   dp group   ranks with the same ep_rank: replicas of the same experts
//              (also the expert-data-parallel group of those experts)
//   node       ranks sharing memory (MPI_COMM_TYPE_SHARED), or blocks of
//              ranks_per_node consecutive ranks when that is given
#pragma once
#include <mpi.h>

#include <string>

namespace furnace::comm {

// Where one rank sits in the MoDa layout, as plain numbers: everything the trainer's
// sizes depend on. Groups gives the running job's; the planner (furnace plan) makes one
// for a job that is not running, so both size the rank with the same code.
struct Layout {
  int world = 1, rank = 0, ep = 1;
  int ranks_per_node = 1;  // ranks sharing a node with this one
  int dp() const { return world / ep; }
  int ep_rank() const { return rank % ep; }
  int dp_rank() const { return rank / ep; }
};

class Groups {
 public:
  // Collective over `parent`. Returns the layout problem in `error` (every rank
  // computes the same verdict; nothing is created then) instead of hanging.
  Groups(MPI_Comm parent, int ep, int ranks_per_node);
  ~Groups();
  Groups(const Groups&) = delete;
  Groups& operator=(const Groups&) = delete;

  MPI_Comm world() const { return world_; }
  MPI_Comm ep_comm() const { return ep_comm_; }
  MPI_Comm dp_comm() const { return dp_comm_; }
  MPI_Comm node_comm() const { return node_comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int ep() const { return ep_; }
  int dp() const { return size_ / ep_; }
  int ep_rank() const { return rank_ % ep_; }
  int dp_rank() const { return rank_ / ep_; }
  int node_rank() const { return node_rank_; }
  int node_size() const { return node_size_; }
  Layout layout() const { return {.world = size_, .rank = rank_, .ep = ep_, .ranks_per_node = node_size_}; }

  // "world 4 = dp 2 x ep 2, 2 ranks/node"
  std::string describe() const;

 private:
  MPI_Comm world_ = MPI_COMM_NULL, ep_comm_ = MPI_COMM_NULL, dp_comm_ = MPI_COMM_NULL,
           node_comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, ep_ = 1, node_rank_ = 0, node_size_ = 1;
};

// Whether MPI_Init_thread granted MPI_THREAD_MULTIPLE (background checkpoints need it).
void set_thread_multiple(bool granted);
bool thread_multiple();

// Checks that world % ep == 0 and experts % ep == 0 and that the global batch
// divides over dp; returns "" or the one-line problem (same on every rank).
std::string check_layout(int world, int ep, int experts, int global_batch);

}  // namespace furnace::comm
