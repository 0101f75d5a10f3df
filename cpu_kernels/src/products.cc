// Weight products of a decode step on the CPU, as XLA FFI handlers (cpu_kernels/products.py).
//
// A decode step multiplies a few rows of activations by every weight matrix once. XLA:CPU reads a row-major
// weight on one thread, packs it again for every product of a few rows, and turns a bfloat16 product with
// one row into a float32 one over a converted copy of the weights. These kernels read weights that were
// packed once into panels of 32 columns (`Pack` below, called once per parameter version by the sampler:
// cpu_kernels.backend.pack_weights), so every product streams its weights contiguously, split over XLA's
// intra-op threads, with the rows' accumulators in registers. They accumulate in float32.
//
//   PackedF32:  y[M, 32P] = x[M, K] . w,  w [P, K, 32]         float32
//   PackedBf16: y[M, 32P] = x[M, K] . w,  w [P, K/2, 32, 2]    bfloat16, row pairs interleaved per column
//                                          (the operand layout of vdpbf16ps); x bfloat16 [M, K], K even
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "amx.h"
#include "threads.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using qrr::kPanel;
using qrr::ParallelFor;

template <ffi::DataType T, typename E>
ffi::Error Packed(ffi::ThreadPool pool, ffi::Buffer<T> x, ffi::Buffer<T> w, ffi::ResultBuffer<ffi::F32> y) {
  constexpr bool kPairs = T == ffi::DataType::BF16;
  const auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != (kPairs ? 4u : 3u))
    return ffi::Error::InvalidArgument("products: x must be [M, K] and w packed panels");
  const int64_t M = xd[0], K = xd[1], P = wd[0];
  if ((kPairs ? 2 * wd[1] : wd[1]) != K || wd[2] != kPanel || (kPairs && wd[3] != 2))
    return ffi::Error::InvalidArgument("products: the packed weight does not match x's contracting size");
  const E* xp = reinterpret_cast<const E*>(x.typed_data());
  const E* wp = reinterpret_cast<const E*>(w.typed_data());
  float* yp = y->typed_data();
  const int64_t ldy = P * kPanel;
  qrr::Team team(pool, pool.num_threads() - 1);
  team.ForRanges(P, [=](int64_t p0, int64_t p1) { qrr::ProductRange<E>(xp, M, K, wp, p0, p1, yp, ldy); });
  return ffi::Error::Success();
}

