// Row-wise softmax and cross-entropy from logits.
#pragma once
#include "kernels/views.hpp"

namespace furnace::kernels {

// x [n, c] -> y [n, c], softmax over each row (max-subtracted).
template <class T>
void softmax_forward(View2<const T> x, View2<T> y);
// dx [n, c] += y * (dy - sum(dy * y)).
template <class T>
void softmax_backward(View2<const T> y, View2<const T> dy, View2<T> dx);

// logits [n, V], targets [n] -> losses [n] = logsumexp(logits_i) - logits_i[target_i].
// A target outside [0, V) is a caller bug (datasets are validated on load); it is
// reported by returning the number of such rows (their loss is set to 0).
template <class T>
int cross_entropy_forward(View2<const T> logits, View1<const index_t> targets, View1<T> losses);
// dlogits [n, V] += scale * (softmax(logits) - onehot(target)); scale = dLoss/dloss_i
// (1/N for a mean over N tokens).
template <class T>
void cross_entropy_backward(View2<const T> logits, View1<const index_t> targets, T scale,
                            View2<T> dlogits);

}  // namespace furnace::kernels
