// Softmax and cross-entropy against plain double loops, finite differences, huge
// logits, out-of-range targets, and the accumulate-into-gradients contract.
#include "kernel_checks.hpp"
#include "kernels/softmax.hpp"

namespace furnace::testing {
namespace {

using kernels::index_t;

// Row-wise softmax of x [n, c] and logsumexp per row, in long double from scratch.
std::vector<double> softmax_ref(const std::vector<double>& x, int n, int c,
                                std::vector<double>* lse = nullptr) {
  std::vector<double> y(x.size());
  for (int i = 0; i < n; ++i) {
    long double m = x[i * c], s = 0;
    for (int j = 0; j < c; ++j) m = std::max<long double>(m, x[i * c + j]);
    for (int j = 0; j < c; ++j) s += std::exp((long double)x[i * c + j] - m);
    for (int j = 0; j < c; ++j) y[i * c + j] = double(std::exp(x[i * c + j] - m) / s);
    if (lse) lse->push_back(double(m + std::log(s)));
  }
  return y;
}

template <class T>
std::vector<double> as_double(const Tensor<T>& t) {
  return std::vector<double>(t.data.begin(), t.data.end());
}

// Random logits at scale `scale`, with row 0 pushed to +-1000 where it is wide enough.
template <class T>
Tensor<T> logits(int n, int c, std::uint64_t seed, double scale = 2.0) {
  Tensor<T> x = random_tensor<T>(n * c, seed, scale);
  if (c >= 3) x[0] = 1000, x[1] = 999, x[2] = -1000;
  return x;
}

const int kShapes[][2] = {{1, 1}, {1, 5}, {3, 7}, {4, 300}};

TEST(Softmax, ForwardMatchesReferenceLoop) {
  for (auto [n, c] : kShapes) {
    Tensor<float> x = logits<float>(n, c, n + c), y(n * c);
    kernels::softmax_forward<float>(x.v2(n, c), y.v2(n, c));
    expect_all_near(y, softmax_ref(as_double(x), n, c), 1e-7, 1e-5, "softmax");
  }
}

TEST(Softmax, ForwardOfAllLargeLogitsIsFinite) {
  Tensor<float> x(4, 1000.0f), y(4);
  x[3] = 1001;
  kernels::softmax_forward<float>(x.v2(1, 4), y.v2(1, 4));
  expect_all_near(y, softmax_ref(as_double(x), 1, 4), 1e-7, 1e-5, "softmax");
}

TEST(Softmax, BackwardMatchesFiniteDifferences) {
  for (auto [n, c] : {std::pair{1, 1}, std::pair{1, 4}, std::pair{3, 6}}) {
    Tensor<double> x = random_tensor<double>(n * c, 3), y(n * c), dx(n * c);
    Tensor<double> R = random_tensor<double>(n * c, 4);
    kernels::softmax_forward<double>(x.v2(n, c), y.v2(n, c));
    kernels::softmax_backward<double>(y.v2(n, c), R.v2(n, c), dx.v2(n, c));
    auto loss = [&] {
      kernels::softmax_forward<double>(x.v2(n, c), y.v2(n, c));
      return dot(y, R);
    };
    expect_gradient_matches(x.data, dx.data, loss, "softmax dx");
  }
}

TEST(Softmax, BackwardAccumulates) {
  Tensor<double> x = random_tensor<double>(3 * 5, 5), y(15), dx(15),
                 R = random_tensor<double>(15, 6);
  kernels::softmax_forward<double>(x.v2(3, 5), y.v2(3, 5));
  expect_accumulates(
      {&dx}, [&] { kernels::softmax_backward<double>(y.v2(3, 5), R.v2(3, 5), dx.v2(3, 5)); });
}

Tensor<index_t> targets(int n, int c, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  Tensor<index_t> t(n);
  for (auto& v : t.data) v = index_t(gen() % c);
  return t;
}

TEST(CrossEntropy, ForwardMatchesReferenceLoop) {
  for (auto [n, c] : kShapes) {
    Tensor<float> x = logits<float>(n, c, 7 * n + c), loss(n);
    Tensor<index_t> t = targets(n, c, n);
    if (c >= 3) t[0] = 2;  // row 0: target at -1000, loss ~ 2000
    EXPECT_EQ(kernels::cross_entropy_forward<float>(x.v2(n, c), t.v1(), loss.v1()), 0);
    std::vector<double> lse, want;
    softmax_ref(as_double(x), n, c, &lse);
    for (int i = 0; i < n; ++i) want.push_back(lse[i] - x[i * c + t[i]]);
    expect_all_near(loss, want, 1e-5, 1e-6, "cross-entropy");
  }
}

TEST(CrossEntropy, BackwardMatchesFiniteDifferences) {
  for (auto [n, c] : {std::pair{1, 1}, std::pair{1, 4}, std::pair{4, 6}}) {
    const double scale = 0.37;
    Tensor<double> x = random_tensor<double>(n * c, 8, 2.0), loss(n), dx(n * c);
    Tensor<index_t> t = targets(n, c, 9);
    kernels::cross_entropy_backward<double>(x.v2(n, c), t.v1(), scale, dx.v2(n, c));
    auto total = [&] {
      kernels::cross_entropy_forward<double>(x.v2(n, c), t.v1(), loss.v1());
      double s = 0;
      for (double l : loss.data) s += scale * l;
      return s;
    };
    expect_gradient_matches(x.data, dx.data, total, "cross-entropy dlogits");
  }
}

TEST(CrossEntropy, BackwardOfLargeLogitsIsFinite) {
  Tensor<float> x = logits<float>(1, 4, 1), dx(4);
  Tensor<index_t> t(1, 2);  // the -1000 entry: p(target) = 0, gradient -1 there
  kernels::cross_entropy_backward<float>(x.v2(1, 4), t.v1(), 1.0f, dx.v2(1, 4));
  std::vector<double> want = softmax_ref(as_double(x), 1, 4);
  want[2] -= 1;
  expect_all_near(dx, want, 1e-6, 1e-5, "dlogits");
}

TEST(CrossEntropy, OutOfRangeTargetsAreCountedAndIgnored) {
  const int n = 4, c = 5;
  Tensor<float> x = random_tensor<float>(n * c, 10), loss(n, -7.0f), dx(n * c);
  Tensor<index_t> t(n);
  t[0] = -1, t[1] = 3, t[2] = c, t[3] = 1 << 30;
  EXPECT_EQ(kernels::cross_entropy_forward<float>(x.v2(n, c), t.v1(), loss.v1()), 3);
  EXPECT_EQ(loss[0], 0.0f);
  EXPECT_EQ(loss[2], 0.0f);
  EXPECT_EQ(loss[3], 0.0f);
  EXPECT_GT(loss[1], 0.0f);
  kernels::cross_entropy_backward<float>(x.v2(n, c), t.v1(), 1.0f, dx.v2(n, c));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < c; ++j)
      if (i == 1)
        EXPECT_NE(dx[i * c + j], 0.0f);
      else
        EXPECT_EQ(dx[i * c + j], 0.0f) << "row " << i << " has an invalid target";
}

TEST(CrossEntropy, BackwardAccumulates) {
  Tensor<double> x = random_tensor<double>(3 * 6, 11), dx(18);
  Tensor<index_t> t = targets(3, 6, 12);
  expect_accumulates({&dx}, [&] {
    kernels::cross_entropy_backward<double>(x.v2(3, 6), t.v1(), 0.5, dx.v2(3, 6));
  });
}

}  // namespace
}  // namespace furnace::testing