// Packs w [K, N] (transposed: e [N, K]) into panels of kPanel columns, zero beyond column N: float32 [P, K, 32];
// bfloat16 [P, Kp/2, 32, 2], rows k and k+1 interleaved per column, zero beyond row K (Kp = K rounded up to
// even). Whole panels move as vectors: a row-major weight a (pair of) row(s) at a time, one part of the rows
// per thread; a transposed one by gathers down 16 of its rows at a time, one part of the panels per thread.
// The rest (a last partial panel, an odd K) element by element.
template <ffi::DataType T, typename E>
ffi::Error Pack(ffi::ThreadPool pool, ffi::Buffer<T> w, ffi::ResultBuffer<T> out, bool transposed) {
  constexpr bool kPairs = T == ffi::DataType::BF16;
  const auto wd = w.dimensions(), od = out->dimensions();
  if (wd.size() != 2) return ffi::Error::InvalidArgument("products: pack takes a 2-D weight");
  const int64_t K = transposed ? wd[1] : wd[0], N = transposed ? wd[0] : wd[1], P = od[0];
  const int64_t Kp = kPairs ? 2 * od[1] : od[1];
  if (P * kPanel < N || Kp < K || Kp > K + 1)
    return ffi::Error::InvalidArgument("products: pack output does not fit the weight");
  const E* src = reinterpret_cast<const E*>(w.typed_data());
  E* dst = reinterpret_cast<E*>(out->typed_data());
  const int64_t whole = Kp == K ? N / kPanel : 0;  // panels moved as vectors
  // element (k, n) of the weight, zero outside it; its place in the packed output
  auto at = [=](int64_t k, int64_t n) { return k < K && n < N ? src[transposed ? n * K + k : k * N + n] : E{}; };
  auto place = [=](int64_t k, int64_t n) {
    const int64_t p = n / kPanel, j = n % kPanel;
    return kPairs ? p * Kp * kPanel + (k / 2) * 2 * kPanel + 2 * j + k % 2 : p * Kp * kPanel + k * kPanel + j;
  };
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (!transposed) {
    const int64_t steps = kPairs ? Kp / 2 : Kp;
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(steps, 8 * threads));
    const __m512i lo_idx = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    const __m512i hi_idx = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    ParallelFor(pool, parts, [=](int64_t part) {
      for (int64_t i = steps * part / parts; i < steps * (part + 1) / parts; ++i) {
        const int64_t k = kPairs ? 2 * i : i;
        for (int64_t p = 0; p < whole; ++p) {
          E* panel_row = dst + p * Kp * kPanel + k * kPanel;  // for pairs: rows k, k+1 interleaved, 64 values
          if (kPairs) {
            const __m512i a = _mm512_loadu_si512(src + k * N + p * kPanel);
            const __m512i b = _mm512_loadu_si512(src + (k + 1) * N + p * kPanel);
            const __m512i lo = _mm512_unpacklo_epi16(a, b), hi = _mm512_unpackhi_epi16(a, b);  // per 128-bit lane
            _mm512_storeu_si512(panel_row, _mm512_permutex2var_epi64(lo, lo_idx, hi));
            _mm512_storeu_si512(panel_row + 32, _mm512_permutex2var_epi64(lo, hi_idx, hi));
          } else {
            std::memcpy(panel_row, src + k * N + p * kPanel, kPanel * sizeof(E));
          }
        }
        for (int64_t kk = k; kk < k + (kPairs ? 2 : 1); ++kk)
          for (int64_t n = whole * kPanel; n < P * kPanel; ++n) dst[place(kk, n)] = at(kk, n);
      }
    });
  } else {
    // a 32-bit word: one float32, or the bfloat16 pair (k, k+1) that sits together in a row of e
    const int64_t words = kPairs ? K / 2 : K, parts = std::max<int64_t>(1, std::min<int64_t>(P, 8 * threads));
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int>(words)));
    ParallelFor(pool, parts, [=](int64_t part) {
      for (int64_t p = P * part / parts; p < P * (part + 1) / parts; ++p) {
        if (p < whole) {
          const int* base = reinterpret_cast<const int*>(src + p * kPanel * K);
          int* panel = reinterpret_cast<int*>(dst + p * Kp * kPanel);
          for (int64_t i = 0; i < words; ++i)
            for (int half = 0; half < 2; ++half)
              _mm512_storeu_si512(panel + i * kPanel + 16 * half,
                                  _mm512_i32gather_epi32(rows, base + 16 * half * words + i, 4));
          continue;
        }
        for (int64_t k = 0; k < Kp; ++k)
          for (int64_t n = p * kPanel; n < (p + 1) * kPanel; ++n) dst[place(k, n)] = at(k, n);
      }
    });
  }
  return ffi::Error::Success();
}

}  // namespace

#define QRR_PACK_BIND(T) \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<T>>().Ret<ffi::Buffer<T>>().Attr<bool>("transposed")

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrPackF32, (Pack<ffi::F32, float>), QRR_PACK_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrPackBf16, (Pack<ffi::BF16, uint16_t>), QRR_PACK_BIND(ffi::BF16));

#define QRR_BIND(T) \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<T>>().Arg<ffi::Buffer<T>>().Ret<ffi::Buffer<ffi::F32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrPackedF32, (Packed<ffi::F32, float>), QRR_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrPackedBf16, (Packed<ffi::BF16, uint16_t>), QRR_BIND(ffi::BF16));

// Whether bfloat16 products of many rows run on AMX tiles in this process (amx.h): for cpu_kernels.build.
extern "C" int QrrAmxPermitted() { return qrr::AmxPermitted() ? 1 : 0; }
