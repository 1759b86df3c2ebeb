// GEMM dispatch against a plain triple loop: every transpose combination, odd and
// degenerate shapes, padded leading dimensions, alpha/beta variants, float and double.
#include "kernels/gemm.hpp"
#include "kernels/operand.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "testing.hpp"

namespace furnace::kernels {
namespace {

using furnace::testing::random_tensor;
using furnace::testing::Tensor;

// Reference C = alpha op(A) op(B) + beta C in double; beta == 0 overwrites C.
template <class T>
void reference_gemm(Op op_a, Op op_b, int m, int n, int k, double alpha, const T* a, int lda,
                    const T* b, int ldb, double beta, T* c, int ldc) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int p = 0; p < k; ++p) {
        double x = op_a == Op::N ? a[i * lda + p] : a[p * lda + i];
        double y = op_b == Op::N ? b[p * ldb + j] : b[j * ldb + p];
        s += x * y;
      }
      T& out = c[i * ldc + j];
      out = static_cast<T>(beta == 0 ? alpha * s : alpha * s + beta * double(out));
    }
}

// Operands for one GEMM with leading dimensions padded by `pad`; the padding of C is
// filled with a sentinel so writes outside [m,n] are caught.
template <class T>
struct Problem {
  Op op_a, op_b;
  int m, n, k, lda, ldb, ldc;
  Tensor<T> a, b, c;
  Problem(Op oa, Op ob, int m_, int n_, int k_, int pad, std::uint64_t seed)
      : op_a(oa), op_b(ob), m(m_), n(n_), k(k_),
        lda((oa == Op::N ? k_ : m_) + pad), ldb((ob == Op::N ? n_ : k_) + pad), ldc(n_ + pad),
        a(random_tensor<T>(std::size_t(oa == Op::N ? m_ : k_) * lda, seed)),
        b(random_tensor<T>(std::size_t(ob == Op::N ? k_ : n_) * ldb, seed + 1)),
        c(random_tensor<T>(std::size_t(m_) * ldc, seed + 2)) {
    for (int i = 0; i < m; ++i)
      for (int j = n; j < ldc; ++j) c[i * ldc + j] = T(777);
  }
  Tensor<T> expected(T alpha, T beta) const {
    Tensor<T> e = c;
    reference_gemm(op_a, op_b, m, n, k, alpha, a.data.data(), lda, b.data.data(), ldb, beta,
                   e.data.data(), ldc);
    return e;
  }
  void run(T alpha, T beta) {
    gemm(op_a, op_b, m, n, k, alpha, a.data.data(), lda, b.data.data(), ldb, beta,
         c.data.data(), ldc);
  }
};

template <class T>
void expect_close(const Tensor<T>& got, const Tensor<T>& want, int k, const char* what) {
  // Rounding error of a length-k dot product of O(1) values grows like k * eps.
  double tol = 8 * (k + 2) * std::numeric_limits<T>::epsilon();
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(double(want[i])))) << what << " at " << i;
}

template <class T>
class GemmTest : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GemmTest, Types);

constexpr Op kOps[] = {Op::N, Op::T};

TYPED_TEST(GemmTest, MatchesTripleLoopForAllTransposesShapesAndScalars) {
  using T = TypeParam;
  struct Shape { int m, n, k; };
  // 33 and 65 are padded to 36 and 72 on oneDNN (shape_bucket in gemm16.cpp).
  const Shape shapes[] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {100, 33, 47}};
  const T scalars[][2] = {{1, 0}, {0.5, 2}, {-1.5, 1}};
  std::uint64_t seed = 1;
  for (Op oa : kOps)
    for (Op ob : kOps)
      for (Shape s : shapes)
        for (int pad : {0, 3})
          for (auto ab : scalars) {
            Problem<T> p(oa, ob, s.m, s.n, s.k, pad, seed += 3);
            auto want = p.expected(ab[0], ab[1]);
            p.run(ab[0], ab[1]);
            SCOPED_TRACE(::testing::Message() << "op_a=" << int(oa) << " op_b=" << int(ob)
                                              << " m,n,k=" << s.m << "," << s.n << "," << s.k
                                              << " pad=" << pad << " alpha=" << ab[0]
                                              << " beta=" << ab[1]);
            expect_close(p.c, want, s.k, "gemm");
          }
}

