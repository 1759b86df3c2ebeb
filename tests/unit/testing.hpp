// Helpers shared by the kernel tests: deterministic random fills, managed test
// tensors, and a central finite-difference gradient check. Kernels are instantiated
// for double, so finite differences on double inputs can be checked tightly.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "kernels/views.hpp"

namespace furnace::testing {

// A managed host tensor with an unmanaged view of it, for tests only.
template <class T>
struct Tensor {
  std::vector<T> data;
  explicit Tensor(std::size_t n, T value = T(0)) : data(n, value) {}
  kernels::View1<T> v1() { return kernels::View1<T>(data.data(), data.size()); }
  kernels::View2<T> v2(std::size_t r, std::size_t c) { return kernels::View2<T>(data.data(), r, c); }
  kernels::View3<T> v3(std::size_t a, std::size_t b, std::size_t c) {
    return kernels::View3<T>(data.data(), a, b, c);
  }
  kernels::View4<T> v4(std::size_t a, std::size_t b, std::size_t c, std::size_t d) {
    return kernels::View4<T>(data.data(), a, b, c, d);
  }
  std::size_t size() const { return data.size(); }
  T& operator[](std::size_t i) { return data[i]; }
  const T& operator[](std::size_t i) const { return data[i]; }
};

template <class T>
inline Tensor<T> random_tensor(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Tensor<T> t(n);
  for (auto& x : t.data) x = static_cast<T>(dist(gen));
  return t;
}

// Central finite differences of scalar loss(x) w.r.t. each entry of x, compared with
// the analytic gradient `grad`. Checks every entry when x is small, else `samples`
// entries spread over x. Tolerance: |fd - g| <= atol + rtol * |fd|.
inline void expect_gradient_matches(std::vector<double>& x, const std::vector<double>& grad,
                                    const std::function<double()>& loss, const char* what,
                                    double eps = 1e-6, double atol = 1e-7, double rtol = 1e-5,
                                    std::size_t samples = 64) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  std::size_t stride = x.size() <= samples ? 1 : x.size() / samples;
  for (std::size_t i = 0; i < x.size(); i += stride) {
    double saved = x[i];
    x[i] = saved + eps;
    double lp = loss();
    x[i] = saved - eps;
    double lm = loss();
    x[i] = saved;
    double fd = (lp - lm) / (2 * eps);
    EXPECT_NEAR(grad[i], fd, atol + rtol * std::fabs(fd)) << what << " entry " << i;
  }
}

// sum_i a[i] * b[i], the scalar the finite-difference tests differentiate.
template <class T>
inline double dot(const Tensor<T>& a, const Tensor<T>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

}  // namespace furnace::testing
