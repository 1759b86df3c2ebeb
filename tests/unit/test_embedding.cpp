// Token + position embedding against a plain loop and finite differences, including
// one-token sequences, repeated tokens, widths that are not a multiple of the column
// block, ids outside the vocabulary, and the accumulate-into-gradients contract.
#include "kernel_checks.hpp"
#include "kernels/embedding.hpp"

namespace furnace::testing {
namespace {

using kernels::index_t;

// A batch of `batch` sequences of length `seq` over a vocabulary of `vocab`, width d.
// wpe has more rows than seq, as a model's max_seq usually exceeds the batch's.
template <class T>
struct EmbeddingCase {
  int vocab, seq, batch, d, n = batch * seq;
  Tensor<index_t> tokens{std::size_t(n)};
  Tensor<T> wte = random_tensor<T>(vocab * d, 1), wpe = random_tensor<T>((seq + 2) * d, 2);
  Tensor<T> out{std::size_t(n * d)};
  EmbeddingCase(int vocab_, int seq_, int batch_, int d_)
      : vocab(vocab_), seq(seq_), batch(batch_), d(d_) {
    std::mt19937_64 gen(3);
    for (auto& t : tokens.data) t = index_t(gen() % (vocab / 2 + 1));  // forces repeats
  }
  void forward() {
    kernels::embedding_forward<T>(tokens.v1(), seq, wte.v2(vocab, d), wpe.v2(seq + 2, d),
                                  out.v2(n, d));
  }
  void backward(Tensor<T>& dout, Tensor<T>& dwte, Tensor<T>& dwpe) {
    kernels::embedding_backward<T>(tokens.v1(), seq, dout.v2(n, d), dwte.v2(vocab, d),
                                   dwpe.v2(seq + 2, d));
  }
};

const int kShapes[][4] = {{7, 1, 1, 1}, {7, 1, 5, 3}, {11, 4, 3, 5}, {40, 8, 2, 130}};

TEST(Embedding, ForwardMatchesReferenceLoop) {
  for (auto [vocab, seq, batch, d] : kShapes) {
    EmbeddingCase<float> c(vocab, seq, batch, d);
    c.forward();
    std::vector<double> want;
    for (int i = 0; i < c.n; ++i)
      for (int j = 0; j < d; ++j)
        want.push_back(c.wte[c.tokens[i] * d + j] + c.wpe[(i % seq) * d + j]);  // in float
    expect_all_near(c.out, want, 0, 0, "embedding");
  }
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  for (auto [vocab, seq, batch, d] : kShapes) {
    SCOPED_TRACE("vocab " + std::to_string(vocab) + " seq " + std::to_string(seq) + " batch " +
                 std::to_string(batch) + " d " + std::to_string(d));
    EmbeddingCase<double> c(vocab, seq, batch, d);
    Tensor<double> R = random_tensor<double>(c.n * d, 4), dwte(vocab * d), dwpe((seq + 2) * d);
    c.backward(R, dwte, dwpe);
    auto loss = [&] {
      c.forward();
      return dot(c.out, R);
    };
    expect_gradient_matches(c.wte.data, dwte.data, loss, "dwte", 1e-6, 1e-7, 1e-5, 1000);
    expect_gradient_matches(c.wpe.data, dwpe.data, loss, "dwpe", 1e-6, 1e-7, 1e-5, 1000);
  }
}

TEST(Embedding, BackwardAccumulates) {
  EmbeddingCase<double> c(9, 3, 4, 70);
  Tensor<double> R = random_tensor<double>(c.n * c.d, 5), dwte(9 * 70), dwpe(5 * 70);
  expect_accumulates({&dwte, &dwpe}, [&] { c.backward(R, dwte, dwpe); });
}

TEST(Embedding, OutOfVocabularyIdsStayInBounds) {
  EmbeddingCase<float> c(5, 2, 1, 3);
  c.tokens[0] = -1;
  c.tokens[1] = 5;
  c.forward();
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(c.out[j], c.wpe[j]);
    EXPECT_EQ(c.out[3 + j], c.wpe[3 + j]);
  }
  Tensor<float> dout(6, 1.0f), dwte(15), dwpe(4 * 3);
  c.backward(dout, dwte, dwpe);
  for (float g : dwte.data) EXPECT_EQ(g, 0.0f);
  for (int k = 0; k < 6; ++k) EXPECT_EQ(dwpe[k], 1.0f);  // positions still get gradient
}

}  // namespace
}  // namespace furnace::testing
