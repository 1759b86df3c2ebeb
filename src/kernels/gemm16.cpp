// 16-bit GEMMs (train.precision = bf16 | fp16): operands rounded to 16 bits, products
// accumulated in fp32 into an fp32 C.
//
// Two engines, the same rounding of the operands:
//   oneDNN   the operands packed as 16-bit and multiplied by oneDNN's matmul (AVX512-BF16
//            and AMX kernels for bf16; fp16 needs AVX512-FP16), in the plugin
//            libfurnace_onednn.so (onednn_plugin.cpp), loaded on first use. One
//            primitive per shape: oneDNN's primitive cache makes a repeated shape cost
//            ~4 us, a new one 0.4-0.9 ms (JIT; measured here); runtime-sized
//            primitives fall back to its reference kernel (1000x slower), so they are
//            not used, and the routing-dependent dimensions are padded to a few
//            sizes instead (shape_bucket).
//   convert  the operands rounded to 16 bits, kept as fp32, multiplied by OpenBLAS's
//            sgemm: the same numbers at fp32 speed, for CPUs oneDNN has no kernel for
//            (or when the plugin is not installed).
// A CUDA build would call cublasGemmEx (CUDA_R_16BF, CUBLAS_COMPUTE_32F) here instead.
#include <dlfcn.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/blas_runtime.hpp"
#include "kernels/gemm.hpp"

