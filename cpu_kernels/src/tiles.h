// The register tiles of a product with packed weights (shared by products.cc and layer.cc).
//
// Weights are packed once into panels of 32 columns (products.cc: Pack): float32 [P, K, 32]; bfloat16
// [P, K/2, 32, 2] with rows k and k+1 interleaved per column (the operand layout of vdpbf16ps).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace qrr {

constexpr int64_t kPanel = 32;  // columns per panel: two 16-float registers
constexpr int kTileRows = 8;    // rows whose accumulators (2 registers each) stay in registers at once
// Tiles ask for panel bytes ahead of their loads into L2 (prefetcht1): two lines at `at + step * k` in each step
// of their loop over k (a row pair in bfloat16). Without it a product of one row read its weights at ~75 % of a plain
// read loop on a 2-core VM (docs/benchmarks/history.md): the hardware prefetcher stops at each 4 KB page.
// One pass over a panel (8 rows or fewer) asks kPrefetchBytes ahead of itself (8-32 KB measured alike); several
// passes (more rows) each ask for their share of the next panel, whose first pass would otherwise wait on memory
// while the later passes only compute.
constexpr int64_t kPrefetchBytes = 16384;
struct Ahead {
  const char* at;
  int64_t step;
};
// prefetcht1 of the line at p, as an instruction the compiler keeps: GCC 12 dropped two loops of _mm_prefetch
// (attend.h: PrefetchVisible) once they were inlined together, a prefetch having no effect it must keep
inline void PrefetchLine(const void* p) { asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p))); }
inline void PrefetchL2(Ahead a, int64_t i) {
  _mm_prefetch(a.at + a.step * i, _MM_HINT_T1);
  _mm_prefetch(a.at + a.step * i + 64, _MM_HINT_T1);
}

// y[r, 0:32] = x[r, :] . panel for r < R; panel [K, 32] float32, y rows ldy apart.
template <int R>
void TileF32(const float* x, int64_t K, const float* panel, float* y, int64_t ldy, Ahead ahead) {
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    PrefetchL2(ahead, k);
    const __m512 w0 = _mm512_loadu_ps(panel + k * kPanel), w1 = _mm512_loadu_ps(panel + k * kPanel + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * K + k]);
      acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(y + r * ldy, acc[r][0]);
    _mm512_storeu_ps(y + r * ldy + 16, acc[r][1]);
  }
}

// The same for bfloat16: panel [K/2, 32, 2], x [R, K] bfloat16 (K even); each step takes two rows of the
// panel (k, k+1) and the pair (x[r, k], x[r, k+1]) as one 32-bit broadcast.
template <int R>
void TileBf16(const uint16_t* x, int64_t K, const uint16_t* panel, float* y, int64_t ldy, Ahead ahead) {
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 2) {
    PrefetchL2(ahead, k);
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + k * kPanel);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + k * kPanel + 32);
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = (__m512bh)_mm512_broadcastd_epi32(_mm_loadu_si32(x + r * K + k));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], xv, w0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], xv, w1);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(y + r * ldy, acc[r][0]);
    _mm512_storeu_ps(y + r * ldy + 16, acc[r][1]);
  }
}

// All M rows against one panel, kTileRows at a time (the panel stays in L1/L2 between tiles).
template <typename T, template <int> class Tile>
void Panel(const T* x, int64_t M, int64_t K, const T* panel, float* y, int64_t ldy) {
  const int64_t passes = (M + kTileRows - 1) / kTileRows, bytes = K * kPanel * sizeof(T);
  const char* here = reinterpret_cast<const char*>(panel);
  for (int64_t m = 0, pass = 0; m < M; m += kTileRows, ++pass) {
    const Ahead ahead = passes == 1 ? Ahead{here + kPrefetchBytes, bytes / K}
                                    : Ahead{here + bytes + bytes * pass / passes, bytes / passes / K};
    const T* xm = x + m * K;
    float* ym = y + m * ldy;
    switch (std::min<int64_t>(kTileRows, M - m)) {
      case 1: Tile<1>::Run(xm, K, panel, ym, ldy, ahead); break;
      case 2: Tile<2>::Run(xm, K, panel, ym, ldy, ahead); break;
      case 3: Tile<3>::Run(xm, K, panel, ym, ldy, ahead); break;
      case 4: Tile<4>::Run(xm, K, panel, ym, ldy, ahead); break;
      case 5: Tile<5>::Run(xm, K, panel, ym, ldy, ahead); break;
      case 6: Tile<6>::Run(xm, K, panel, ym, ldy, ahead); break;
      case 7: Tile<7>::Run(xm, K, panel, ym, ldy, ahead); break;
      default: Tile<8>::Run(xm, K, panel, ym, ldy, ahead); break;
    }
  }
}
template <int R>
struct F32Tile {
  static void Run(const float* x, int64_t K, const float* p, float* y, int64_t ldy, Ahead a) {
    TileF32<R>(x, K, p, y, ldy, a);
  }
};
template <int R>
struct Bf16Tile {
  static void Run(const uint16_t* x, int64_t K, const uint16_t* p, float* y, int64_t ldy, Ahead a) {
    TileBf16<R>(x, K, p, y, ldy, a);
  }
};

template <typename E>
struct TileOf;
template <>
struct TileOf<float> {
  template <int R>
  using Tile = F32Tile<R>;
};
template <>
struct TileOf<uint16_t> {
  template <int R>
  using Tile = Bf16Tile<R>;
};

// y[:, 32p : 32(p+1)] = x[M, K] . panel p of w, for p in [p0, p1): float32 or bfloat16 (uint16_t) elements.
template <typename E>
void PanelRange(const E* x, int64_t M, int64_t K, const E* w, int64_t p0, int64_t p1, float* y, int64_t ldy) {
  for (int64_t p = p0; p < p1; ++p)
    Panel<E, TileOf<E>::template Tile>(x, M, K, w + p * K * kPanel, y + p * kPanel, ldy);
}

}  // namespace qrr
