// Attention of one query position per (row, kv head) over a cache, in float32 (shared by attention.cc and
// layer.cc). One (row, kv head)'s keys and values are S slots of h elements, float32 or bfloat16 (uint16_t),
// addressed through `Slots`: in the decoder's cache [B, S, K, h] one run K * h elements apart; in the engine's
// page pool [K, L, N, page, h] runs of `page` slots h elements apart, one page after another as the row's page
// table lists them.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tiles.h"

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

// Where slot s of one (row, kv head)'s keys (or values) lies: in page s >> shift, (s & mask) * ld elements from
// the page's start. A contiguous cache is one page (`Strided`).
template <typename E>
struct Slots {
  const E* const* pages;  // the first element of each page
  int shift;
  int64_t mask, ld;
  const E* at(int64_t s) const { return pages[s >> shift] + (s & mask) * ld; }
};
template <typename E>
Slots<E> Strided(const E* const* first, int64_t ld) {
  return {first, 62, (int64_t{1} << 62) - 1, ld};
}

constexpr int kRows = 4;  // query heads of a group at once, at most (the weighted sums)
constexpr int kVecs = 4;  // 16-float vectors of head dims at once (the weighted sums)
                          // kRows x kVecs accumulators stay in registers

// The cache lines of one (row, kv head)'s keys and values over slots [lo, hi], asked for (prefetcht1) a few at a
// time while another part computes: AttendOne feeds the next part's lines this way, so that reading the cache
// overlaps the scores and sums instead of waiting in a sweep before them. Slot by slot: its key's lines, then its
// value's. An empty feed asks for nothing.
class LineFeed {
 public:
  LineFeed() = default;
  template <typename E>
  LineFeed(const Slots<E>& keys, const Slots<E>& values, int64_t h, int64_t lo, int64_t hi)
      : keys_(reinterpret_cast<const char* const*>(keys.pages)),
        values_(reinterpret_cast<const char* const*>(values.pages)), shift_(keys.shift), mask_(keys.mask),
        row_bytes_(h * static_cast<int64_t>(sizeof(E))), ld_bytes_(keys.ld * static_cast<int64_t>(sizeof(E))),
        lo_(lo), slots_(hi - lo + 1) {
    Row(0);
  }
  // lines the feed holds in all: what a caller spreads over its loop
  int64_t lines() const { return 2 * slots_ * (row_bytes_ / 64 + 2); }
  void Step(int64_t n) {
    for (; n > 0 && at_ <= end_; --n) {
      PrefetchLine(reinterpret_cast<const void*>(at_));
      if ((at_ += 64) > end_) Row(row_ + 1);
    }
  }
  void Rest() { Step(INT64_MAX); }

 private:
  static constexpr uintptr_t kMask = 63;
  // the lines of row r: slot lo + r / 2's key (r even) or value (r odd); nothing past the last slot
  void Row(int64_t r) {
    row_ = r;
    if (r < 2 * slots_) {
      const int64_t s = lo_ + r / 2;
      const uintptr_t first = reinterpret_cast<uintptr_t>(((r & 1) ? values_ : keys_)[s >> shift_]) +
                              static_cast<uintptr_t>((s & mask_) * ld_bytes_);
      at_ = first & ~kMask, end_ = (first + row_bytes_ - 1) & ~kMask;
    } else {
      at_ = 1, end_ = 0;
    }
  }
  const char* const* keys_ = nullptr;
  const char* const* values_ = nullptr;
  int shift_ = 0;
  int64_t mask_ = 0, row_bytes_ = 0, ld_bytes_ = 0, lo_ = 0, slots_ = 0, row_ = 0;
  uintptr_t at_ = 1, end_ = 0;
};