TYPED_TEST(GemmTest, BetaZeroOverwritesNaNGarbage) {
  using T = TypeParam;
  for (int k : {0, 9}) {
    Problem<T> p(Op::N, Op::T, 6, 4, k, 1, 42);
    for (int i = 0; i < p.m; ++i)
      for (int j = 0; j < p.n; ++j) p.c[i * p.ldc + j] = std::numeric_limits<T>::quiet_NaN();
    auto want = p.expected(1, 0);
    p.run(1, 0);
    for (int i = 0; i < p.m; ++i)
      for (int j = 0; j < p.n; ++j) ASSERT_FALSE(std::isnan(p.c[i * p.ldc + j])) << "k=" << k;
    expect_close(p.c, want, k, "beta=0");
  }
}

TYPED_TEST(GemmTest, KZeroScalesCByBeta) {
  using T = TypeParam;
  Problem<T> p(Op::T, Op::N, 5, 3, 0, 2, 7);
  auto want = p.expected(3, -2);
  p.run(3, -2);
  expect_close(p.c, want, 0, "k=0");
}

TYPED_TEST(GemmTest, EmptyOutputIsANoOpEvenWithNullOperands) {
  using T = TypeParam;
  Tensor<T> c(4, T(5));
  gemm<T>(Op::N, Op::N, 0, 4, 3, 1, nullptr, 3, nullptr, 4, 0, c.data.data(), 4);
  gemm<T>(Op::N, Op::N, 1, 0, 3, 1, nullptr, 3, nullptr, 1, 0, c.data.data(), 1);
  for (std::size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i], T(5));
}

TYPED_TEST(GemmTest, RejectsShortLeadingDimensions) {
  using T = TypeParam;
  std::vector<T> buf(64);
  T* x = buf.data();
  // m=2, n=3, k=4: A rows hold k (N) or m (T); B rows hold n (N) or k (T); C rows n.
  EXPECT_THROW(gemm<T>(Op::N, Op::N, 2, 3, 4, 1, x, 3, x, 3, 0, x, 3), std::invalid_argument);
  EXPECT_THROW(gemm<T>(Op::T, Op::N, 2, 3, 4, 1, x, 1, x, 3, 0, x, 3), std::invalid_argument);
  EXPECT_THROW(gemm<T>(Op::N, Op::N, 2, 3, 4, 1, x, 4, x, 2, 0, x, 3), std::invalid_argument);
  EXPECT_THROW(gemm<T>(Op::N, Op::T, 2, 3, 4, 1, x, 4, x, 3, 0, x, 3), std::invalid_argument);
  EXPECT_THROW(gemm<T>(Op::N, Op::N, 2, 3, 4, 1, x, 4, x, 3, 0, x, 2), std::invalid_argument);
  EXPECT_THROW(gemm<T>(Op::N, Op::N, -1, 3, 4, 1, x, 4, x, 3, 0, x, 3), std::invalid_argument);
  EXPECT_NO_THROW(gemm<T>(Op::T, Op::T, 2, 3, 4, 1, x, 2, x, 4, 0, x + 32, 3));
}

TYPED_TEST(GemmTest, StridedBatchedMatchesPerMemberReference) {
  using T = TypeParam;
  const int m = 5, n = 6, k = 7, batch = 3, lda = 9, ldb = 7, ldc = 8;  // A^T, B stored N
  const std::int64_t sa = k * lda + 4, sb = k * ldb + 1, sc = m * ldc + 2;  // gaps between members
  auto a = random_tensor<T>(batch * sa, 11), b = random_tensor<T>(batch * sb, 12);
  auto c = random_tensor<T>(batch * sc, 13);
  Tensor<T> want = c;
  for (int i = 0; i < batch; ++i)
    reference_gemm<T>(Op::T, Op::N, m, n, k, 2, a.data.data() + i * sa, lda,
                      b.data.data() + i * sb, ldb, 0.5, want.data.data() + i * sc, ldc);
  gemm_strided_batched<T>(Op::T, Op::N, m, n, k, 2, a.data.data(), lda, sa, b.data.data(), ldb,
                          sb, 0.5, c.data.data(), ldc, sc, batch);
  expect_close(c, want, k, "strided batched");
}

