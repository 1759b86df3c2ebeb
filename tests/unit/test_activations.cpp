// GELU (tanh form) and SwiGLU against plain loops of their definitions, finite
// differences, large inputs, and the accumulate-into-dx contract.
#include "kernel_checks.hpp"
#include "kernels/activations.hpp"

namespace furnace::testing {
namespace {

double gelu_ref(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
double silu_ref(double a) { return a / (1 + std::exp(-a)); }

// Random inputs plus the values where things go wrong: 0, tiny, and saturated.
template <class T>
Tensor<T> gelu_inputs() {
  Tensor<T> x = random_tensor<T>(200, 1, 3.0);
  for (double v : {0.0, 1e-4, -1e-4, 8.0, -8.0, 1000.0, -1000.0}) x.data.push_back(T(v));
  return x;
}

TEST(Activations, GeluForwardMatchesReferenceLoop) {
  Tensor<float> x = gelu_inputs<float>(), y(x.size());
  kernels::gelu_forward<float>(x.v1(), y.v1());
  std::vector<double> want;
  for (float v : x.data) want.push_back(gelu_ref(v));
  expect_all_near(y, want, 1e-6, 1e-5, "gelu");
}

// An independent check of the constants: the tanh form stays within 1e-3 of the
// exact GELU x * Phi(x).
TEST(Activations, GeluIsCloseToExactGelu) {
  Tensor<double> x(121), y(121);
  for (int k = 0; k <= 120; ++k) x[k] = -6 + 0.1 * k;
  kernels::gelu_forward<double>(x.v1(), y.v1());
  std::vector<double> exact;
  for (double v : x.data) exact.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
  expect_all_near(y, exact, 1e-3, 0, "gelu vs erf gelu");
}

TEST(Activations, GeluBackwardMatchesFiniteDifferences) {
  Tensor<double> x = gelu_inputs<double>();
  x.data.resize(x.size() - 2);  // drop +-1000: flat there, nothing to difference
  Tensor<double> y(x.size()), dx(x.size()), R = random_tensor<double>(x.size(), 2);
  kernels::gelu_backward<double>(x.v1(), R.v1(), dx.v1());
  auto loss = [&] {
    kernels::gelu_forward<double>(x.v1(), y.v1());
    return dot(y, R);
  };
  expect_gradient_matches(x.data, dx.data, loss, "gelu dx", 1e-6, 1e-7, 1e-5, x.size());
}

TEST(Activations, GeluBackwardIsFiniteWhenSaturated) {
  Tensor<float> x(2), dy(2, 1.0f), dx(2);
  x[0] = 1000;
  x[1] = -1000;
  kernels::gelu_backward<float>(x.v1(), dy.v1(), dx.v1());
  EXPECT_FLOAT_EQ(dx[0], 1.0f);
  EXPECT_FLOAT_EQ(dx[1], 0.0f);
}

TEST(Activations, GeluBackwardAccumulates) {
  Tensor<double> x = random_tensor<double>(30, 3), R = random_tensor<double>(30, 4), dx(30);
  expect_accumulates({&dx}, [&] { kernels::gelu_backward<double>(x.v1(), R.v1(), dx.v1()); });
}

TEST(Activations, SwigluForwardMatchesReferenceLoop) {
  for (auto [n, h] : {std::pair{1, 1}, std::pair{3, 5}, std::pair{16, 64}}) {
    Tensor<float> x = random_tensor<float>(n * 2 * h, n + h, 2.0), y(n * h);
    x[0] = -1000;  // saturated gate: silu -> -0, must not be NaN
    if (h > 1) x[1] = 1000;
    kernels::swiglu_forward<float>(x.v2(n, 2 * h), y.v2(n, h));
    std::vector<double> want;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < h; ++j) want.push_back(silu_ref(x[i * 2 * h + j]) * x[i * 2 * h + h + j]);
    expect_all_near(y, want, 1e-6, 1e-5, "swiglu");
  }
}

TEST(Activations, SwigluBackwardMatchesFiniteDifferences) {
  for (auto [n, h] : {std::pair{1, 1}, std::pair{3, 4}}) {
    Tensor<double> x = random_tensor<double>(n * 2 * h, 5, 2.0), y(n * h), dx(n * 2 * h);
    Tensor<double> R = random_tensor<double>(n * h, 6);
    kernels::swiglu_backward<double>(x.v2(n, 2 * h), R.v2(n, h), dx.v2(n, 2 * h));
    auto loss = [&] {
      kernels::swiglu_forward<double>(x.v2(n, 2 * h), y.v2(n, h));
      return dot(y, R);
    };
    expect_gradient_matches(x.data, dx.data, loss, "swiglu dx");
  }
}

TEST(Activations, SwigluBackwardIsFiniteWhenSaturated) {
  Tensor<float> x(4), dy(2, 1.0f), dx(4);
  x[0] = -1000, x[1] = 1000, x[2] = 3, x[3] = 5;  // gates | ups
  kernels::swiglu_backward<float>(x.v2(1, 4), dy.v2(1, 2), dx.v2(1, 4));
  EXPECT_FLOAT_EQ(dx[0], 0.0f);  // d gate: silu'(-1000) ~ 0
  EXPECT_FLOAT_EQ(dx[1], 5.0f);  // silu'(1000) = 1, times up
  EXPECT_FLOAT_EQ(dx[2], 0.0f);  // d up = silu(-1000)
  EXPECT_FLOAT_EQ(dx[3], 1000.0f);
}

TEST(Activations, SwigluBackwardAccumulates) {
  Tensor<double> x = random_tensor<double>(4 * 6, 7), R = random_tensor<double>(4 * 3, 8);
  Tensor<double> dx(4 * 6);
  expect_accumulates(
      {&dx}, [&] { kernels::swiglu_backward<double>(x.v2(4, 6), R.v2(4, 3), dx.v2(4, 6)); });
}

}  // namespace
}  // namespace furnace::testing
