#include "comm/groups.hpp"

#include "comm/mpi_check.hpp"

namespace furnace::comm {

namespace {
bool g_thread_multiple = false;
}
void set_thread_multiple(bool granted) { g_thread_multiple = granted; }
bool thread_multiple() { return g_thread_multiple; }

std::string check_layout(int world, int ep, int experts, int global_batch) {
  const auto s = [](auto v) { return std::to_string(v); };
  if (ep < 1) return "parallel.ep = " + s(ep) + " must be >= 1";
  if (world % ep != 0)
    return "parallel.ep = " + s(ep) + " does not divide the " + s(world) +
           " MPI ranks; launch a multiple of " + s(ep) + " ranks or change parallel.ep";
  if (experts > 0 && experts % ep != 0)
    return "moe.experts = " + s(experts) + " is not divisible by parallel.ep = " + s(ep) +
           "; choose ep among the divisors of the expert count";
  if (experts == 0 && ep > 1)
    return "parallel.ep = " + s(ep) + " needs an MoE model (moe.experts > 0)";
  const int dp = world / ep;
  if (global_batch % world != 0)
    return "train.batch_size = " + s(global_batch) + " does not divide over " + s(world) +
           " ranks (dp " + s(dp) + " x ep " + s(ep) + "); use a multiple of " + s(world);
  return "";
}

Groups::Groups(MPI_Comm parent, int ep, int ranks_per_node) : ep_(ep) {
  mpiCheck(MPI_Comm_dup(parent, &world_));
  mpiCheck(MPI_Comm_rank(world_, &rank_));
  mpiCheck(MPI_Comm_size(world_, &size_));
  mpiCheck(MPI_Comm_split(world_, rank_ / ep_, rank_ % ep_, &ep_comm_));
  mpiCheck(MPI_Comm_split(world_, rank_ % ep_, rank_ / ep_, &dp_comm_));
  if (ranks_per_node > 0)
    mpiCheck(MPI_Comm_split(world_, rank_ / ranks_per_node, rank_, &node_comm_));
  else
    mpiCheck(MPI_Comm_split_type(world_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm_));
  mpiCheck(MPI_Comm_rank(node_comm_, &node_rank_));
  mpiCheck(MPI_Comm_size(node_comm_, &node_size_));
}

Groups::~Groups() {
  for (MPI_Comm* c : {&node_comm_, &dp_comm_, &ep_comm_, &world_})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

std::string Groups::describe() const {
  return "world " + std::to_string(size_) + " = dp " + std::to_string(dp()) + " x ep " +
         std::to_string(ep_) + ", " + std::to_string(node_size_) + " ranks/node";
}

}  // namespace furnace::comm
