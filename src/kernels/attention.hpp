// Causal multi-head self-attention core (the projections are plain GEMMs outside).
// d is out.extent(1); heads must divide d.
#pragma once
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

}  // namespace furnace::kernels
