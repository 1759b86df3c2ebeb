// AdamW against a scalar loop of torch.optim.AdamW's update, plus sum_squares and scale.
#include "kernel_checks.hpp"
#include "kernels/optim.hpp"

namespace furnace::testing {
namespace {

// One AdamW step on one element, as the PyTorch docs write it, in double.
void adamw_ref(double& p, double g, double& m, double& v, const kernels::AdamWParams& hp) {
  p *= 1 - hp.lr * hp.weight_decay;
  m = hp.beta1 * m + (1 - hp.beta1) * g;
  v = hp.beta2 * v + (1 - hp.beta2) * g * g;
  const double bc1 = 1 - std::pow(hp.beta1, hp.step), bc2 = 1 - std::pow(hp.beta2, hp.step);
  p -= hp.lr / bc1 * m / (std::sqrt(v) / std::sqrt(bc2) + hp.eps);
}

// Three steps with fresh gradients each, kernel (at T) vs the double loop.
template <class T>
void expect_adamw_matches(kernels::AdamWParams hp, double rtol) {
  const int n = 257;
  Tensor<T> p = random_tensor<T>(n, 1), m(n), v(n);
  std::vector<double> rp(p.data.begin(), p.data.end()), rm(n), rv(n);
  for (hp.step = 1; hp.step <= 3; ++hp.step) {
    Tensor<T> g = random_tensor<T>(n, 10 + hp.step, 0.1);
    g[0] = 0;  // an untouched parameter still decays
    kernels::adamw_update<T>(p.v1(), g.v1(), m.v1(), v.v1(), hp);
    for (int k = 0; k < n; ++k) adamw_ref(rp[k], g[k], rm[k], rv[k], hp);
  }
  expect_all_near(p, rp, 1e-7, rtol, "params");
  expect_all_near(m, rm, 1e-9, rtol, "exp_avg");
  expect_all_near(v, rv, 1e-12, rtol, "exp_avg_sq");
}

TEST(Optim, AdamWMatchesPyTorchFormulaOverThreeSteps) {
  kernels::AdamWParams hp;
  hp.lr = 1e-2;
  hp.weight_decay = 0.1;
  expect_adamw_matches<float>(hp, 1e-5);
  expect_adamw_matches<double>(hp, 1e-12);
  hp.beta1 = 0.3;  // torch.lerp's other branch (weight 1 - beta1 >= 0.5)
  expect_adamw_matches<float>(hp, 1e-5);
  expect_adamw_matches<double>(hp, 1e-12);
}

// From m = v = 0, bias correction makes the first step exactly -lr * g / (|g| + eps).
TEST(Optim, AdamWFirstStepIsLrTimesSign) {
  Tensor<double> p(3, 1.0), g(3), m(3), v(3);
  g[0] = 5, g[1] = -1e-3, g[2] = 0;
  kernels::AdamWParams hp;
  kernels::adamw_update<double>(p.v1(), g.v1(), m.v1(), v.v1(), hp);
  std::vector<double> want;
  for (double gk : g.data) want.push_back(1 - hp.lr * gk / (std::fabs(gk) + hp.eps));
  expect_all_near(p, want, 1e-12, 0, "params");
  EXPECT_NEAR(p[0], 1 - hp.lr, 1e-11);  // the sign-like step, whatever |g|
}

TEST(Optim, SumSquaresAccumulatesInDouble) {
  Tensor<float> x = random_tensor<float>(1001, 2);
  long double want = 0;
  for (float a : x.data) want += (long double)a * a;
  EXPECT_NEAR(kernels::sum_squares<float>(x.v1()), double(want), 1e-12 * double(want));
  // 1e8 + 1000 * 1: a float accumulator would stay at 1e8 (its ulp there is 8).
  Tensor<float> y(1001, 1.0f);
  y[0] = 1e4f;
  EXPECT_EQ(kernels::sum_squares<float>(y.v1()), 1e8 + 1000);
  EXPECT_EQ(kernels::sum_squares<float>(Tensor<float>(0).v1()), 0.0);
}

TEST(Optim, ScaleMultipliesEveryEntry) {
  Tensor<float> x = random_tensor<float>(100, 3);
  std::vector<float> want;
  for (float a : x.data) want.push_back(a * 0.25f);
  kernels::scale<float>(x.v1(), 0.25f);
  expect_all_near(x, want, 0, 0, "scaled");
}

}  // namespace
}  // namespace furnace::testing
