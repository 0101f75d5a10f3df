// Weight products of a decode step on the CPU, as XLA FFI handlers (common/kernels/cpu_products.py).
//
// A decode step multiplies a few rows of activations by every weight matrix once: the cost is reading the
// weights. XLA:CPU reads them on one thread (~25 GB/s here), and turns a bfloat16 product with one row into
// a float32 one over a converted copy of the weights. These read the weights once, in their stored dtype,
// split over XLA's own intra-op threads, and accumulate in float32.
//
//   XwF32 / XwBf16:   y[M, N] = x[M, K] . w[K, N]      (w row-major: each thread reads a block of rows)
//   XwtF32 / XwtBf16: y[M, V] = x[M, K] . e[V, K]^T    (e row-major: a tied embedding read as the head)
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMaxRows = 16;  // the Python side routes larger products to XLA

inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) {  // bfloat16: the high half of a float32
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// acc[m, :] = sum over k in [k0, k1) of x[m, k] w[k, :]. Rows k0..k1 of w are one contiguous read.
template <typename W>
void XwRows(const float* x, const W* w, float* acc, int64_t M, int64_t K, int64_t N, int64_t k0, int64_t k1) {
  std::fill(acc, acc + M * N, 0.f);
  for (int64_t k = k0; k < k1; ++k) {
    const W* row = w + k * N;
    for (int64_t m = 0; m < M; ++m) {
      const float xv = x[m * K + k];
      float* a = acc + m * N;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) a[j] += xv * Load(row, j);
    }
  }
}

// y[m, v] = x[m, :] . e[v, :] for v in [v0, v1).
template <typename W>
void XwtRows(const float* x, const W* e, float* y, int64_t M, int64_t K, int64_t V, int64_t v0, int64_t v1) {
  for (int64_t v = v0; v < v1; ++v) {
    const W* row = e + v * K;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; ++k) s += xm[k] * Load(row, k);
      y[m * V + v] = s;
    }
  }
}

// fn(part) for every part in [0, parts), on the calling thread and XLA's intra-op threads. Parts are
// claimed from one counter, so the caller never waits for a task no thread has started: it runs every
// unclaimed part itself, then waits only for parts already running.
void ParallelFor(ffi::ThreadPool& pool, int64_t parts, std::function<void(int64_t)> fn) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t parts = 0;
    std::function<void(int64_t)> fn;
  };
  auto state = std::make_shared<State>();
  state->parts = parts;
  state->fn = std::move(fn);
  auto work = [](State* s) {
    for (int64_t p; (p = s->next.fetch_add(1)) < s->parts;) {
      s->fn(p);
      s->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), parts) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([state, work] { work(state.get()); });
  work(state.get());
  while (state->done.load(std::memory_order_acquire) < parts) _mm_pause();
}

template <ffi::DataType T, typename W, bool kTransposed>
ffi::Error Product(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<T> w,
                   ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2) return ffi::Error::InvalidArgument("cpu_products: x and w must be 2-D");
  const int64_t M = xd[0], K = xd[1];
  if (M > kMaxRows) return ffi::Error::InvalidArgument("cpu_products: more than 16 rows");
  if ((kTransposed ? wd[1] : wd[0]) != K) return ffi::Error::InvalidArgument("cpu_products: contracting sizes differ");
  const float* xp = x.typed_data();
  const W* wp = reinterpret_cast<const W*>(w.typed_data());
  float* yp = y->typed_data();
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (kTransposed) {
    const int64_t V = wd[0], parts = std::max<int64_t>(1, std::min<int64_t>(8 * threads, V / 256));
    ParallelFor(pool, parts, [=](int64_t p) { XwtRows<W>(xp, wp, yp, M, K, V, V * p / parts, V * (p + 1) / parts); });
  } else {
    // each part sums a block of rows into its own accumulator; part 0's is y
    const int64_t N = wd[1], parts = std::max<int64_t>(1, std::min<int64_t>(threads, K / 64));
    std::vector<float> partial((parts - 1) * M * N);
    float* pp = partial.data();
    ParallelFor(pool, parts, [=](int64_t p) {
      XwRows<W>(xp, wp, p == 0 ? yp : pp + (p - 1) * M * N, M, K, N, K * p / parts, K * (p + 1) / parts);
    });
    for (int64_t p = 1; p < parts; ++p) {
      const float* src = pp + (p - 1) * M * N;
#pragma omp simd
      for (int64_t i = 0; i < M * N; ++i) yp[i] += src[i];
    }
  }
  return ffi::Error::Success();
}

}  // namespace

#define QRR_BIND(T) \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<T>>().Ret<ffi::Buffer<ffi::F32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrXwF32, (Product<ffi::F32, float, false>), QRR_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrXwBf16, (Product<ffi::BF16, uint16_t, false>), QRR_BIND(ffi::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrXwtF32, (Product<ffi::F32, float, true>), QRR_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrXwtBf16, (Product<ffi::BF16, uint16_t, true>), QRR_BIND(ffi::BF16));
