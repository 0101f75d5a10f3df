// Attention of one decode step on the CPU, as an XLA FFI handler (cpu_kernels/attention.py).
//
// XLA:CPU runs a decode step's attention as batched products of tiny matrices ([G, h] . [h, S] per batch row
// and kv head), far below the bandwidth of reading the cache. This reads each (row, kv head)'s cache once over
// its visible slots only (the cache's later slots are still empty), on XLA's intra-op threads, in float32.
//
//   DecodeAttention{F32,Bf16}: q [B, K, G, h], keys [B, S, K, h], values [B, S, K, h],
//                             mask [B, S] (bool: slot visible) -> out [B, K, G, h] float32
//   out[b, k, g] = softmax over visible s of (q[b, k, g] . keys[b, s, k] / sqrt(h)) . values[b, s, k]
//   A row with no visible slot gets zeros.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "attend.h"
#include "threads.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using qrr::AttendOne;

template <ffi::DataType T, typename E>
ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<T> q, ffi::Buffer<T> keys, ffi::Buffer<T> values,
                           ffi::Buffer<ffi::PRED> mask, ffi::ResultBuffer<ffi::F32> out) {
  const auto qd = q.dimensions(), kd = keys.dimensions(), vd = values.dimensions(), md = mask.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || md.size() != 2)
    return ffi::Error::InvalidArgument("attention: q, keys, values must be 4-D and mask 2-D");
  const int64_t B = qd[0], K = qd[1], G = qd[2], h = qd[3], S = kd[1];
  if (kd[0] != B || kd[2] != K || kd[3] != h || vd[0] != B || vd[1] != S || vd[2] != K || vd[3] != h ||
      md[0] != B || md[1] != S)
    return ffi::Error::InvalidArgument("attention: shapes of q, keys, values and mask disagree");
  const E* qp = reinterpret_cast<const E*>(q.typed_data());
  const E* kp = reinterpret_cast<const E*>(keys.typed_data());
  const E* vp = reinterpret_cast<const E*>(values.typed_data());
  const bool* mp = mask.typed_data();
  float* op = out->typed_data();
  const int64_t tasks = B * K, threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(tasks, 4 * threads));
  qrr::ParallelFor(pool, parts, [=](int64_t part) {
    std::vector<float> qf, scores;
    const int64_t t0 = tasks * part / parts, t1 = tasks * (part + 1) / parts;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / K, first = (b * S * K + t % K) * h;  // (row b, kv head t % K) at slot 0
      const E *k0 = kp + first, *v0 = vp + first;
      AttendOne<E>(qp + t * G * h, qrr::Strided<E>(&k0, K * h), qrr::Strided<E>(&v0, K * h), mp + b * S,
                   op + t * G * h, G, h, S, qf, scores);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

#define QRR_ATTENTION_BIND(T)                                                                              \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<T>>().Arg<ffi::Buffer<T>>().Arg<ffi::Buffer<T>>() \
      .Arg<ffi::Buffer<ffi::PRED>>().Ret<ffi::Buffer<ffi::F32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrDecodeAttentionF32, (DecodeAttention<ffi::F32, float>), QRR_ATTENTION_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrDecodeAttentionBf16, (DecodeAttention<ffi::BF16, uint16_t>),
                              QRR_ATTENTION_BIND(ffi::BF16));
