// Elementwise activations, forward and backward (backward accumulates: dx +=).
#pragma once
#include "kernels/views.hpp"

namespace furnace::kernels {

// GELU, tanh approximation (PyTorch's gelu(approximate="tanh")), on any shape via flat().
template <class T>
void gelu_forward(View1<const T> x, View1<T> y);
template <class T>
void gelu_backward(View1<const T> x, View1<const T> dy, View1<T> dx);

// SwiGLU: x [n, 2h] holds gate | up halves; y [n, h] = silu(gate) * up.
template <class T>
void swiglu_forward(View2<const T> x, View2<T> y);
template <class T>
void swiglu_backward(View2<const T> x, View2<const T> dy, View2<T> dx);

}  // namespace furnace::kernels
