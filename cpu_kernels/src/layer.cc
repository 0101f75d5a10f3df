// One decoder layer of a decode step on the CPU, as one XLA FFI handler (cpu_kernels/layer.py).
//
// A decode step of a small model is ~20 short operations a layer: four weight products (products.cc), the
// attention (attention.cc), two cache writes and the norms, RoPE, bias, SwiGLU and residual adds between them,
// each its own XLA thunk, each product waking a second thread. Here the whole layer is one call: one team of
// threads (qrr::Team: the caller and XLA's intra-op threads, woken once per call) runs the products and the
// attention in parallel and the small steps between them on the caller. Every step rounds to the compute dtype
// where common/model.py's layer does (cpu_kernels/tests/test_layer.py).
//
//   DecodeLayer{F32,Bf16}(x [B, d], attn_norm [d], qkv panels, qkv_bias [K(G+2)h], o panels, mlp_norm [d],
//                         gate_up panels, down panels, cos [B, h] f32, sin [B, h] f32,
//                         k_cache [B, S, K, h], v_cache [B, S, K, h], index s32[], mask [B, S] pred;
//                         attributes eps, intermediate F)
//     -> (x + attention + MLP [B, d], k_cache, v_cache with slot `index` written; the caches in place)
//   Panels as products.cc packs them: qkv for the [d, K(G+2)h] kernel (per kv head: G query heads, key,
//   value), o [Hh, d], gate_up [d, 2F] (gate, then up), down [F, d].
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "amx.h"
#include "attend.h"
#include "threads.h"
#include "tiles.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using qrr::kPanel;

constexpr int64_t kMaxHead = 1024;  // head_dim bound of the on-stack head buffers
// Rows from which the attention feeds each part's successor while computing (qrr::LineFeed): it paid at batch 32
// and was within the noise at batch 8 (docs/benchmarks/history.md).
constexpr int64_t kFeedRows = 16;