TYPED_TEST(GemmTest, GroupedHandlesMembersOfDifferentShapeIncludingEmpty) {
  using T = TypeParam;
  const int n = 4, k = 5;
  const int rows[] = {3, 0, 6};  // tokens per expert; the middle expert got none
  std::vector<Problem<T>> probs;
  for (int i = 0; i < 3; ++i) probs.emplace_back(Op::N, Op::T, rows[i], n, k, i, 20 + 5 * i);
  std::vector<Tensor<T>> want;
  std::vector<GemmDesc<T>> group;
  for (auto& p : probs) {
    want.push_back(p.expected(1, 1));
    GemmDesc<T> d{p.m, p.n, p.k, p.a.data.data(), p.lda, p.b.data.data(), p.ldb,
                  p.c.data.data(), p.ldc};
    if (p.m == 0) d = GemmDesc<T>{0, n, k};  // null pointers, unset leading dims
    group.push_back(d);
  }
  gemm_grouped<T>(Op::N, Op::T, 1, group, 1);
  for (std::size_t i = 0; i < probs.size(); ++i) expect_close(probs[i].c, want[i], k, "grouped");
}


// --- 16-bit GEMMs: both engines against the triple loop on the rounded operands ---------

// The engines a test can run here: convert always, oneDNN where it has a kernel.
std::vector<Gemm16Engine> engines_for(Precision p) {
  std::vector<Gemm16Engine> e{Gemm16Engine::Convert};
  if (gemm16_engine_error(Gemm16Engine::OneDNN, p).empty()) e.push_back(Gemm16Engine::OneDNN);
  return e;
}

struct EngineGuard {  // every test leaves the process-wide engine as it found it (Auto)
  ~EngineGuard() { set_gemm16_engine(Gemm16Engine::Auto); }
};

TEST(Gemm16, BothEnginesMatchTheLoopOnRoundedOperandsForAllTransposesAndScalars) {
  EngineGuard guard;
  struct Shape { int m, n, k; };
  // 33 and 65 are padded to 36 and 72 on oneDNN (shape_bucket in gemm16.cpp).
  const Shape shapes[] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {100, 33, 47}};
  const float scalars[][2] = {{1, 0}, {0.5f, 2}, {-1.5f, 1}};
  for (Precision prec : {Precision::BF16, Precision::FP16})
    for (Gemm16Engine engine : engines_for(prec)) {
      set_gemm16_engine(engine);
      std::uint64_t seed = 100;
      for (Op oa : kOps)
        for (Op ob : kOps)
          for (Shape s : shapes)
            for (auto ab : scalars) {
              Problem<float> p(oa, ob, s.m, s.n, s.k, 2, seed += 3);
              Problem<float> rounded = p;
              for (auto* t : {&rounded.a, &rounded.b})
                for (std::size_t i = 0; i < t->size(); ++i) (*t)[i] = round_to(prec, (*t)[i]);
              // The operands really are rounded: fp32 operands would differ by ~1e-3.
              auto want = rounded.expected(ab[0], ab[1]);
              gemm(prec, oa, ob, s.m, s.n, s.k, ab[0], p.a.data.data(), p.lda, p.b.data.data(), p.ldb, ab[1],
                   p.c.data.data(), p.ldc);
              SCOPED_TRACE(::testing::Message() << precision_name(prec) << " engine " << int(engine)
                                                << " op_a=" << int(oa) << " op_b=" << int(ob) << " m,n,k=" << s.m
                                                << "," << s.n << "," << s.k << " alpha=" << ab[0]
                                                << " beta=" << ab[1]);
              expect_close(p.c, want, s.k, "gemm16");  // fp32 accumulation: fp32's tolerance
            }
    }
}

