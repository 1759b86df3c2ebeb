// Checks shared by the row-wise and elementwise kernel tests (norms, activations,
// softmax, embedding, optimizer): elementwise comparison with a reference, and the
// accumulate-into-gradients contract of every backward kernel.
#pragma once
#include <functional>
#include <vector>

#include "testing.hpp"

namespace furnace::testing {

// |got[i] - want[i]| <= atol + rtol * |want[i]| for all i; reports at most 5 misses.
template <class T, class U>
inline void expect_all_near(const Tensor<T>& got, const std::vector<U>& want, double atol,
                            double rtol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int misses = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w)) && misses++ < 5)
      ADD_FAILURE() << what << "[" << i << "] = " << g << ", want " << w;
  }
  EXPECT_EQ(misses, 0) << what << ": mismatching entries";
}

template <class U, class T>
inline Tensor<U> cast(const Tensor<T>& t) {
  Tensor<U> out(t.size());
  for (std::size_t i = 0; i < t.size(); ++i) out[i] = U(t[i]);
  return out;
}

// Backward kernels add into their gradient buffers: from zero, one call gives G and a
// second call must give 2G (a kernel that assigns would give G again). Not bit-exact:
// a scatter such as dwte adds each contribution in turn, (G + a) + b != 2G exactly.
inline void expect_accumulates(const std::vector<Tensor<double>*>& grads,
                               const std::function<void()>& backward) {
  for (auto* g : grads) std::fill(g->data.begin(), g->data.end(), 0.0);
  backward();
  std::vector<std::vector<double>> once;
  for (auto* g : grads) once.push_back(g->data);
  backward();
  for (std::size_t k = 0; k < grads.size(); ++k) {
    std::vector<double> twice(once[k]);
    for (auto& v : twice) v *= 2;
    expect_all_near(*grads[k], twice, 1e-12, 1e-12, "second backward call");
  }
}

}  // namespace furnace::testing
