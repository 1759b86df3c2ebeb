// Token + position embedding.
#pragma once
#include "kernels/views.hpp"

namespace furnace::kernels {

// tokens [n] with n = B * seq; out [n, d] = wte[tokens[i]] + wpe[i % seq].
template <class T>
void embedding_forward(View1<const index_t> tokens, int seq, View2<const T> wte,
                       View2<const T> wpe, View2<T> out);
// dwte += scatter of dout by token, dwpe += sum over the batch; deterministic (each
// thread owns whole columns, rows are summed in index order).
template <class T>
void embedding_backward(View1<const index_t> tokens, int seq, View2<const T> dout, View2<T> dwte,
                        View2<T> dwpe);

}  // namespace furnace::kernels
