#include "moe/dispatch.hpp"

#include <numeric>
#include <stdexcept>
#include <string>

#include "kernels/routing.hpp"

namespace furnace::moe {

namespace k = furnace::kernels;

Dispatcher::Dispatcher(comm::RowExchange* exchange, int ep_size, int local_experts, int d_model,
                       std::int64_t max_recv_rows, memory::Arena& comm_arena)
    : exchange_(exchange), ep_(ep_size), el_(local_experts), d_(d_model), max_recv_(max_recv_rows) {
  if (exchange && exchange->ep_size() != ep_size)
    throw std::invalid_argument("Dispatcher: the RowExchange spans " + std::to_string(exchange->ep_size()) +
                                " ranks, the layer " + std::to_string(ep_size));
  to_expert_order_ = comm_arena.view1<k::index_t>(max_recv_);
  to_source_order_ = comm_arena.view1<k::index_t>(max_recv_);
  staging_ = comm_arena.view2<float>(max_recv_, d_model);
}

const std::vector<std::int64_t>& Dispatcher::plan(const std::vector<std::int64_t>& off) {
  // counts[p * el + j]: copies this rank sends to local expert j of rank p.
  std::vector<std::int64_t> counts(std::size_t(ep_) * el_);
  for (std::size_t e = 0; e < counts.size(); ++e) counts[e] = off[e + 1] - off[e];
  if (!exchange_) throw std::logic_error("Dispatcher::plan: no RowExchange (a Measure build cannot run)");
  const auto recv = exchange_->exchange_counts(counts, el_);  // [src * el + j]
  send_rows_.assign(ep_, 0);
  recv_rows_.assign(ep_, 0);
  for (int p = 0; p < ep_; ++p)
    for (int j = 0; j < el_; ++j) {
      send_rows_[p] += counts[p * el_ + j];
      recv_rows_[p] += recv[p * el_ + j];
    }
  const std::int64_t recv_total = std::accumulate(recv_rows_.begin(), recv_rows_.end(), std::int64_t(0));
  if (recv_total > max_recv_)
    throw std::logic_error("Dispatcher::plan: the ep group sends " + std::to_string(recv_total) +
                           " rows to this rank, more than the " + std::to_string(max_recv_) +
                           " its buffers were sized for");
  // Row r of the expert-major buffer comes from row to_expert_order[r] of the
  // source-major buffer; to_source_order is the inverse permutation.
  std::vector<std::int64_t> src_start(std::size_t(ep_) * el_);
  std::int64_t pos = 0;
  for (int p = 0; p < ep_; ++p)
    for (int j = 0; j < el_; ++j) {
      src_start[p * el_ + j] = pos;
      pos += recv[p * el_ + j];
    }
  auto fwd = Kokkos::create_mirror_view(to_expert_order_);
  auto inv = Kokkos::create_mirror_view(to_source_order_);
  expert_offsets_.assign(el_ + 1, 0);
  std::int64_t r = 0;
  for (int j = 0; j < el_; ++j) {
    for (int p = 0; p < ep_; ++p)
      for (std::int64_t i = 0; i < recv[p * el_ + j]; ++i, ++r) {
        fwd(r) = k::index_t(src_start[p * el_ + j] + i);
        inv(fwd(r)) = k::index_t(r);
      }
    expert_offsets_[j + 1] = r;
  }
  Kokkos::deep_copy(to_expert_order_, fwd);
  Kokkos::deep_copy(to_source_order_, inv);
  return expert_offsets_;
}

void Dispatcher::to_experts(k::View2<const float> xp, k::View2<float> xe) {
  const std::int64_t R = recv_rows_total();
  auto staged = k::View2<float>(staging_.data(), R, d_);
  exchange_->exchange(xp.data(), send_rows_, staged.data(), recv_rows_);
  k::permute_forward<float>(staged, k::View1<const k::index_t>(to_expert_order_.data(), R), xe);
}

void Dispatcher::from_experts(k::View2<const float> ye, k::View2<float> yp) {
  const std::int64_t R = recv_rows_total();
  auto staged = k::View2<float>(staging_.data(), R, d_);
  k::permute_forward<float>(ye, k::View1<const k::index_t>(to_source_order_.data(), R), staged);
  exchange_->exchange(staged.data(), recv_rows_, yp.data(), send_rows_);
}

}  // namespace furnace::moe
