// bfloat16 products of many rows on AMX tiles (Intel Sapphire Rapids and later), over the same packed panels as
// the vector tiles of tiles.h.
//
// vdpbf16ps does 32 multiply-adds per instruction; one AMX tdpbf16ps does 16 x 16 x 32. From 16 rows on, a decode
// step with bfloat16 weights is bound by those instructions, not by reading the weights (on the 2-core VM of
// docs/benchmarks/history.md: 32 rows 50 -> 14 ms over SmolLM2's weight chain, 128 rows 194 -> 34 ms).
//
// A panel [K/2, 32, 2] (rows k, k+1 interleaved per column) is already the operand layout of tdpbf16ps: its columns
// 0-15 and 16-31 are two B tiles of 16 pair-rows of 64 bytes, 128 bytes apart. x [M, K] row-major bfloat16 gives the
// A tiles (16 rows x 32 values), y the C tiles (16 x 16 float32). The rows go in blocks of 16 with one last block of
// 1-16 rows, which has tiles of its own height, so no row is padded or copied.
//
// Linux hands out the tile registers only on request (arch_prctl ARCH_REQ_XCOMP_PERM), once per process; where the
// compiler, the CPU or the kernel does not allow them, or QRR_CPU_AMX=0, AmxUsable is false and the vector tiles
// run instead.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "tiles.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <sys/syscall.h>
#include <unistd.h>
#define QRR_AMX 1
#endif

