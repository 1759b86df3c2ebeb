// AdamW (decoupled weight decay) and the reductions the optimizer needs.
#pragma once
#include "kernels/views.hpp"

namespace furnace::kernels {

struct AdamWParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.0;
  long step = 1;  // 1-based, for bias correction
};

// p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), m/v updated in place (PyTorch AdamW).
template <class T>
void adamw_update(View1<T> params, View1<const T> grads, View1<T> m, View1<T> v,
                  const AdamWParams& hp);

// sum of squares in double (grad norm), deterministic for a given backend.
template <class T>
double sum_squares(View1<const T> x);
// x *= s
template <class T>
void scale(View1<T> x, T s);

}  // namespace furnace::kernels
