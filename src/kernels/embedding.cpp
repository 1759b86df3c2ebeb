// Token + position embedding. The forward is one team per output row; the backward
// gives each thread whole columns (for_column_blocks) so that repeated tokens and
// positions are summed in row order without atomics.
#include "kernels/embedding.hpp"

#include "kernels/rowwise.hpp"

namespace furnace::kernels {
namespace {

// Token ids are validated when a dataset is loaded; a bad id reaching here must still
// not read or write outside wte, so its row gets no token embedding and no gradient.
KOKKOS_INLINE_FUNCTION bool valid_token(index_t tok, std::size_t vocab) {
  return tok >= 0 && std::size_t(tok) < vocab;
}

}  // namespace

template <class T>
void embedding_forward(View1<const index_t> tokens, int seq, View2<const T> wte, View2<const T> wpe,
                       View2<T> out) {
  const int d = int(out.extent(1));
  const std::size_t vocab = wte.extent(0);
  Kokkos::parallel_for(
      "kernels::embedding_forward", row_teams(out.extent(0)), KOKKOS_LAMBDA(const Member& t) {
        const int i = t.league_rank(), pos = i % seq;
        const index_t tok = tokens(i);
        if (valid_token(tok, vocab))
          team_for(t, d, [&](int j) { out(i, j) = wte(tok, j) + wpe(pos, j); });
        else
          team_for(t, d, [&](int j) { out(i, j) = wpe(pos, j); });
      });
}

template <class T>
void embedding_backward(View1<const index_t> tokens, int seq, View2<const T> dout, View2<T> dwte,
                        View2<T> dwpe) {
  const int n = int(dout.extent(0));
  const std::size_t vocab = dwte.extent(0);
  for_column_blocks(
      "kernels::embedding_backward", int(dout.extent(1)), KOKKOS_LAMBDA(int j0, int width) {
        for (int i = 0; i < n; ++i) {
          const index_t tok = tokens(i);
          if (!valid_token(tok, vocab)) continue;
          for (int k = 0; k < width; ++k) dwte(tok, j0 + k) += dout(i, j0 + k);
        }
        for (int p = 0; p < seq; ++p) {
          acc_t s[kColumnBlock] = {};
          for (int i = p; i < n; i += seq)
            for (int k = 0; k < width; ++k) s[k] += acc_t(dout(i, j0 + k));
          for (int k = 0; k < width; ++k) dwpe(p, j0 + k) += T(s[k]);
        }
      });
}

#define FURNACE_EMBEDDING(T)                                                                    \
  template void embedding_forward<T>(View1<const index_t>, int, View2<const T>, View2<const T>, \
                                     View2<T>);                                                 \
  template void embedding_backward<T>(View1<const index_t>, int, View2<const T>, View2<T>,      \
                                      View2<T>);
FURNACE_EMBEDDING(float)
FURNACE_EMBEDDING(double)

}  // namespace furnace::kernels