TEST(Gemm16, RoundsTheOperandsAndBetaZeroOverwritesNaN) {
  EngineGuard guard;
  for (Gemm16Engine engine : engines_for(Precision::BF16)) {
    set_gemm16_engine(engine);
    // 1 + 2^-10 is not a bf16 value (7 mantissa bits): rounded to 1, the product is 1.
    const float a = 1.0f + 0x1p-10f, b = 1.0f;
    float c = std::numeric_limits<float>::quiet_NaN();
    gemm(Precision::BF16, Op::N, Op::N, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
    EXPECT_EQ(c, 1.0f) << "engine " << int(engine);
    gemm(Precision::FP32, Op::N, Op::N, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
    EXPECT_EQ(c, a);
  }
}

TEST(Gemm16, OneDnnRefusedWhereItHasNoKernelAndAutoSaysWhatRuns) {
  for (Precision p : {Precision::BF16, Precision::FP16}) {
    const std::string err = gemm16_engine_error(Gemm16Engine::OneDNN, p);
    const std::string what = gemm16_description(p);
    if (err.empty())
      EXPECT_NE(what.find("oneDNN"), std::string::npos) << what;
    else
      EXPECT_NE(what.find("OpenBLAS sgemm on"), std::string::npos) << what << " / " << err;
    EXPECT_TRUE(gemm16_engine_error(Gemm16Engine::Convert, p).empty());
  }
}

TEST(Gemm16, GroupedAndStridedBatchedMatchPerMemberCalls) {
  EngineGuard guard;
  for (Gemm16Engine engine : engines_for(Precision::BF16)) {
    set_gemm16_engine(engine);
    const int rows[] = {3, 0, 6};
    std::vector<Problem<float>> probs, want;
    std::vector<GemmDesc<float>> group;
    for (int i = 0; i < 3; ++i) probs.emplace_back(Op::T, Op::N, rows[i], 4, 5, 1, 50 + 5 * i);
    want = probs;
    for (auto& p : want)
      gemm(Precision::BF16, p.op_a, p.op_b, p.m, p.n, p.k, 1.0f, p.a.data.data(), p.lda, p.b.data.data(), p.ldb,
           1.0f, p.c.data.data(), p.ldc);
    for (auto& p : probs)
      group.push_back({p.m, p.n, p.k, p.a.data.data(), p.lda, p.b.data.data(), p.ldb, p.c.data.data(), p.ldc});
    gemm_grouped(Precision::BF16, Op::T, Op::N, 1.0f, group, 1.0f);
    for (std::size_t i = 0; i < probs.size(); ++i)
      for (std::size_t j = 0; j < probs[i].c.size(); ++j) ASSERT_EQ(probs[i].c[j], want[i].c[j]);
  }
}

// An A kept in 16 bits (kernels/operand.hpp: what memory.activations = auto stores) gives
// exactly the product of the fp32 A it was rounded from, on either engine, directly,
// through a GemmOperand and grouped; a 16-bit A in an fp32 GEMM or in the other 16-bit
// format is refused.
TEST(Gemm16, AStoredIn16BitsGivesTheBitsOfItsFp32Source) {
  EngineGuard guard;
  const int shapes[][3] = {{7, 5, 3}, {33, 17, 65}, {0, 4, 2}, {3, 4, 0}};
  for (Precision prec : {Precision::BF16, Precision::FP16})
    for (Gemm16Engine engine : engines_for(prec)) {
      set_gemm16_engine(engine);
      std::uint64_t seed = 700;
      for (Op oa : kOps)
        for (auto s : shapes) {
          const int m = s[0], n = s[1], k = s[2];
          SCOPED_TRACE(::testing::Message() << precision_name(prec) << " engine " << int(engine) << " op_a=" << int(oa)
                                            << " m,n,k=" << m << "," << n << "," << k);
          Problem<float> p(oa, Op::N, m, n, k, 1, seed += 7);
          std::vector<std::uint16_t> a16(p.a.size());
          for (std::size_t i = 0; i < a16.size(); ++i) a16[i] = to_16bit(prec, p.a[i]);
          auto want = p.c.data, got = p.c.data;
          gemm(prec, oa, Op::N, m, n, k, 0.5f, p.a.data.data(), p.lda, p.b.data.data(), p.ldb, 1.0f, want.data(), p.ldc);
          gemm(prec, oa, Op::N, m, n, k, 0.5f, a16.data(), p.lda, p.b.data.data(), p.ldb, 1.0f, got.data(), p.ldc);
          ASSERT_EQ(got, want) << "direct";
          // The same A as a GemmOperand from row 1 on (stage fp32, store rounds).
          const int rows = oa == Op::N ? m : k;
          if (rows < 2) continue;
          std::vector<float> staging(p.a.data);
          std::vector<std::uint16_t> held(a16.size());
          GemmOperand op{prec, {}, View2<std::uint16_t>(held.data(), rows, p.lda)};
          op.store(op.target(View2<float>(staging.data(), rows, p.lda), rows), rows);
          ASSERT_EQ(held, a16) << "store";
          const int m1 = oa == Op::N ? m - 1 : m, k1 = oa == Op::N ? k : k - 1;
          auto want1 = p.c.data, got1 = p.c.data;
          gemm(prec, oa, Op::N, m1, n, k1, 1.0f, p.a.data.data() + p.lda, p.lda,
               p.b.data.data() + (oa == Op::N ? 0 : p.ldb), p.ldb, 0.0f, want1.data(), p.ldc);
          gemm(prec, oa, Op::N, m1, n, k1, 1.0f, op, 1, p.b.data.data() + (oa == Op::N ? 0 : p.ldb), p.ldb, 0.0f,
               got1.data(), p.ldc);
          ASSERT_EQ(got1, want1) << "GemmOperand";
          std::vector<GemmDesc<float, std::uint16_t>> group{
              {m, n, k, a16.data(), p.lda, p.b.data.data(), p.ldb, got.data(), p.ldc}};
          gemm_grouped(prec, oa, Op::N, 0.5f, group, 1.0f);
          gemm(prec, oa, Op::N, m, n, k, 0.5f, p.a.data.data(), p.lda, p.b.data.data(), p.ldb, 1.0f, want.data(), p.ldc);
          ASSERT_EQ(got, want) << "grouped";
        }
    }
  // Strided batches with B, or A and B, in 16 bits (attention over a 16-bit qkv).
  for (Precision prec : {Precision::BF16, Precision::FP16})
    for (Gemm16Engine engine : engines_for(prec)) {
      set_gemm16_engine(engine);
      for (Op ob : kOps) {
        SCOPED_TRACE(::testing::Message() << precision_name(prec) << " engine " << int(engine) << " op_b=" << int(ob));
        const int m = 5, n = 6, k = 7, batch = 3;
        Problem<float> p(Op::N, ob, m, n, k, 0, 900 + int(ob));
        const std::int64_t sa = 0, sb = 0, sc = 0;  // one operand pair, batch 3 times accumulated
        std::vector<std::uint16_t> a16(p.a.size()), b16(p.b.size());
        for (std::size_t i = 0; i < a16.size(); ++i) a16[i] = to_16bit(prec, p.a[i]);
        for (std::size_t i = 0; i < b16.size(); ++i) b16[i] = to_16bit(prec, p.b[i]);
        auto want = p.c.data, got_b = p.c.data, got_ab = p.c.data;
        gemm_strided_batched(prec, Op::N, ob, m, n, k, 1.0f, p.a.data.data(), p.lda, sa, p.b.data.data(), p.ldb, sb,
                             1.0f, want.data(), p.ldc, sc, batch);
        gemm_strided_batched(prec, Op::N, ob, m, n, k, 1.0f, p.a.data.data(), p.lda, sa, b16.data(), p.ldb, sb, 1.0f,
                             got_b.data(), p.ldc, sc, batch);
        gemm_strided_batched(prec, Op::N, ob, m, n, k, 1.0f, a16.data(), p.lda, sa, b16.data(), p.ldb, sb, 1.0f,
                             got_ab.data(), p.ldc, sc, batch);
        ASSERT_EQ(got_b, want) << "16-bit B";
        ASSERT_EQ(got_ab, want) << "16-bit A and B";
      }
    }
  std::uint16_t a = 0x3f80;  // 1.0 in bf16
  float b = 1, c = 0;
  EXPECT_THROW(gemm(Precision::FP32, Op::N, Op::N, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1), std::invalid_argument);
  GemmOperand bf16{Precision::BF16, {}, View2<std::uint16_t>(&a, 1, 1)};
  EXPECT_THROW(gemm(Precision::FP16, Op::N, Op::N, 1, 1, 1, 1.0f, bf16, 0, &b, 1, 0.0f, &c, 1), std::logic_error);
  gemm(Precision::BF16, Op::N, Op::N, 1, 1, 1, 1.0f, bf16, 0, &b, 1, 0.0f, &c, 1);
  EXPECT_EQ(c, 1.0f);
}

}  // namespace
}  // namespace furnace::kernels