// Vectors of 16 float32 lanes; `m` masks a tail. R<E> rounds to the compute dtype E and back (an intermediate
// that XLA holds in E); bfloat16 rounds to nearest even, as XLA converts.
template <typename E>
inline __m512 R(__m512 v);
template <typename E>
inline E To(float v);
template <>
inline float To<float>(float v) {
  return v;
}
template <>
inline uint16_t To<uint16_t>(float v) {
  return static_cast<uint16_t>(_mm_cvtsi128_si32((__m128i)_mm_cvtneps_pbh(_mm_set1_ps(v))) & 0xFFFF);
}
template <>
inline __m512 R<float>(__m512 v) {
  return v;
}
template <>
inline __m512 R<uint16_t>(__m512 v) {
  const __m256i bits = (__m256i)_mm512_cvtneps_pbh(v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
inline __m512 LoadF(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline void StoreF(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
inline void StoreE(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
inline void StoreE(uint16_t* p, __m512 v, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
}
// fn(i, mask) for i = 0, 16, 32, ... < n
template <typename Fn>
inline void Each16(int64_t n, Fn fn) {
  for (int64_t i = 0; i < n; i += 16) fn(i, qrr::Tail(n - i));
}

// A packed weight: panels [P, Kp, 32] (bfloat16: [P, Kp/2, 32, 2]) for a [k, n] kernel, Kp = k rounded up to even
// for bfloat16.
template <typename E>
struct Packed {
  const E* w;
  int64_t P, Kp;
};

template <ffi::DataType T, typename E>
Packed<E> PackedOf(const ffi::Buffer<T>& b) {
  const auto dims = b.dimensions();
  const bool pairs = dims.size() == 4;
  return {reinterpret_cast<const E*>(b.typed_data()), dims[0], pairs ? 2 * dims[1] : dims[1]};
}

// fn(b) for every row b < B: over the team when there are several rows, else on the caller alone
template <typename Fn>
void EachRow(qrr::Team& team, int64_t B, Fn fn) {
  if (B == 1) {
    fn(0);
  } else {
    team.For(B, [&](int64_t b) { fn(b); });
  }
}

// The layer's weight products on its team, B rows at a time, through `in` (the rows converted to E)
template <typename E>
class Products {
 public:
  Products(qrr::Team& team, int64_t B, std::vector<E>& in) : team_(team), B_(B), in_(in) {}

  // The rows of the next product's input: B rows of w.Kp values in E. The loop that computes them writes each row
  // here (ToRow) as it finishes it, so that the product needs no loop (and no wait for the team) of its own.
  E* Rows(const Packed<E>& w) {
    in_.resize(B_ * w.Kp);
    return in_.data();
  }
  // values x[0:k] (float32, rounded to E here) into a row of Rows from column `at`; with k_total >= 0 (the part
  // that writes a row's last columns) also zero the row's padding from column k_total to Kp
  static void ToRow(const float* x, int64_t k, E* row, int64_t at = 0, int64_t k_total = -1, int64_t Kp = 0) {
    Each16(k, [&](int64_t i, __mmask16 m) { StoreE(row + at + i, LoadF(x + i, m), m); });
    if (k_total >= 0) std::fill(row + k_total, row + Kp, E{});  // the padding to an even k
  }
  // y[B, n] (float32) = Rows . w, once the loop before has written every row; then(p0, p1), if given, on the thread
  // that computed panels [p0, p1), for their columns of every row (work that would otherwise wait for the team)
  void FromRows(const Packed<E>& w, std::vector<float>& y, int64_t& ldy,
                const std::function<void(int64_t, int64_t)>& then = nullptr) {
    ldy = w.P * kPanel;
    y.resize(B_ * ldy);
    const E* xin = in_.data();
    float* out = y.data();
    const int64_t B = B_, ld = ldy, Kp = w.Kp;
    const E* wp = w.w;
    team_.ForRanges(w.P, [&, xin, out, B, ld, Kp, wp](int64_t p0, int64_t p1) {
      qrr::ProductRange<E>(xin, B, Kp, wp, p0, p1, out, ld);
      if (then) then(p0, p1);
    });
  }

 private:
  qrr::Team& team_;
  int64_t B_;
  std::vector<E>& in_;
};

// Buffers of a call, kept per thread between calls (their size is the same every step)
template <typename E>
struct Scratch {
  std::vector<float> resid, normed, y, attn, hidden, rope;
  std::vector<E> in, q;
};

// RMSNorm of one row as common.model.rms_norm: float32 statistics, x * rsqrt(mean(x^2) + eps) rounded to E, times the
// scale in E, rounded to E. x holds values exact in E.
template <typename E>
void RmsNorm(const float* x, const E* scale, int64_t d, float eps, float* out) {
  __m512 sum = _mm512_setzero_ps();
  Each16(d, [&](int64_t i, __mmask16 m) {
    const __m512 v = LoadF(x + i, m);
    sum = _mm512_fmadd_ps(v, v, sum);
  });
  const __m512 r = _mm512_set1_ps(1.f / std::sqrt(_mm512_reduce_add_ps(sum) / static_cast<float>(d) + eps));
  Each16(d, [&](int64_t i, __mmask16 m) {
    const __m512 v = R<E>(_mm512_mul_ps(LoadF(x + i, m), r));
    StoreF(out + i, R<E>(_mm512_mul_ps(qrr::Load16(scale + i, m), v)), m);
  });
}

// One head of h values in place: (v + bias) rounded to E, then (rope) v * cos + rotate_half(v) * sin as
// common.model.apply_rope, with cos and sin already rounded to E.
template <typename E>
void BiasRope(float* v, const E* bias, const float* cos, const float* sin, int64_t h, bool rope) {
  Each16(h, [&](int64_t i, __mmask16 m) {
    StoreF(v + i, R<E>(_mm512_add_ps(LoadF(v + i, m), qrr::Load16(bias + i, m))), m);
  });
  if (!rope) return;
  const int64_t half = h / 2;
  float rotated[kMaxHead];
  for (int64_t i = 0; i < h; ++i) rotated[i] = i < half ? -v[i + half] : v[i - half];
  Each16(h, [&](int64_t i, __mmask16 m) {
    const __m512 a = R<E>(_mm512_mul_ps(LoadF(v + i, m), LoadF(cos + i, m)));
    const __m512 b = R<E>(_mm512_mul_ps(LoadF(rotated + i, m), LoadF(sin + i, m)));
    StoreF(v + i, R<E>(_mm512_add_ps(a, b)), m);
  });
}

// x[i] = (x[i] + y[i] rounded to E) rounded to E, for the n values of one row
template <typename E>
void AddRounded(float* x, const float* y, int64_t n) {
  Each16(n, [&](int64_t i, __mmask16 m) {
    StoreF(x + i, R<E>(_mm512_add_ps(LoadF(x + i, m), R<E>(LoadF(y + i, m)))), m);
  });
}

// Where a layer's cache keeps one (row, kv head)'s keys and values. The decoder's cache [B, S, K, h]: every row
// writes slot `index` and sees the slots its mask lets through.
template <typename E>
class SlotCache {
 public:
  SlotCache(E* keys, E* values, int64_t B, int64_t S, int64_t K, int64_t h, int64_t slot, const bool* visible)
      : keys_(keys), values_(values), S_(S), K_(K), h_(h), slot_(slot), visible_(visible), first_(2 * B * K) {
    for (int64_t t = 0; t < B * K; ++t) {  // (row b, kv head k) at slot 0
      const int64_t at = ((t / K) * S * K + t % K) * h;
      first_[2 * t] = keys + at, first_[2 * t + 1] = values + at;
    }
  }
  // where part t = (row, kv head)'s new key (value: true) goes; nullptr: nowhere
  E* NewSlot(int64_t t, bool value) const {
    return (value ? values_ : keys_) + (((t / K_) * S_ + slot_) * K_ + t % K_) * h_;
  }
  qrr::Slots<E> Keys(int64_t t) const { return qrr::Strided<E>(&first_[2 * t], K_ * h_); }
  qrr::Slots<E> Values(int64_t t) const { return qrr::Strided<E>(&first_[2 * t + 1], K_ * h_); }
  const bool* Mask(int64_t t) const { return visible_ + (t / K_) * S_; }
  int64_t Span(int64_t) const { return S_; }

 private:
  E *keys_, *values_;
  int64_t S_, K_, h_, slot_;
  const bool* visible_;
  std::vector<const E*> first_;
};

// The engine's page pool [K, L, N, page, h] (common/paged_kv.py) at one layer: row b's token at position p sits in
// page table[b, p / page], slot p % page; the row writes position length - 1 and sees positions [0, length). A row
// of length 0 is padding: it writes nothing and sees nothing.
template <typename E>
class PageCache {
 public:
  PageCache(E* keys, E* values, int64_t B, int64_t K, int64_t L, int64_t N, int64_t page, int shift, int64_t h,
            int64_t layer, const int32_t* table, int64_t P, const int32_t* lengths)
      : K_(K), P_(P), page_(page), shift_(shift), h_(h), lengths_(lengths), pages_(2 * B * K * P) {
    for (int64_t t = 0; t < B * K; ++t)  // the pages each row reads (its length's), the rest never looked at
      for (int64_t i = 0, used = (std::max(lengths[t / K], 0) + page - 1) / page; i < used; ++i) {
        const int64_t at = (((t % K) * L + layer) * N + table[(t / K) * P + i]) * page * h;
        pages_[(2 * t) * P + i] = keys + at, pages_[(2 * t + 1) * P + i] = values + at;
      }
    ones_.assign(P * page, 1);
  }
  E* NewSlot(int64_t t, bool value) const {
    const int64_t n = lengths_[t / K_];
    if (n <= 0) return nullptr;
    return const_cast<E*>(pages_[(2 * t + value) * P_ + (n - 1) / page_]) + ((n - 1) % page_) * h_;
  }
  qrr::Slots<E> Keys(int64_t t) const { return {&pages_[2 * t * P_], shift_, page_ - 1, h_}; }
  qrr::Slots<E> Values(int64_t t) const { return {&pages_[(2 * t + 1) * P_], shift_, page_ - 1, h_}; }
  const bool* Mask(int64_t) const { return reinterpret_cast<const bool*>(ones_.data()); }
  int64_t Span(int64_t t) const { return std::max<int64_t>(0, lengths_[t / K_]); }

 private:
  int64_t K_, P_, page_;
  int shift_;
  int64_t h_;
  const int32_t* lengths_;
  std::vector<const E*> pages_;
  std::vector<unsigned char> ones_;
};

// The shapes of a layer's weights and activations, as checked by the handler that calls `RunLayer`
struct LayerShape {
  int64_t B, d, K, G, h, F;
};

// One decoder layer of a decode step: x [B, d] -> out [B, d], the new keys and values into `cache`
template <typename E, typename Cache>
void RunLayer(ffi::ThreadPool& pool, const LayerShape& shape, const E* xp, const E* attn_scale, const Packed<E>& qkv,
              const E* bias, const Packed<E>& o, const E* mlp_scale, const Packed<E>& gate_up, const Packed<E>& down,
              const float* cp, const float* sp, const Cache& cache, float eps, E* out) {
  const int64_t B = shape.B, d = shape.d, K = shape.K, G = shape.G, h = shape.h, F = shape.F, H = K * G;
  qrr::Team team(pool, pool.num_threads() - 1);
  thread_local Scratch<E> scratch;
  Products<E> products(team, B, scratch.in);
  std::vector<float>&resid = scratch.resid, &normed = scratch.normed, &y = scratch.y, &attn = scratch.attn,
                   &hidden = scratch.hidden, &rope = scratch.rope;
  std::vector<E>& q = scratch.q;
  resid.resize(B * d), normed.resize(B * d), q.resize(B * H * h), attn.resize(B * H * h), hidden.resize(B * F);
  rope.resize(2 * B * h);
  int64_t ldy = 0;
  float* cos_e = rope.data();  // cos and sin rounded to E, as apply_rope casts them
  float* sin_e = cos_e + B * h;

  // attention: norm, fused q/k/v product, bias, RoPE, the new key and value into the cache
  E* rows = products.Rows(qkv);
  EachRow(team, B, [&](int64_t b) {
    Each16(d, [&](int64_t i, __mmask16 m) { StoreF(&resid[b * d + i], qrr::Load16(xp + b * d + i, m), m); });
    Each16(h, [&](int64_t i, __mmask16 m) {
      StoreF(cos_e + b * h + i, R<E>(LoadF(cp + b * h + i, m)), m);
      StoreF(sin_e + b * h + i, R<E>(LoadF(sp + b * h + i, m)), m);
    });
    RmsNorm<E>(&resid[b * d], attn_scale, d, eps, &normed[b * d]);
    Products<E>::ToRow(&normed[b * d], d, rows + b * qkv.Kp, 0, d, qkv.Kp);
  });
  products.FromRows(qkv, y, ldy);
  // one (row, kv head) per part: its G query heads, its key and value (bias, RoPE, the new slot), then its
  // attention over the visible slots, in one loop (one wait for the team instead of two; the new key and value are
  // still in cache for the attention). Parts go in runs per thread; from kFeedRows rows on each part asks for the
  // next one's keys and values while it computes (qrr::LineFeed). o then rounds its input to E in the product.
  auto heads = [&](int64_t t) {
    const int64_t b = t / K, k = t % K;
    for (int64_t part = 0; part < G + 2; ++part) {
      const int64_t col = (k * (G + 2) + part) * h;
      float* head = &y[b * ldy + col];
      Each16(h, [&](int64_t i, __mmask16 m) { StoreF(head + i, R<E>(LoadF(head + i, m)), m); });
      BiasRope<E>(head, bias + col, cos_e + b * h, sin_e + b * h, h, part <= G);
      if (part < G) {
        Each16(h, [&](int64_t i, __mmask16 m) { StoreE(&q[(t * G + part) * h + i], LoadF(head + i, m), m); });
      } else if (E* slot = cache.NewSlot(t, part > G)) {  // the key (part G) or the value
        Each16(h, [&](int64_t i, __mmask16 m) { StoreE(slot + i, LoadF(head + i, m), m); });
      }
    }
  };
  const bool feed = B >= kFeedRows;
  E* o_rows = products.Rows(o);  // the qkv product is done with its rows
  team.ForRanges(B * K, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> qf, scores;
    for (int64_t t = t0; t < t1; ++t) {
      heads(t);
      qrr::LineFeed next;
      const bool fed = feed && t + 1 < t1;
      if (fed) next = qrr::FeedOf<E>(cache.Keys(t + 1), cache.Values(t + 1), cache.Mask(t + 1), h, cache.Span(t + 1));
      qrr::AttendOne<E>(&q[t * G * h], cache.Keys(t), cache.Values(t), cache.Mask(t), &attn[t * G * h], G, h,
                        cache.Span(t), qf, scores, feed && t > t0, fed ? &next : nullptr);
      const int64_t b = t / K, k = t % K;  // o's input: this part's heads, rounded to E
      Products<E>::ToRow(&attn[t * G * h], G * h, o_rows + b * o.Kp, k * G * h, k == K - 1 ? H * h : -1, o.Kp);
    }
  });
  products.FromRows(o, y, ldy);

  // the residual; MLP: norm, fused gate/up product, SiLU(gate) * up, down, and the residual
  E* gate_up_rows = products.Rows(gate_up);
  EachRow(team, B, [&](int64_t b) {
    AddRounded<E>(&resid[b * d], &y[b * ldy], d);
    RmsNorm<E>(&resid[b * d], mlp_scale, d, eps, &normed[b * d]);
    Products<E>::ToRow(&normed[b * d], d, gate_up_rows + b * gate_up.Kp, 0, d, gate_up.Kp);
  });
  products.FromRows(gate_up, y, ldy);
  E* down_rows = products.Rows(down);
  EachRow(team, B, [&](int64_t b) {
    const float* row = &y[b * ldy];
    Each16(F, [&](int64_t i, __mmask16 m) {
      const __m512 gate = R<E>(LoadF(row + i, m)), up = R<E>(LoadF(row + F + i, m));
      const __m512 one = _mm512_set1_ps(1.f);
      const __m512 exp_minus = qrr::Exp(_mm512_sub_ps(_mm512_setzero_ps(), gate));
      const __m512 sigmoid = _mm512_div_ps(one, _mm512_add_ps(one, exp_minus));
      StoreF(&hidden[b * F + i], R<E>(_mm512_mul_ps(R<E>(_mm512_mul_ps(gate, sigmoid)), up)), m);
    });
    Products<E>::ToRow(&hidden[b * F], F, down_rows + b * down.Kp, 0, F, down.Kp);
  });
  // the residual and the layer's output, for each run's columns as soon as its panels are done
  products.FromRows(down, y, ldy, [&](int64_t p0, int64_t p1) {  // (ldy is down's by the time this runs)
    const int64_t c0 = std::min(d, p0 * kPanel), n = std::min(d, p1 * kPanel) - c0;
    for (int64_t b = 0; b < B; ++b) {
      AddRounded<E>(&resid[b * d + c0], &y[b * ldy + c0], n);
      Each16(n, [&](int64_t i, __mmask16 m) { StoreE(out + b * d + c0 + i, LoadF(&resid[b * d + c0 + i], m), m); });
    }
  });
}

// The weights' and activations' shapes of a call into *shape, checked: an error naming what disagrees, or success
template <ffi::DataType T, typename E>
ffi::Error CheckLayer(const ffi::Buffer<T>& x, const ffi::Buffer<T>& attn_norm,
                                    const ffi::Buffer<T>& qkv_w, const ffi::Buffer<T>& qkv_bias,
                                    const ffi::Buffer<T>& o_w, const ffi::Buffer<T>& mlp_norm,
                                    const ffi::Buffer<T>& gate_up_w, const ffi::Buffer<T>& down_w,
                                    const ffi::Buffer<ffi::F32>& cos, const ffi::Buffer<ffi::F32>& sin, int64_t K,
                                    int64_t h, int64_t intermediate, LayerShape* shape) {
  const auto xd = x.dimensions();
  if (xd.size() != 2) return ffi::Error::InvalidArgument("layer: x must be [B, d]");
  const int64_t B = xd[0], d = xd[1], F = intermediate;
  const Packed<E> qkv = PackedOf<T, E>(qkv_w), o = PackedOf<T, E>(o_w), gate_up = PackedOf<T, E>(gate_up_w),
                  down = PackedOf<T, E>(down_w);
  const int64_t n_qkv = static_cast<int64_t>(qkv_bias.element_count()), G = n_qkv / (K * h) - 2, H = K * G;
  if (G < 1 || n_qkv != K * (G + 2) * h || h > kMaxHead || attn_norm.element_count() != d ||
      mlp_norm.element_count() != d || cos.element_count() != B * h || sin.element_count() != B * h ||
      qkv.P * kPanel < n_qkv || qkv.Kp < d || o.Kp < H * h || o.P * kPanel < d || gate_up.Kp < d ||
      gate_up.P * kPanel < 2 * F || down.Kp < F || down.P * kPanel < d)
    return ffi::Error::InvalidArgument("layer: shapes of x, the weights, the caches and cos/sin disagree");
  *shape = LayerShape{B, d, K, G, h, F};
  return ffi::Error::Success();
}

template <typename E, ffi::DataType T>
const E* Data(const ffi::Buffer<T>& b) {
  return reinterpret_cast<const E*>(b.typed_data());
}

template <ffi::DataType T, typename E>
ffi::Error DecodeLayer(ffi::ThreadPool pool, ffi::Buffer<T> x, ffi::Buffer<T> attn_norm, ffi::Buffer<T> qkv_w,
                       ffi::Buffer<T> qkv_bias, ffi::Buffer<T> o_w, ffi::Buffer<T> mlp_norm, ffi::Buffer<T> gate_up_w,
                       ffi::Buffer<T> down_w, ffi::Buffer<ffi::F32> cos, ffi::Buffer<ffi::F32> sin,
                       ffi::Buffer<T> k_cache, ffi::Buffer<T> v_cache, ffi::Buffer<ffi::S32> index,
                       ffi::Buffer<ffi::PRED> mask, ffi::ResultBuffer<T> x_out, ffi::ResultBuffer<T> k_out,
                       ffi::ResultBuffer<T> v_out, float eps, int64_t intermediate) {
  const auto kd = k_cache.dimensions(), vd = v_cache.dimensions();
  if (kd.size() != 4 || vd.size() != 4) return ffi::Error::InvalidArgument("layer: the caches must be [B, S, K, h]");
  const int64_t S = kd[1], K = kd[2], h = kd[3];
  LayerShape shape;
  const ffi::Error checked = CheckLayer<T, E>(x, attn_norm, qkv_w, qkv_bias, o_w, mlp_norm, gate_up_w, down_w, cos, sin,
                                              K, h, intermediate, &shape);
  if (checked.failure()) return checked;
  const int64_t B = shape.B;
  if (kd[0] != B || vd[0] != B || vd[1] != S || vd[2] != K || vd[3] != h || mask.element_count() != B * S)
    return ffi::Error::InvalidArgument("layer: shapes of x, the caches and mask disagree");
  const int64_t slot = *index.typed_data();
  if (slot < 0 || slot >= S) return ffi::Error::InvalidArgument("layer: cache index outside the cache");
  const SlotCache<E> cache(reinterpret_cast<E*>(k_out->typed_data()), reinterpret_cast<E*>(v_out->typed_data()), B, S,
                           K, h, slot, mask.typed_data());
  RunLayer<E>(pool, shape, Data<E>(x), Data<E>(attn_norm), PackedOf<T, E>(qkv_w), Data<E>(qkv_bias),
              PackedOf<T, E>(o_w), Data<E>(mlp_norm), PackedOf<T, E>(gate_up_w), PackedOf<T, E>(down_w),
              cos.typed_data(), sin.typed_data(), cache, eps, reinterpret_cast<E*>(x_out->typed_data()));
  return ffi::Error::Success();
}

// The same layer over the engine's page pool: k_pool, v_pool [K, L, N, page, h] (page a power of two), this layer's
// index, the rows' page tables [B, P] and lengths [B] (after this token; 0: a padding row)
template <ffi::DataType T, typename E>
ffi::Error DecodeLayerPaged(ffi::ThreadPool pool, ffi::Buffer<T> x, ffi::Buffer<T> attn_norm, ffi::Buffer<T> qkv_w,
                            ffi::Buffer<T> qkv_bias, ffi::Buffer<T> o_w, ffi::Buffer<T> mlp_norm,
                            ffi::Buffer<T> gate_up_w, ffi::Buffer<T> down_w, ffi::Buffer<ffi::F32> cos,
                            ffi::Buffer<ffi::F32> sin, ffi::Buffer<T> k_pool, ffi::Buffer<T> v_pool,
                            ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> page_table,
                            ffi::Buffer<ffi::S32> lengths, ffi::ResultBuffer<T> x_out, ffi::ResultBuffer<T> k_out,
                            ffi::ResultBuffer<T> v_out, float eps, int64_t intermediate) {
  const auto kd = k_pool.dimensions(), vd = v_pool.dimensions(), td = page_table.dimensions();
  if (kd.size() != 5 || vd.size() != 5 || td.size() != 2)
    return ffi::Error::InvalidArgument("paged layer: the pools must be [K, L, N, page, h] and the page table [B, P]");
  const int64_t K = kd[0], L = kd[1], N = kd[2], page = kd[3], h = kd[4], P = td[1];
  LayerShape shape;
  const ffi::Error checked = CheckLayer<T, E>(x, attn_norm, qkv_w, qkv_bias, o_w, mlp_norm, gate_up_w, down_w, cos, sin,
                                              K, h, intermediate, &shape);
  if (checked.failure()) return checked;
  const int64_t B = shape.B;
  for (int i = 0; i < 5; ++i)
    if (vd[i] != kd[i]) return ffi::Error::InvalidArgument("paged layer: the key and value pools disagree");
  if (td[0] != B || lengths.element_count() != B)
    return ffi::Error::InvalidArgument("paged layer: the page table and lengths must have one row per row of x");
  if (page < 1 || (page & (page - 1)) != 0)
    return ffi::Error::InvalidArgument("paged layer: the page size must be a power of two");
  const int64_t l = *layer.typed_data();
  if (l < 0 || l >= L) return ffi::Error::InvalidArgument("paged layer: layer index outside the pool");
  const int32_t* table = page_table.typed_data();
  const int32_t* n = lengths.typed_data();
  for (int64_t i = 0; i < B * P; ++i)
    if (table[i] < 0 || table[i] >= N) return ffi::Error::InvalidArgument("paged layer: a page outside the pool");
  for (int64_t b = 0; b < B; ++b)
    if (n[b] > P * page) return ffi::Error::InvalidArgument("paged layer: a row longer than its page table");
  int shift = 0;
  while ((int64_t{1} << shift) < page) ++shift;
  const PageCache<E> cache(reinterpret_cast<E*>(k_out->typed_data()), reinterpret_cast<E*>(v_out->typed_data()), B, K,
                           L, N, page, shift, h, l, table, P, n);
  RunLayer<E>(pool, shape, Data<E>(x), Data<E>(attn_norm), PackedOf<T, E>(qkv_w), Data<E>(qkv_bias),
              PackedOf<T, E>(o_w), Data<E>(mlp_norm), PackedOf<T, E>(gate_up_w), PackedOf<T, E>(down_w),
              cos.typed_data(), sin.typed_data(), cache, eps, reinterpret_cast<E*>(x_out->typed_data()));
  return ffi::Error::Success();
}

}  // namespace

// The arguments both layers take first (x, the weights, cos, sin, then the keys' and values' store) and the
// results and attributes they end with; each puts the arguments that say which slots between them.
#define QRR_LAYER_ARGS(T)                                                                                      \
  ffi::Ffi::Bind()                                                                                             \
      .Ctx<ffi::ThreadPool>()                                                                                  \
      .Arg<ffi::Buffer<T>>()  /* x */                                                                          \
      .Arg<ffi::Buffer<T>>()  /* attn_norm */                                                                  \
      .Arg<ffi::Buffer<T>>()  /* qkv */                                                                        \
      .Arg<ffi::Buffer<T>>()  /* qkv_bias */                                                                   \
      .Arg<ffi::Buffer<T>>()  /* o */                                                                          \
      .Arg<ffi::Buffer<T>>()  /* mlp_norm */                                                                   \
      .Arg<ffi::Buffer<T>>()  /* gate_up */                                                                    \
      .Arg<ffi::Buffer<T>>()  /* down */                                                                       \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                            \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                            \
      .Arg<ffi::Buffer<T>>()  /* k_cache or k_pool */                                                          \
      .Arg<ffi::Buffer<T>>()  /* v_cache or v_pool */
#define QRR_LAYER_RETS(T)                                                                                      \
  .Ret<ffi::Buffer<T>>().Ret<ffi::Buffer<T>>().Ret<ffi::Buffer<T>>().Attr<float>("eps").Attr<int64_t>("intermediate")
// the cache's index and mask
#define QRR_LAYER_BIND(T) \
  QRR_LAYER_ARGS(T).Arg<ffi::Buffer<ffi::S32>>().Arg<ffi::Buffer<ffi::PRED>>() QRR_LAYER_RETS(T)
// the pool's layer, page table and lengths
#define QRR_PAGED_LAYER_BIND(T)                                                                            \
  QRR_LAYER_ARGS(T).Arg<ffi::Buffer<ffi::S32>>().Arg<ffi::Buffer<ffi::S32>>().Arg<ffi::Buffer<ffi::S32>>() \
      QRR_LAYER_RETS(T)

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrDecodeLayerF32, (DecodeLayer<ffi::F32, float>), QRR_LAYER_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrDecodeLayerBf16, (DecodeLayer<ffi::BF16, uint16_t>), QRR_LAYER_BIND(ffi::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrDecodeLayerPagedF32, (DecodeLayerPaged<ffi::F32, float>),
                              QRR_PAGED_LAYER_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrDecodeLayerPagedBf16, (DecodeLayerPaged<ffi::BF16, uint16_t>),
                              QRR_PAGED_LAYER_BIND(ffi::BF16));
