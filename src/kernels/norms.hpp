// LayerNorm and RMSNorm over the last dimension, forward and backward.
// Backward kernels ACCUMULATE (+=) into every gradient they write (llm.c convention):
// the caller zeroes gradient buffers once per step.
#pragma once
#include "kernels/views.hpp"

namespace furnace::kernels {

// x [n, d] -> y [n, d];  y = (x - mean) * rstd * w + b; mean, rstd [n] kept for backward.
template <class T>
void layernorm_forward(View2<const T> x, View1<const T> w, View1<const T> b, T eps, View2<T> y,
                       View1<T> mean, View1<T> rstd);
// dx [n, d] +=, dw [d] +=, db [d] += (dw/db reduced deterministically over rows).
template <class T>
void layernorm_backward(View2<const T> dy, View2<const T> x, View1<const T> w,
                        View1<const T> mean, View1<const T> rstd, View2<T> dx, View1<T> dw,
                        View1<T> db);

// x [n, d] -> y [n, d];  y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps) [n].
template <class T>
void rmsnorm_forward(View2<const T> x, View1<const T> w, T eps, View2<T> y, View1<T> rstd);
template <class T>
void rmsnorm_backward(View2<const T> dy, View2<const T> x, View1<const T> w, View1<const T> rstd,
                      View2<T> dx, View1<T> dw);

}  // namespace furnace::kernels