namespace furnace::kernels {
namespace {

Gemm16Engine& requested_engine() {
  static Gemm16Engine e = Gemm16Engine::Auto;
  return e;
}
int& onednn_threads() {  // 0: the BLAS budget as the plugin loads
  static int n = 0;
  return n;
}

// The plugin's C interface (onednn_plugin.cpp).
struct Plugin {
  std::string path, error;  // error: why it is not loaded
  int (*kernel)(int, char*, int) = nullptr;
  int (*matmul)(int, int, int, int, int, int, float, const std::uint16_t*, const std::uint16_t*, float, float*, int,
                char*, int) = nullptr;
  void (*set_threads)(int) = nullptr;
};

// Loaded once, from the binary's ../lib (build/bin -> build/lib; PREFIX/bin -> PREFIX/lib).
Plugin& plugin() {
  static Plugin p = [] {
    Plugin q;
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    q.path = (exe.parent_path().parent_path() / "lib" / "libfurnace_onednn.so").string();
    void* h = dlopen(q.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* why = dlerror();
      q.error = why ? why : "dlopen failed";
      return q;
    }
    q.kernel = reinterpret_cast<decltype(q.kernel)>(dlsym(h, "furnace_onednn_kernel"));
    q.matmul = reinterpret_cast<decltype(q.matmul)>(dlsym(h, "furnace_onednn_matmul"));
    q.set_threads = reinterpret_cast<decltype(q.set_threads)>(dlsym(h, "furnace_onednn_set_threads"));
    if (!q.kernel || !q.matmul || !q.set_threads) {
      q.error = q.path + " lacks the furnace_onednn_* functions (another version?)";
      q.kernel = nullptr;
      return q;
    }
    q.set_threads(onednn_threads() > 0 ? onednn_threads() : blas_threads());
    return q;
  }();
  return p;
}

// The implementation oneDNN picks for a representative product in `p`, or why none.
std::string onednn_kernel(Precision p) {
  if (!plugin().kernel) return "no oneDNN: " + plugin().error;
  char buf[256];
  const int rc = plugin().kernel(p == Precision::BF16 ? 1 : 2, buf, sizeof buf);
  return rc == 0 ? std::string(buf) : std::string("none: ") + buf;
}

// Whether oneDNN has a real (non-reference) kernel for p on this CPU, decided once.
bool onednn_usable(Precision p) {
  auto real = [](const std::string& k) { return k.rfind("ref", 0) != 0 && k.rfind("no", 0) != 0; };
  static const bool bf16 = real(onednn_kernel(Precision::BF16));
  static const bool fp16 = real(onednn_kernel(Precision::FP16));
  return p == Precision::BF16 ? bf16 : fp16;
}

bool use_onednn(Precision p) {
  switch (requested_engine()) {
    case Gemm16Engine::OneDNN: return true;
    case Gemm16Engine::Convert: return false;
    case Gemm16Engine::Auto: break;
  }
  return onednn_usable(p);
}

// Scratch for the packed operands, reused across calls (one thread issues GEMMs).
template <class T>
T* scratch(std::vector<T>& buf, std::size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// An operand element as a 16-bit GEMM in p reads it: its 16-bit bits (oneDNN) or the
// fp32 value of those bits (convert). An element stored in 16 bits is already rounded.
struct To16 {
  Precision p;
  std::uint16_t operator()(float f) const { return to_16bit(p, f); }
  std::uint16_t operator()(std::uint16_t h) const { return h; }
};
struct Rounded {
  Precision p;
  float operator()(float f) const { return round_to(p, f); }
  float operator()(std::uint16_t h) const { return from_16bit(p, h); }
};

// [rows, cols] with leading dimension ld, converted, into [rows_pad, cols_pad] (dense),
// the padding zero: zeros add nothing to a product.
template <class Out, class Src, class F>
void pack_padded(const Src* src, int rows, int cols, int ld, int rows_pad, int cols_pad, Out* dst, F&& convert) {
  for (int r = 0; r < rows; ++r) {
    const Src* s = src + std::ptrdiff_t(r) * ld;
    Out* d = dst + std::ptrdiff_t(r) * cols_pad;
    for (int c = 0; c < cols; ++c) d[c] = convert(s[c]);
    for (int c = cols; c < cols_pad; ++c) d[c] = Out(0);
  }
  for (int r = rows; r < rows_pad; ++r)
    for (int c = 0; c < cols_pad; ++c) dst[std::ptrdiff_t(r) * cols_pad + c] = Out(0);
}

// A stored [rows, cols] matrix with leading dimension ld, rounded and packed densely.
template <class Out, class Src, class F>
void pack(const Src* src, int rows, int cols, int ld, Out* dst, F&& convert) {
  pack_padded(src, rows, cols, ld, rows, cols, dst, convert);
}

// Both operands packed as stored (A [m,k] or [k,m] when transposed, B [k,n] or [n,k]),
// each element through `convert`, into buffers reused across calls (one thread issues
// GEMMs). Their leading dimensions are then the stored row lengths.
template <class T>
struct Packed {
  const T *a, *b;
  int lda, ldb;
};
template <class T, class TA, class TB, class F>
Packed<T> pack_operands(Op op_a, Op op_b, int m, int n, int k, const TA* a, int lda, const TB* b, int ldb,
                        std::vector<T>& abuf, std::vector<T>& bbuf, F&& convert) {
  const int a_rows = op_a == Op::N ? m : k, a_cols = op_a == Op::N ? k : m;
  const int b_rows = op_b == Op::N ? k : n, b_cols = op_b == Op::N ? n : k;
  T* pa = scratch(abuf, std::size_t(a_rows) * a_cols);
  T* pb = scratch(bbuf, std::size_t(b_rows) * b_cols);
  pack(a, a_rows, a_cols, lda, pa, convert);
  pack(b, b_rows, b_cols, ldb, pb, convert);
  return {pa, pb, a_cols, b_cols};
}

// A dimension rounded up to one of 8 steps per power of two (at most 1/8 more; kept
// below 32). oneDNN JIT-compiles a kernel for every new shape, ~0.4-0.9 ms here, more
// than a typical expert GEMM itself, and the routing changes the experts' row counts
// (m, and k of the weight gradients) every step: without this nearly every expert GEMM
// compiled anew.
int shape_bucket(int x) {
  if (x < 32) return x;
  int log2 = 0;
  while ((2 << log2) <= x) ++log2;
  const int step = 1 << (log2 - 3);
  return (x + step - 1) / step * step;
}

template <class TA, class TB>
void gemm_onednn(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const TA* a, int lda,
                 const TB* b, int ldb, float beta, float* c, int ldc) {
  if (!plugin().matmul) throw std::runtime_error("oneDNN is not available: " + plugin().error);
  static std::vector<std::uint16_t> abuf, bbuf;
  static std::vector<float> cbuf;
  const int mp = shape_bucket(m), kp = shape_bucket(k);
  const To16 convert{p};
  // A as stored ([m, k], or [k, m] transposed) and B ([k, n], or [n, k]), padded in m and k.
  std::uint16_t* pa = scratch(abuf, std::size_t(mp) * kp);
  std::uint16_t* pb = scratch(bbuf, std::size_t(kp) * n);
  if (op_a == Op::N) pack_padded(a, m, k, lda, mp, kp, pa, convert);
  else pack_padded(a, k, m, lda, kp, mp, pa, convert);
  if (op_b == Op::N) pack_padded(b, k, n, ldb, kp, n, pb, convert);
  else pack_padded(b, n, k, ldb, n, kp, pb, convert);
  // Padded rows of C land in scratch: C's rows there first when beta reads them.
  float* pc = c;
  int ldpc = ldc;
  if (mp != m) {
    pc = scratch(cbuf, std::size_t(mp) * n), ldpc = n;
    for (int r = 0; r < mp; ++r)
      for (int j = 0; j < n; ++j) pc[std::ptrdiff_t(r) * n + j] = beta != 0.0f && r < m ? c[std::ptrdiff_t(r) * ldc + j] : 0.0f;
  }
  char err[256] = "";
  if (plugin().matmul(p == Precision::BF16 ? 1 : 2, op_a == Op::T, op_b == Op::T, mp, n, kp, alpha, pa, pb, beta, pc,
                      ldpc, err, sizeof err) != 0)
    throw std::runtime_error(std::string("oneDNN matmul failed: ") + err);
  if (mp != m)
    for (int r = 0; r < m; ++r)
      std::copy(pc + std::ptrdiff_t(r) * n, pc + std::ptrdiff_t(r) * n + n, c + std::ptrdiff_t(r) * ldc);
}

template <class TA, class TB>
void gemm_convert(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const TA* a, int lda,
                  const TB* b, int ldb, float beta, float* c, int ldc) {
  static std::vector<float> abuf, bbuf;
  const auto ops = pack_operands(op_a, op_b, m, n, k, a, lda, b, ldb, abuf, bbuf, Rounded{p});
  gemm<float>(op_a, op_b, m, n, k, alpha, ops.a, ops.lda, ops.b, ops.ldb, beta, c, ldc);
}

// A 16-bit GEMM (p != FP32) on either engine, A and B each as fp32 or as stored
// 16-bit values.
template <class TA, class TB>
void gemm_16bit(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const TA* a, int lda,
                const TB* b, int ldb, float beta, float* c, int ldc) {
  if (p == Precision::FP32) throw std::invalid_argument("gemm: a 16-bit operand needs a bf16 or fp16 GEMM, not fp32");
  check_gemm_args(op_a, op_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  // An empty product only scales C: the fp32 path does that without reading A or B.
  if (k == 0) return gemm<float>(op_a, op_b, m, n, k, alpha, nullptr, lda, nullptr, ldb, beta, c, ldc);
  if (use_onednn(p))
    gemm_onednn(p, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    gemm_convert(p, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class TA>
void gemm_grouped_16bit(Precision p, Op op_a, Op op_b, float alpha, const std::vector<GemmDesc<float, TA>>& group,
                        float beta) {
  for (const auto& g : group) {
    if (g.m == 0 || g.n == 0) continue;  // as the fp32 gemm_grouped
    gemm(p, op_a, op_b, g.m, g.n, g.k, alpha, g.a, g.lda, g.b, g.ldb, beta, g.c, g.ldc);
  }
}

}  // namespace

void set_gemm16_engine(Gemm16Engine e) { requested_engine() = e; }

void set_gemm16_threads(int n) {
  onednn_threads() = n;
  if (plugin().set_threads) plugin().set_threads(n);
}

bool gemm16_uses_onednn(Precision p) { return p != Precision::FP32 && use_onednn(p); }

std::string gemm16_engine_error(Gemm16Engine e, Precision p) {
  if (e != Gemm16Engine::OneDNN || p == Precision::FP32 || onednn_usable(p)) return "";
  if (!plugin().kernel) return "oneDNN is not available (" + plugin().error + "): use auto or convert";
  return std::string("oneDNN has no ") + precision_name(p) + " matmul kernel for this CPU (it would run '" +
         onednn_kernel(p) + "', its reference loop); " + precision_name(p) +
         (p == Precision::BF16 ? " needs AVX512-BF16 or AMX" : " needs AVX512-FP16 or AMX-FP16") +
         ": use auto or convert";
}

std::string gemm16_description(Precision p) {
  if (p == Precision::FP32) return "fp32 (OpenBLAS sgemm)";
  if (use_onednn(p))
    return std::string("oneDNN ") + precision_name(p) + " matmul (" + onednn_kernel(p) + "), fp32 accumulation";
  return std::string("OpenBLAS sgemm on ") + precision_name(p) + "-rounded operands" +
         (requested_engine() == Gemm16Engine::Convert ? " (requested)"
          : plugin().kernel                          ? " (oneDNN has no kernel for this CPU)"
                                                     : " (oneDNN not available: " + plugin().error + ")");
}

void gemm(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  if (p == Precision::FP32) return gemm<float>(op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  gemm_16bit(p, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const std::uint16_t* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  gemm_16bit(p, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class TA, class TB>
void gemm_strided_batched(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const TA* a, int lda,
                          std::int64_t stride_a, const TB* b, int ldb, std::int64_t stride_b, float beta, float* c,
                          int ldc, std::int64_t stride_c, int batch) {
  if (batch < 0) throw std::invalid_argument("gemm_strided_batched: negative batch");
  for (int i = 0; i < batch; ++i)
    gemm_16bit(p, op_a, op_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c,
               ldc);
}
#define FURNACE_INSTANTIATE_MIXED(TA, TB)                                                                      \
  template void gemm_strided_batched<TA, TB>(Precision, Op, Op, int, int, int, float, const TA*, int, std::int64_t, \
                                             const TB*, int, std::int64_t, float, float*, int, std::int64_t, int);
FURNACE_INSTANTIATE_MIXED(std::uint16_t, float)
FURNACE_INSTANTIATE_MIXED(float, std::uint16_t)
FURNACE_INSTANTIATE_MIXED(std::uint16_t, std::uint16_t)
#undef FURNACE_INSTANTIATE_MIXED

void gemm_strided_batched(Precision p, Op op_a, Op op_b, int m, int n, int k, float alpha, const float* a,
                          int lda, std::int64_t stride_a, const float* b, int ldb, std::int64_t stride_b,
                          float beta, float* c, int ldc, std::int64_t stride_c, int batch) {
  if (batch < 0) throw std::invalid_argument("gemm_strided_batched: negative batch");
  for (int i = 0; i < batch; ++i)
    gemm(p, op_a, op_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
}

void gemm_grouped(Precision p, Op op_a, Op op_b, float alpha, const std::vector<GemmDesc<float>>& group,
                  float beta) {
  gemm_grouped_16bit(p, op_a, op_b, alpha, group, beta);
}

void gemm_grouped(Precision p, Op op_a, Op op_b, float alpha,
                  const std::vector<GemmDesc<float, std::uint16_t>>& group, float beta) {
  gemm_grouped_16bit(p, op_a, op_b, alpha, group, beta);
}

}  // namespace furnace::kernels
