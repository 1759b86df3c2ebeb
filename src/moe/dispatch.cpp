#include "moe/dispatch.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/convert.hpp"
#include "kernels/routing.hpp"

namespace furnace::moe {

namespace k = furnace::kernels;

namespace {

std::int64_t sum(const std::vector<std::int64_t>& v, std::size_t first, std::size_t n) {
  return std::accumulate(v.begin() + first, v.begin() + first + n, std::int64_t(0));
}

// Exclusive prefix sums: where each entry starts when they are laid out back to back.
std::vector<std::int64_t> starts(const std::vector<std::int64_t>& rows) {
  std::vector<std::int64_t> s(rows.size(), 0);
  for (std::size_t i = 1; i < rows.size(); ++i) s[i] = s[i - 1] + rows[i - 1];
  return s;
}

}  // namespace

Dispatcher::Dispatcher(comm::RowExchange* exchange, int ep_size, int local_experts, int d_model,
                       std::int64_t max_recv_rows, memory::Arena& comm_arena, bool rounds,
                       kernels::Precision payload, std::int64_t max_send_rows)
    : exchange_(exchange), ep_(ep_size), el_(local_experts), d_(d_model), max_recv_(max_recv_rows),
      rounds_allowed_(rounds), payload_(payload) {
  if (exchange && exchange->ep_size() != ep_size)
    throw std::invalid_argument("Dispatcher: the RowExchange spans " + std::to_string(exchange->ep_size()) +
                                " ranks, the layer " + std::to_string(ep_size));
  if (rounds && max_recv_rows < 1)
    throw std::invalid_argument("Dispatcher: rounds need a buffer of at least one row");
  to_expert_order_ = comm_arena.view1<k::index_t>(max_recv_);
  to_source_order_ = comm_arena.view1<k::index_t>(max_recv_);
  if (payload_ == k::Precision::FP32) {
    staging_ = comm_arena.view2<float>(max_recv_, d_model);
  } else {
    staging16_ = comm_arena.view2<std::uint16_t>(max_recv_, d_model);
    send16_ = comm_arena.view2<std::uint16_t>(max_send_rows, d_model);
  }
}

int Dispatcher::plan(const std::vector<std::int64_t>& off) {
  // sent_[p * el + j]: copies this rank sends to local expert j of rank p.
  sent_.assign(std::size_t(ep_) * el_, 0);
  for (std::size_t e = 0; e < sent_.size(); ++e) sent_[e] = off[e + 1] - off[e];
  if (!exchange_) throw std::logic_error("Dispatcher::plan: no RowExchange (a Measure build cannot run)");
  received_ = exchange_->exchange_counts(sent_, el_);  // [src * el + j]
  std::vector<std::int64_t> to(ep_), from(ep_);
  for (int p = 0; p < ep_; ++p) {
    to[p] = sum(sent_, std::size_t(p) * el_, el_);
    from[p] = sum(received_, std::size_t(p) * el_, el_);
  }
  block_start_ = starts(to);
  pos_of_source_ = starts(from);
  const std::int64_t total = std::accumulate(from.begin(), from.end(), std::int64_t(0));
  round_ = -1;
  peak_round_rows_ = 0;
  pos_at_dest_.assign(ep_, 0);  // one round sends whole blocks, wherever they stand
  if (!rounds_allowed_) {
    if (total > max_recv_)
      throw std::logic_error("Dispatcher::plan: the ep group sends " + std::to_string(total) +
                             " rows to this rank, more than the " + std::to_string(max_recv_) +
                             " its buffers were sized for");
    rounds_ = 1;
    return rounds_;
  }
  // Every rank needs ceil(total / B) rounds of its own; all run the most any needs.
  const std::int64_t mine = std::max<std::int64_t>(1, (total + max_recv_ - 1) / max_recv_);
  rounds_ = int(exchange_->max_over_group(mine));
  // A sender's part of round t depends on where its rows stand in the receiver's line,
  // which only the receiver knows: one count per peer back. Not needed for one round
  // (every rank decides that from the same agreed number).
  if (rounds_ > 1) pos_at_dest_ = exchange_->exchange_counts(pos_of_source_, 1);
  return rounds_;
}

const std::vector<std::int64_t>& Dispatcher::round(int t) {
  if (t < 0 || t >= rounds_) throw std::logic_error("Dispatcher::round: no round " + std::to_string(t));
  if (t == round_) return expert_offsets_;
  round_ = t;
  // The round's window of a line; with one round, all of it.
  const std::int64_t lo_w = rounds_ == 1 ? 0 : t * max_recv_;
  const std::int64_t hi_w = rounds_ == 1 ? std::numeric_limits<std::int64_t>::max() : lo_w + max_recv_;
  // [lo, hi) of a block of `rows` rows standing at `pos` of its line.
  const auto part = [&](std::int64_t pos, std::int64_t rows) {
    return std::pair{std::clamp(lo_w - pos, std::int64_t(0), rows), std::clamp(hi_w - pos, std::int64_t(0), rows)};
  };
  send_rows_.assign(ep_, 0);
  send_off_.assign(ep_, 0);
  recv_rows_.assign(ep_, 0);
  std::vector<std::int64_t> recv_lo(ep_);
  for (int p = 0; p < ep_; ++p) {
    const auto [slo, shi] = part(pos_at_dest_[p], sum(sent_, std::size_t(p) * el_, el_));
    send_rows_[p] = shi - slo;
    send_off_[p] = block_start_[p] + slo;
    const auto [rlo, rhi] = part(pos_of_source_[p], sum(received_, std::size_t(p) * el_, el_));
    recv_rows_[p] = rhi - rlo;
    recv_lo[p] = rlo;
  }
  recv_off_ = starts(recv_rows_);
  // Row r of the expert-major buffer comes from row to_expert_order[r] of the
  // source-major staging; to_source_order is the inverse permutation. Source p's block
  // holds its rows for local expert 0, 1, ...; the round has rows [recv_lo, +recv_rows).
  auto fwd = Kokkos::create_mirror_view(to_expert_order_);
  auto inv = Kokkos::create_mirror_view(to_source_order_);
  std::vector<std::int64_t> seg(ep_, 0);  // start of expert j's rows in source p's block
  expert_offsets_.assign(el_ + 1, 0);
  std::int64_t r = 0;
  for (int j = 0; j < el_; ++j) {
    for (int p = 0; p < ep_; ++p) {
      const std::int64_t first = std::max(seg[p], recv_lo[p]);
      const std::int64_t last = std::min(seg[p] + received_[p * el_ + j], recv_lo[p] + recv_rows_[p]);
      for (std::int64_t b = first; b < last; ++b, ++r) {
        fwd(r) = k::index_t(recv_off_[p] + b - recv_lo[p]);
        inv(fwd(r)) = k::index_t(r);
      }
      seg[p] += received_[p * el_ + j];
    }
    expert_offsets_[j + 1] = r;
  }
  Kokkos::deep_copy(to_expert_order_, fwd);
  Kokkos::deep_copy(to_source_order_, inv);
  peak_round_rows_ = std::max(peak_round_rows_, r);
  return expert_offsets_;
}

void Dispatcher::send_side_to_16bit(k::View2<const float> xp) {
  for (int p = 0; p < ep_; ++p) {
    const auto rows = std::pair{send_off_[p], send_off_[p] + send_rows_[p]};
    k::rows_to_16bit(payload_, Kokkos::subview(xp, rows, Kokkos::ALL), {}, Kokkos::subview(send16_, rows, Kokkos::ALL));
  }
}

void Dispatcher::send_side_from_16bit(k::View2<float> yp) {
  for (int p = 0; p < ep_; ++p) {
    const auto rows = std::pair{send_off_[p], send_off_[p] + send_rows_[p]};
    k::rows_from_16bit(payload_, Kokkos::subview(send16_, rows, Kokkos::ALL), {}, Kokkos::subview(yp, rows, Kokkos::ALL));
  }
}

void Dispatcher::to_experts(k::View2<const float> xp, k::View2<float> xe) {
  const std::int64_t R = recv_rows_total();
  if (payload_ != k::Precision::FP32) {
    send_side_to_16bit(xp);
    auto staged = k::View2<std::uint16_t>(staging16_.data(), R, d_);
    exchange_->exchange(send16_.data(), send_rows_, send_off_, staged.data(), recv_rows_, recv_off_);
    k::rows_from_16bit(payload_, staged, k::View1<const k::index_t>(to_expert_order_.data(), R), xe);
    return;
  }
  auto staged = k::View2<float>(staging_.data(), R, d_);
  exchange_->exchange(xp.data(), send_rows_, send_off_, staged.data(), recv_rows_, recv_off_);
  k::permute_forward<float>(staged, k::View1<const k::index_t>(to_expert_order_.data(), R), xe);
}

void Dispatcher::from_experts(k::View2<const float> ye, k::View2<float> yp) {
  const std::int64_t R = recv_rows_total();
  if (payload_ != k::Precision::FP32) {
    auto staged = k::View2<std::uint16_t>(staging16_.data(), R, d_);
    k::rows_to_16bit(payload_, ye, k::View1<const k::index_t>(to_source_order_.data(), R), staged);
    exchange_->exchange(staged.data(), recv_rows_, recv_off_, send16_.data(), send_rows_, send_off_);
    send_side_from_16bit(yp);
    return;
  }
  auto staged = k::View2<float>(staging_.data(), R, d_);
  k::permute_forward<float>(ye, k::View1<const k::index_t>(to_source_order_.data(), R), staged);
  exchange_->exchange(staged.data(), recv_rows_, recv_off_, yp.data(), send_rows_, send_off_);
}

}  // namespace furnace::moe
