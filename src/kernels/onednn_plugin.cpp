// The oneDNN half of the 16-bit GEMMs, built as its own shared library
// (build/lib/libfurnace_onednn.so, next to the binary's ../lib) and loaded by
// gemm16.cpp with dlopen the first time a 16-bit GEMM may run on oneDNN. Kept out of
// the binary because oneDNN brings libgomp, which parses OMP_* variables as it is
// loaded and prints its own complaints: a run that never uses oneDNN must not load it
// (one line per bad input), and a machine without oneDNN still runs Furnace.
//
// A C interface: no C++ exception crosses it (dnnl::error becomes a return code).
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

struct OneDnn {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};
OneDnn& onednn() {
  static OneDnn o;
  return o;
}

// 1: bf16, 2: fp16 (kernels::Precision's BF16, FP16).
dnnl::memory::data_type type_of(int precision) {
  return precision == 1 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f16;
}

void say(char* buf, int n, const char* what) {
  if (buf && n > 0) std::snprintf(buf, std::size_t(n), "%s", what);
}

}  // namespace

extern "C" {

// oneDNN's implementation for a representative 64^3 product in `precision`, into buf.
// Returns 0, or -1 when oneDNN has none (buf then says why).
int furnace_onednn_kernel(int precision, char* buf, int n) {
  using dnnl::memory;
  try {
    const memory::dim d = 64;
    memory::desc a({d, d}, type_of(precision), {d, 1}), b({d, d}, type_of(precision), {d, 1});
    memory::desc c({d, d}, memory::data_type::f32, {d, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), onednn().engine);
    say(buf, n, pd.impl_info_str());
    return 0;
  } catch (const dnnl::error& e) {
    say(buf, n, e.what());
    return -1;
  }
}

// C [m,n] (row stride ldc) = alpha op(A) op(B) + beta C with 16-bit A, B packed
// densely as stored (A [m,k], or [k,m] when trans_a; B [k,n], or [n,k] when trans_b).
// Returns 0, or -1 with oneDNN's message in err.
int furnace_onednn_matmul(int precision, int trans_a, int trans_b, int m, int n, int k, float alpha,
                          const std::uint16_t* a, const std::uint16_t* b, float beta, float* c, int ldc, char* err,
                          int err_len) {
  using dnnl::memory;
  try {
    const memory::dims a_strides = trans_a ? memory::dims{1, m} : memory::dims{k, 1};
    const memory::dims b_strides = trans_b ? memory::dims{1, k} : memory::dims{n, 1};
    memory::desc ad({m, k}, type_of(precision), a_strides), bd({k, n}, type_of(precision), b_strides);
    memory::desc cd({m, n}, memory::data_type::f32, {ldc, 1});
    dnnl::primitive_attr attr;
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (beta != 0.0f) {
      dnnl::post_ops po;
      po.append_sum(beta);  // C = alpha * op(A) op(B) + beta * C
      attr.set_post_ops(po);
    }
    auto& o = onednn();
    // One primitive per shape: oneDNN's primitive cache makes a repeated shape cheap.
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), attr, o.engine);
    dnnl::memory am(ad, o.engine, const_cast<std::uint16_t*>(a)), bm(bd, o.engine, const_cast<std::uint16_t*>(b));
    dnnl::memory cm(cd, o.engine, c);
    dnnl::matmul(pd).execute(o.stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    o.stream.wait();
    return 0;
  } catch (const dnnl::error& e) {
    say(err, err_len, e.what());
    return -1;
  }
}

// oneDNN runs on libgomp's threads: n of them for this (the calling) thread's calls.
void furnace_onednn_set_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }

}  // extern "C"
