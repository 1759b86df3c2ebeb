// LayerNorm / RMSNorm against a plain double loop, finite differences, and the
// accumulate-into-gradients contract.
#include "kernel_checks.hpp"
#include "kernels/norms.hpp"

namespace furnace::testing {
namespace {

// One norm problem of n rows x d columns, with its outputs; rms selects RMSNorm.
template <class T>
struct NormCase {
  int n, d;
  bool rms;
  T eps = T(1e-5);
  Tensor<T> x, w, b, y, mean, rstd;
  NormCase(int n_, int d_, bool rms_, std::uint64_t seed, double offset = 0)
      : n(n_),
        d(d_),
        rms(rms_),
        x(random_tensor<T>(n_ * d_, seed)),
        w(random_tensor<T>(d_, seed + 1)),
        b(random_tensor<T>(d_, seed + 2)),
        y(n_ * d_),
        mean(n_),
        rstd(n_) {
    for (auto& v : x.data) v += T(offset);
  }
  void forward() {
    if (rms)
      kernels::rmsnorm_forward<T>(x.v2(n, d), w.v1(), eps, y.v2(n, d), rstd.v1());
    else
      kernels::layernorm_forward<T>(x.v2(n, d), w.v1(), b.v1(), eps, y.v2(n, d), mean.v1(),
                                    rstd.v1());
  }
  void backward(Tensor<T>& dy, Tensor<T>& dx, Tensor<T>& dw, Tensor<T>& db) {
    if (rms)
      kernels::rmsnorm_backward<T>(dy.v2(n, d), x.v2(n, d), w.v1(), rstd.v1(), dx.v2(n, d),
                                   dw.v1());
    else
      kernels::layernorm_backward<T>(dy.v2(n, d), x.v2(n, d), w.v1(), mean.v1(), rstd.v1(),
                                     dx.v2(n, d), dw.v1(), db.v1());
  }
};

// The textbook definitions in double: y, mean and rstd per row.
struct NormRef {
  std::vector<double> y, mean, rstd;
};
template <class T>
NormRef reference(const NormCase<T>& c) {
  NormRef r{std::vector<double>(c.x.size()), std::vector<double>(c.n), std::vector<double>(c.n)};
  for (int i = 0; i < c.n; ++i) {
    double mu = 0, var = 0;
    if (!c.rms) {
      for (int j = 0; j < c.d; ++j) mu += c.x[i * c.d + j];
      mu /= c.d;
    }
    for (int j = 0; j < c.d; ++j) var += (c.x[i * c.d + j] - mu) * (c.x[i * c.d + j] - mu);
    r.mean[i] = mu;
    r.rstd[i] = 1 / std::sqrt(var / c.d + double(c.eps));
    for (int j = 0; j < c.d; ++j)
      r.y[i * c.d + j] =
          (c.x[i * c.d + j] - mu) * r.rstd[i] * c.w[j] + (c.rms ? 0.0 : double(c.b[j]));
  }
  return r;
}

const int kShapes[][2] = {{1, 1}, {1, 8}, {3, 17}, {8, 128}};

TEST(Norms, ForwardMatchesReferenceLoop) {
  for (bool rms : {false, true})
    for (auto [n, d] : kShapes) {
      SCOPED_TRACE((rms ? "rmsnorm " : "layernorm ") + std::to_string(n) + "x" + std::to_string(d));
      NormCase<float> c(n, d, rms, 11 * n + d);
      c.forward();
      NormRef r = reference(c);
      expect_all_near(c.y, r.y, 1e-5, 1e-5, "y");
      expect_all_near(c.rstd, r.rstd, 0, 1e-5, "rstd");
      if (!rms) expect_all_near(c.mean, r.mean, 1e-6, 1e-6, "mean");
    }
}

// Rows far from zero mean: E[x^2] - E[x]^2 would cancel; the two-pass variance must not.
// What remains is the float rounding of the stored mean (ulp(1000)/2 = 3e-5).
TEST(Norms, LayerNormForwardIsStableForLargeMean) {
  NormCase<float> c(4, 256, false, 3, 1000.0);
  c.forward();
  expect_all_near(c.y, reference(c).y, 5e-4, 1e-4, "y");
}

TEST(Norms, BackwardMatchesFiniteDifferences) {
  for (bool rms : {false, true})
    for (auto [n, d] : {std::pair{1, 1}, std::pair{1, 6}, std::pair{4, 9}, std::pair{3, 130}}) {
      SCOPED_TRACE((rms ? "rmsnorm " : "layernorm ") + std::to_string(n) + "x" + std::to_string(d));
      NormCase<double> c(n, d, rms, 7 * n + d);
      Tensor<double> R = random_tensor<double>(n * d, 99), dx(n * d), dw(d), db(d);
      c.forward();
      c.backward(R, dx, dw, db);
      auto loss = [&] {
        c.forward();
        return dot(c.y, R);
      };
      expect_gradient_matches(c.x.data, dx.data, loss, "dx");
      expect_gradient_matches(c.w.data, dw.data, loss, "dw");
      if (!rms) expect_gradient_matches(c.b.data, db.data, loss, "db");
    }
}

TEST(Norms, BackwardAccumulates) {
  for (bool rms : {false, true}) {
    NormCase<double> c(5, 12, rms, 5);
    Tensor<double> R = random_tensor<double>(5 * 12, 6), dx(5 * 12), dw(12), db(12);
    c.forward();
    expect_accumulates({&dx, &dw, &db}, [&] { c.backward(R, dx, dw, db); });
  }
}

}  // namespace
}  // namespace furnace::testing
