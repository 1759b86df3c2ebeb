// Causal multi-head self-attention core (the projections are plain GEMMs outside).
// d is out.extent(1); heads must divide d.
#pragma once
#include "kernels/operand.hpp"
#include "kernels/precision.hpp"
#include "kernels/views.hpp"

namespace furnace::kernels {

// qkv [B*seq, 3*d]: columns [0,d) are q, [d,2d) k, [2d,3d) v; head h owns columns
// h*hd .. (h+1)*hd of each, hd = d / heads.
// probs [B, heads, seq, seq]: causal softmax(q k^T / sqrt(hd)) (upper triangle 0), kept for backward.
// out [B*seq, d]: head h's output in columns h*hd...
// prec: the precision of the score and output GEMMs (bf16 / fp16 only with T = float);
// the softmax is always in T.
template <class T>
void attention_forward(View2<const T> qkv, int batch, int seq, int heads, View4<T> probs,
                       View2<T> out, Precision prec = Precision::FP32);
// probs alone, bitwise as attention_forward computes them (for a backward that did not keep them).
template <class T>
void attention_probs(View2<const T> qkv, int batch, int seq, int heads, View4<T> probs,
                     Precision prec = Precision::FP32);
// dqkv += gradient w.r.t. qkv; dprobs [B, heads, seq, seq] is scratch.
template <class T>
void attention_backward(View2<const T> qkv, View4<const T> probs, View2<const T> dout, int batch,
                        int seq, int heads, View4<T> dprobs, View2<T> dqkv,
                        Precision prec = Precision::FP32);

// The same over qkv held in fp32 or in the GEMMs' 16 bits (memory.activations = auto):
// every read of qkv is a GEMM operand, so the results are bitwise those of the fp32
// qkv it was rounded from.
void attention_probs(const GemmOperand& qkv, int batch, int seq, int heads, View4<float> probs, Precision prec);
void attention_forward(const GemmOperand& qkv, int batch, int seq, int heads, View4<float> probs, View2<float> out,
                       Precision prec);
void attention_backward(const GemmOperand& qkv, View4<const float> probs, View2<const float> dout, int batch, int seq,
                        int heads, View4<float> dprobs, View2<float> dqkv, Precision prec);

}  // namespace furnace::kernels
