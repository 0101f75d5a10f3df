// Attention of one query position per (row, kv head) over a cache, in float32 (shared by cpu_attention.cc and
// cpu_layer.cc): keys [h, S] (slot axis minor), values [S, h], float32 or bfloat16 (uint16_t) elements.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace qrr {

inline float ToFloat(float v) { return v; }
inline float ToFloat(uint16_t v) {  // bfloat16: the high half of a float32
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// e^x for x <= 0 (softmax after subtracting the max): 2^(x log2 e) = 2^n 2^f, |f| <= 1/2, 2^f by its Taylor
// series to degree 7 (relative error < 1e-8), 2^n by vscalefps (underflows to 0 for very negative x).
inline __m512 Exp(__m512 x) {
  const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.f)), _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945309f));  // 2^(t-n) = e^f
  __m512 p = _mm512_set1_ps(1.f / 5040);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 720));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 Load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 Load16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
inline __mmask16 Tail(int64_t left) { return left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1); }

constexpr int kRows = 4;  // query heads of a group at once
constexpr int kVecs = 4;  // 16-float vectors of slots (scores) or of head dims (output) at once
                          // kRows x kVecs accumulators stay in registers

template <typename E>
void AttendOne(const E* q, const E* keys, const E* values, const bool* mask, float* out, int64_t G, int64_t h,
               int64_t S, std::vector<float>& qf, std::vector<float>& scores) {
  int64_t lo = 0, hi = S - 1;
  while (lo < S && !mask[lo]) ++lo;
  while (hi >= lo && !mask[hi]) --hi;
  if (lo > hi) {
    std::fill(out, out + G * h, 0.f);
    return;
  }
  const int64_t n = hi - lo + 1, Gp = (G + kRows - 1) / kRows * kRows, stride = (n + 15) / 16 * 16;
  qf.assign(Gp * h, 0.f);  // q in float32, scaled, zero rows up to a multiple of kRows
  const float scale = 1.f / std::sqrt(static_cast<float>(h));
  for (int64_t i = 0; i < G * h; ++i) qf[i] = ToFloat(q[i]) * scale;
  scores.resize(Gp * stride);
  // scores[g, s] = q[g] . keys[:, lo + s], kRows heads x kVecs * 16 slots at a time, one pass over keys per tile
  for (int64_t g0 = 0; g0 < Gp; g0 += kRows)
    for (int64_t s0 = 0; s0 < n; s0 += 16 * kVecs) {
      __m512 acc[kRows][kVecs];
      __mmask16 m[kVecs];
      for (int j = 0; j < kVecs; ++j) m[j] = s0 + 16 * j < n ? Tail(n - s0 - 16 * j) : 0;
      for (int r = 0; r < kRows; ++r)
        for (int j = 0; j < kVecs; ++j) acc[r][j] = _mm512_setzero_ps();
      for (int64_t d = 0; d < h; ++d) {
        const E* row = keys + d * S + lo + s0;
        __m512 kv[kVecs];
        for (int j = 0; j < kVecs; ++j) kv[j] = Load16(row + 16 * j, m[j]);
        for (int r = 0; r < kRows; ++r) {
          const __m512 qv = _mm512_set1_ps(qf[(g0 + r) * h + d]);
          for (int j = 0; j < kVecs; ++j) acc[r][j] = _mm512_fmadd_ps(qv, kv[j], acc[r][j]);
        }
      }
      for (int r = 0; r < kRows; ++r)
        for (int j = 0; j < kVecs; ++j)
          if (s0 + 16 * j < stride) _mm512_storeu_ps(scores.data() + (g0 + r) * stride + s0 + 16 * j, acc[r][j]);
    }
  // softmax over the visible slots, in place
  for (int64_t g = 0; g < G; ++g) {
    float* sc = scores.data() + g * stride;
    float top = -INFINITY;
    for (int64_t s = 0; s < n; ++s) {
      sc[s] = mask[lo + s] ? sc[s] : -INFINITY;
      top = std::max(top, sc[s]);
    }
    std::fill(sc + n, sc + stride, -INFINITY);
    __m512 total = _mm512_setzero_ps();
    for (int64_t s = 0; s < stride; s += 16) {
      const __m512 x = _mm512_loadu_ps(sc + s);
      const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ),
                                           Exp(_mm512_sub_ps(x, _mm512_set1_ps(top))));
      _mm512_storeu_ps(sc + s, e);
      total = _mm512_add_ps(total, e);
    }
    const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(total));
    for (int64_t s = 0; s < stride; s += 16) _mm512_storeu_ps(sc + s, _mm512_mul_ps(_mm512_loadu_ps(sc + s), inv));
  }
  std::fill(scores.begin() + G * stride, scores.end(), 0.f);  // the padding heads
  // out[g] = sum_s p[g, s] values[lo + s], kRows heads x kVecs * 16 dims at a time
  for (int64_t g0 = 0; g0 < G; g0 += kRows)
    for (int64_t d0 = 0; d0 < h; d0 += 16 * kVecs) {
      __m512 acc[kRows][kVecs];
      __mmask16 m[kVecs];
      for (int j = 0; j < kVecs; ++j) m[j] = d0 + 16 * j < h ? Tail(h - d0 - 16 * j) : 0;
      for (int r = 0; r < kRows; ++r)
        for (int j = 0; j < kVecs; ++j) acc[r][j] = _mm512_setzero_ps();
      for (int64_t s = 0; s < n; ++s) {
        const E* row = values + (lo + s) * h + d0;
        __m512 vv[kVecs];
        for (int j = 0; j < kVecs; ++j) vv[j] = Load16(row + 16 * j, m[j]);
        for (int r = 0; r < kRows; ++r) {
          const __m512 p = _mm512_set1_ps(scores[(g0 + r) * stride + s]);
          for (int j = 0; j < kVecs; ++j) acc[r][j] = _mm512_fmadd_ps(p, vv[j], acc[r][j]);
        }
      }
      for (int r = 0; r < kRows && g0 + r < G; ++r)
        for (int j = 0; j < kVecs; ++j) _mm512_mask_storeu_ps(out + (g0 + r) * h + d0 + 16 * j, m[j], acc[r][j]);
    }
}

}  // namespace qrr
