// MoE routing kernels: top-k selection, capacity-limited slot assignment, and the
// permute (group token copies by expert) / unpermute (weighted combine) pair,
// plus the router's auxiliary losses. Experts are numbered so that experts owned by
// one rank are contiguous, so "grouped by expert" is also "grouped by destination rank".
#pragma once
#include "kernels/views.hpp"

namespace furnace::kernels {

// probs [n, E] -> idx [n, k] (requires k <= E; largest first, ties to the lower expert id),
// weight [n, k] = probs[i, idx[i, j]].
template <class T>
void topk_forward(View2<const T> probs, int k, View2<index_t> idx, View2<T> weight);
// dprobs [n, E] += scatter of dweight [n, k] by idx.
template <class T>
void topk_backward(View2<const index_t> idx, View2<const T> dweight, View2<T> dprobs);

// Assign each token copy (i, j) a row of the expert-grouped buffer.
// Priority: all first choices (j = 0) in token order, then j = 1, ... (GShard).
// An expert takes at most `capacity` copies (capacity < 0: unlimited); later copies
// are dropped (slot = -1). Outputs: counts [E] kept copies per expert,
// offsets [E+1] exclusive prefix sum of counts, slot [n, k] row in the grouped
// buffer or -1, src [rows] token index of each grouped row (rows = offsets[E]).
// Also demand [E]: copies routed to each expert before the capacity cut.
// src must be sized for the worst case, n * k rows. A copy whose expert id is
// outside [0, E) gets slot -1.
void assign_slots(View2<const index_t> idx, int experts, int capacity, View1<index_t> demand,
                  View1<index_t> counts, View1<index_t> offsets, View2<index_t> slot,
                  View1<index_t> src);

// xp [rows, d]: row r = x[src[r]].
template <class T>
void permute_forward(View2<const T> x, View1<const index_t> src, View2<T> xp);
// dx [n, d] += sum over kept copies j of dxp[slot[i, j]] (deterministic, per token).
template <class T>
void permute_backward(View2<const T> dxp, View2<const index_t> slot, View2<T> dx);

// y [n, d] += sum over kept j of weight[i, j] * yp[slot[i, j]].
template <class T>
void unpermute_forward(View2<const T> yp, View2<const index_t> slot, View2<const T> weight,
                       View2<T> y);
// dyp [rows, d] += weight * dy rows; dweight [n, k] += dot(dy[i], yp[slot[i, j]]).
template <class T>
void unpermute_backward(View2<const T> dy, View2<const T> yp, View2<const index_t> slot,
                        View2<const T> weight, View2<T> dyp, View2<T> dweight);

// GShard / Switch load-balancing loss: aux = E * sum_e f_e * P_e with
// f_e = demand[e] / (tokens_total * k) and P_e = prob_sum[e] / tokens_total, where
// tokens_total is n in one process, or the global token count with demand and
// prob_sum reduced over the ranks that share the router decision.
// prob_sum [E] = sum_i probs[i, e] is computed by router_prob_sum.
template <class T>
void router_prob_sum(View2<const T> probs, View1<T> prob_sum);
// dprobs [n, E] += coef * E * f_e / tokens_total  (f_e treated as a constant, as in GShard).
template <class T>
void load_balance_backward(View1<const index_t> demand, int k, double tokens_total, T coef,
                           View2<T> dprobs);

// Router z-loss (ST-MoE): z = mean_i logsumexp(logits_i)^2; returns the sum over rows
// of logsumexp^2 (the caller divides by the token count).
template <class T>
double z_loss_sum(View2<const T> logits);
// dlogits [n, E] += coef * 2 * lse_i * softmax(logits_i) / tokens_total.
template <class T>
void z_loss_backward(View2<const T> logits, T coef, double tokens_total, View2<T> dlogits);

}  // namespace furnace::kernels