// The 16 sums of v[0..15]'s lanes, as one vector (lane j: the sum of v[j]): a transpose-add tree, 15 adds.
inline __m512 Sum16(const __m512* v) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane L: [x0+x2, y0+y2, x1+x3, y1+y3] of x = v[2i], y = v[2i+1]
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per lane L: the sums over L of v[4i], ..., v[4i+3]
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  const __m512 d01 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 d23 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d01, d23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(d01, d23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// scores[r, s] = q[r] . key(lo + s) for the R heads (q float32, scaled) and the n visible slots, 16 at a time: each
// slot's dot product accumulates over the head dims in a vector of its own, and Sum16 turns the 16 vectors into the
// 16 scores. Past the last visible slot (the padding up to `stride`) the last slot is read again; Softmax ignores it.
template <typename E>
void ScoreRows(const float* q, int64_t R, const Slots<E>& keys, int64_t h, int64_t lo, int64_t n, float* scores,
               int64_t stride, LineFeed& feed, int64_t per) {
  for (int64_t s0 = 0; s0 < n; s0 += 16) {
    const E* key[16];
    for (int j = 0; j < 16; ++j) key[j] = keys.at(lo + std::min<int64_t>(s0 + j, n - 1));
    for (int64_t r = 0; r < R; ++r) {
      __m512 acc[16];
      for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
      for (int64_t d0 = 0; d0 < h; d0 += 16) {
        feed.Step(per);
        const __mmask16 m = Tail(h - d0);
        const __m512 qv = _mm512_maskz_loadu_ps(m, q + r * h + d0);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(qv, Load16(key[j] + d0, m), acc[j]);
      }
      _mm512_storeu_ps(scores + r * stride + s0, Sum16(acc));
    }
  }
}

// out[r] = sum_s p[r, s] value(lo + s) for R heads, kVecs * 16 head dims at a time
template <int R, typename E>
void WeighRows(const float* p, const Slots<E>& values, int64_t h, int64_t lo, int64_t n, int64_t stride, float* out,
               LineFeed& feed, int64_t per) {
  for (int64_t d0 = 0; d0 < h; d0 += 16 * kVecs) {
    __m512 acc[R][kVecs];
    __mmask16 m[kVecs];
    for (int j = 0; j < kVecs; ++j) m[j] = d0 + 16 * j < h ? Tail(h - d0 - 16 * j) : 0;
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < kVecs; ++j) acc[r][j] = _mm512_setzero_ps();
    for (int64_t s = 0; s < n; ++s) {
      feed.Step(per);
      const E* row = values.at(lo + s) + d0;
      __m512 vv[kVecs];
      for (int j = 0; j < kVecs; ++j) vv[j] = Load16(row + 16 * j, m[j]);
      for (int r = 0; r < R; ++r) {
        const __m512 w = _mm512_set1_ps(p[r * stride + s]);
        for (int j = 0; j < kVecs; ++j) acc[r][j] = _mm512_fmadd_ps(w, vv[j], acc[r][j]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < kVecs; ++j) _mm512_mask_storeu_ps(out + r * h + d0 + 16 * j, m[j], acc[r][j]);
  }
}

// In place over one head's scores of the n visible-range slots (stride a multiple of 16): the softmax over the
// slots the mask lets through, zero elsewhere and in the padding up to stride.
inline void Softmax(float* sc, const bool* mask, int64_t n, int64_t stride) {
  const __m512 none = _mm512_set1_ps(-INFINITY);
  __m512 top = none;
  for (int64_t s = 0; s < stride; s += 16) {
    const __mmask16 seen = _mm_test_epi8_mask(_mm_maskz_loadu_epi8(Tail(n - s), mask + s), _mm_set1_epi8(1));
    const __m512 x = _mm512_mask_mov_ps(none, seen, _mm512_loadu_ps(sc + s));
    _mm512_storeu_ps(sc + s, x);
    top = _mm512_max_ps(top, x);
  }
  const __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512 total = _mm512_setzero_ps();
  for (int64_t s = 0; s < stride; s += 16) {
    const __m512 x = _mm512_loadu_ps(sc + s);
    const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, none, _CMP_NEQ_OQ), Exp(_mm512_sub_ps(x, shift)));
    _mm512_storeu_ps(sc + s, e);
    total = _mm512_add_ps(total, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(total));
  for (int64_t s = 0; s < stride; s += 16) _mm512_storeu_ps(sc + s, _mm512_mul_ps(_mm512_loadu_ps(sc + s), inv));
}

// Asks for the keys and values of slots [lo, hi] into L2 at once (prefetcht1). Read cold, a step's attention
// otherwise waited on each miss in turn. Up to kPrefetchSlotBytes a call, well inside L2. Only the first part of a
// run waits on this sweep; the parts after it were fed by the part before (LineFeed).
constexpr int64_t kPrefetchSlotBytes = 512 * 1024;
// The sweep is a LineFeed's lines, all asked for at once.
template <typename E>
void PrefetchVisible(const Slots<E>& keys, const Slots<E>& values, int64_t h, int64_t lo, int64_t hi) {
  LineFeed(keys, values, h, lo, hi).Rest();
}

// The visible range [lo, hi] of a mask over S slots; lo > hi when none is visible.
inline void VisibleRange(const bool* mask, int64_t S, int64_t* lo, int64_t* hi) {
  *lo = 0, *hi = S - 1;
  while (*lo < S && !mask[*lo]) ++*lo;
  while (*hi >= *lo && !mask[*hi]) --*hi;
}

// The slots [lo, hi] of a part that its sweep or feed asks for: up to kPrefetchSlotBytes of keys and values.
template <typename E>
int64_t FetchedHi(int64_t lo, int64_t hi, int64_t h) {
  return std::min(hi, lo + kPrefetchSlotBytes / (2 * h * static_cast<int64_t>(sizeof(E))));
}

// The feed of a part's visible keys and values over S slots (empty when none is visible).
template <typename E>
LineFeed FeedOf(const Slots<E>& keys, const Slots<E>& values, const bool* mask, int64_t h, int64_t S) {
  int64_t lo, hi;
  VisibleRange(mask, S, &lo, &hi);
  return lo > hi ? LineFeed() : LineFeed(keys, values, h, lo, FetchedHi<E>(lo, hi, h));
}

// out [G, h] float32 = attention of G query heads q [G, h] over one (row, kv head)'s S slots of keys and values,
// those the mask lets through; zeros when it lets none. fetched: the visible slots were
// asked for already (by the part before); next: the feed of the part after, stepped along this one's loops.
template <typename E>
void AttendOne(const E* q, const Slots<E>& keys, const Slots<E>& values, const bool* mask, float* out, int64_t G,
               int64_t h, int64_t S, std::vector<float>& qf, std::vector<float>& scores, bool fetched = false,
               LineFeed* next = nullptr) {
  int64_t lo, hi;
  VisibleRange(mask, S, &lo, &hi);
  LineFeed none;
  LineFeed& feed = next != nullptr ? *next : none;
  if (lo > hi) {
    std::fill(out, out + G * h, 0.f);
    feed.Rest();
    return;
  }
  const int64_t n = hi - lo + 1, stride = (n + 15) / 16 * 16;
  if (!fetched) PrefetchVisible(keys, values, h, lo, FetchedHi<E>(lo, hi, h));
  // the next part's lines, spread over the inner iterations of the scores and the weighted sums
  const int64_t iterations = G * (stride / 16) * ((h + 15) / 16) +
                             ((G + kRows - 1) / kRows) * ((h + 16 * kVecs - 1) / (16 * kVecs)) * n;
  const int64_t per = next != nullptr ? (next->lines() + iterations - 1) / iterations : 0;
  qf.resize(G * h);  // q in float32, scaled
  const float scale = 1.f / std::sqrt(static_cast<float>(h));
  for (int64_t i = 0; i < G * h; ++i) qf[i] = ToFloat(q[i]) * scale;
  scores.resize(G * stride);
  ScoreRows<E>(qf.data(), G, keys, h, lo, n, scores.data(), stride, feed, per);
  for (int64_t g = 0; g < G; ++g) Softmax(scores.data() + g * stride, mask + lo, n, stride);
  for (int64_t g0 = 0; g0 < G; g0 += kRows) {
    const float* pg = scores.data() + g0 * stride;
    float* og = out + g0 * h;
    switch (std::min<int64_t>(kRows, G - g0)) {
      case 1: WeighRows<1>(pg, values, h, lo, n, stride, og, feed, per); break;
      case 2: WeighRows<2>(pg, values, h, lo, n, stride, og, feed, per); break;
      case 3: WeighRows<3>(pg, values, h, lo, n, stride, og, feed, per); break;
      default: WeighRows<4>(pg, values, h, lo, n, stride, og, feed, per); break;
    }
  }
  feed.Rest();
}

}  // namespace qrr