namespace qrr {

constexpr int64_t kAmxMinRows = 8;  // fewer rows: the vector tiles were as fast (1-8 rows measured)
constexpr int64_t kAmxK = 32;       // values of k per A tile row (64 bytes)
constexpr int64_t kAmxGroupBytes = 256 * 1024;  // rows of x that pass over a thread's panels together

// Whether this process may use the tile registers (asked once).
inline bool AmxPermitted() {
#ifdef QRR_AMX
  static const bool permitted = [] {
    const char* off = std::getenv("QRR_CPU_AMX");
    if (off != nullptr && std::strcmp(off, "0") == 0) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return permitted;
#else
  return false;
#endif
}

// Whether a product of M rows with a contracting size K runs on the tiles.
inline bool AmxUsable(int64_t M, int64_t K) { return M >= kAmxMinRows && K % kAmxK == 0 && AmxPermitted(); }

#ifdef QRR_AMX
// Tiles: 0, 1 the panel's two column halves (B); 2 a block of 16 rows of x (A) and 4, 5 its outputs (C); 3 the last
// block of `last` rows and 6, 7 its outputs.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline void ConfigureTiles(int64_t last) {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.colsb[t] = 64;
  c.rows[0] = c.rows[1] = c.rows[2] = c.rows[4] = c.rows[5] = 16;
  c.rows[3] = c.rows[6] = c.rows[7] = static_cast<uint8_t>(last);
  _tile_loadconfig(&c);
}

// The 2 KB of panel one step of k reads (at b), kPrefetchBytes ahead, as the vector tiles ask (tiles.h)
inline void PrefetchStepAhead(const uint16_t* b) {
  for (int line = 0; line < 32; ++line) PrefetchLine(reinterpret_cast<const char*>(b) + kPrefetchBytes + 64 * line);
}

// One pass over the panel for the 16-row block at x (if `full`) and/or the last block at x_last; outputs at y, y_last.
inline void AmxPass(const uint16_t* x, const uint16_t* x_last, int64_t K, const uint16_t* panel, float* y,
                    float* y_last, int64_t ldy, bool full, bool last) {
  const int64_t lda = K * 2;  // bytes between rows of x
  if (full) {
    _tile_zero(4);
    _tile_zero(5);
  }
  if (last) {
    _tile_zero(6);
    _tile_zero(7);
  }
  for (int64_t k = 0; k < K; k += kAmxK) {
    const uint16_t* b = panel + k * kPanel;  // 16 pair-rows, 128 bytes each
    PrefetchStepAhead(b);
    _tile_loadd(0, b, 2 * kPanel * 2);
    _tile_loadd(1, b + kPanel, 2 * kPanel * 2);
    if (full) {
      _tile_loadd(2, x + k, lda);
      _tile_dpbf16ps(4, 2, 0);
      _tile_dpbf16ps(5, 2, 1);
    }
    if (last) {
      _tile_loadd(3, x_last + k, lda);
      _tile_dpbf16ps(6, 3, 0);
      _tile_dpbf16ps(7, 3, 1);
    }
  }
  if (full) {
    _tile_stored(4, y, ldy * 4);
    _tile_stored(5, y + 16, ldy * 4);
  }
  if (last) {
    _tile_stored(6, y_last, ldy * 4);
    _tile_stored(7, y_last + 16, ldy * 4);
  }
}

// One pass over the panel for two blocks of 16 rows (x, x + 16 K), tiles configured all 16 rows: A tiles 2, 3, B
// tiles 0, 1, outputs 4, 5 (first block) and 6, 7 (second).
inline void AmxPair(const uint16_t* x, int64_t K, const uint16_t* panel, float* y, int64_t ldy) {
  const int64_t lda = K * 2;
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  for (int64_t k = 0; k < K; k += kAmxK) {
    const uint16_t* b = panel + k * kPanel;
    PrefetchStepAhead(b);
    _tile_loadd(0, b, 2 * kPanel * 2);
    _tile_loadd(1, b + kPanel, 2 * kPanel * 2);
    _tile_loadd(2, x + k, lda);
    _tile_loadd(3, x + 16 * K + k, lda);
    _tile_dpbf16ps(4, 2, 0);
    _tile_dpbf16ps(5, 2, 1);
    _tile_dpbf16ps(6, 3, 0);
    _tile_dpbf16ps(7, 3, 1);
  }
  _tile_stored(4, y, ldy * 4);
  _tile_stored(5, y + 16, ldy * 4);
  _tile_stored(6, y + 16 * ldy, ldy * 4);
  _tile_stored(7, y + 16 * ldy + 16, ldy * 4);
}
#endif

// y[:, 32p : 32(p+1)] = x[M, K] . panel p of w for p in [p0, p1), on the tiles (AmxUsable(M, K) must hold).
inline void AmxPanelRange(const uint16_t* x, int64_t M, int64_t K, const uint16_t* w, int64_t p0, int64_t p1,
                          float* y, int64_t ldy) {
#ifdef QRR_AMX
  const int64_t blocks = (M + 15) / 16, last_rows = M - 16 * (blocks - 1);
  const uint16_t* x_last = x + 16 * (blocks - 1) * K;
  // Full blocks before the last go in pairs, each pair one pass over the panel with 2 x 2 tiles (4 loads for 4
  // tile products; one block at a time took 3 loads for 2), in groups whose rows of x fit kAmxGroupBytes: every
  // panel of the range passes under one group before the next, so that x stays in L2 while the panels stream.
  const int64_t full = blocks - 1, pairs = full / 2;
  const int64_t group = std::max<int64_t>(1, kAmxGroupBytes / (32 * K * 2));
  if (pairs > 0) {
    ConfigureTiles(16);
    for (int64_t g0 = 0; g0 < pairs; g0 += group) {
      const int64_t g1 = std::min(pairs, g0 + group);
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t q = g0; q < g1; ++q)
          AmxPair(x + 32 * q * K, K, w + p * K * kPanel, y + p * kPanel + 32 * q * ldy, ldy);
    }
  }
  // the last block, with an odd full block before it riding along in the same pass
  ConfigureTiles(last_rows);
  const bool odd = full % 2 == 1;
  for (int64_t p = p0; p < p1; ++p) {
    float* yp = y + p * kPanel;
    AmxPass(odd ? x + 16 * (full - 1) * K : x, x_last, K, w + p * K * kPanel, odd ? yp + 16 * (full - 1) * ldy : yp,
            yp + 16 * (blocks - 1) * ldy, ldy, odd, true);  // (x, yp unused when not odd)
  }
  _tile_release();
#else
  (void)x, (void)M, (void)K, (void)w, (void)p0, (void)p1, (void)y, (void)ldy;
  std::abort();  // AmxUsable is false without the tiles
#endif
}

// y[:, 32p : 32(p+1)] = x[M, K] . panel p of w for p in [p0, p1): on the AMX tiles where they serve (bfloat16, see
// AmxUsable), else on the vector tiles. The product kernels (products.cc, layer.cc) call this.
template <typename E>
void ProductRange(const E* x, int64_t M, int64_t K, const E* w, int64_t p0, int64_t p1, float* y, int64_t ldy) {
  if constexpr (std::is_same_v<E, uint16_t>) {
    if (AmxUsable(M, K)) return AmxPanelRange(x, M, K, w, p0, p1, y, ldy);
  }
  PanelRange<E>(x, M, K, w, p0, p1, y, ldy);
}

}  // namespace qrr
