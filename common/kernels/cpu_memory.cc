// Data movement of a decode step on the CPU, as XLA FFI handlers (common/kernels/cpu_memory.py). Both work on
// the raw bytes of any dtype.
//
// XLA:CPU rewrote a whole bf16 key cache to write one slot (its slot axis is the minor one: ~0.7 ms a step at
// batch 1, more at larger batches), and converted a whole bf16 embedding table to float32 (or copied it) to
// gather a few rows, once per sampler call.
//
//   WriteSlots: cache [outer, S, inner] (any dtype), new [outer, T, inner], index (int32 scalar)
//               -> the cache with new at slots index..index+T-1 (index clamped into [0, S - T], as
//                  dynamic-update-slice); the result aliases the cache, so only those slots are written.
//   TakeRows:   table [V, d] (any dtype), ids [n] int32 -> rows [n, d]; an id outside [0, V) gives a row of
//               NaN for floats (as jnp.take's default fill), zeros otherwise.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

ffi::Error WriteSlots(ffi::AnyBuffer cache, ffi::AnyBuffer fresh, ffi::Buffer<ffi::S32> index,
                      ffi::Result<ffi::AnyBuffer> out, int64_t axis) {
  const auto cd = cache.dimensions(), nd = fresh.dimensions();
  if (cache.element_type() != fresh.element_type() || out->element_type() != cache.element_type())
    return ffi::Error::InvalidArgument("cpu_memory: cache and new differ in dtype");
  if (cd.size() != nd.size() || axis < 0 || axis >= static_cast<int64_t>(cd.size()))
    return ffi::Error::InvalidArgument("cpu_memory: cache and new differ in rank, or the slot axis is out of range");
  int64_t outer = 1, inner = ffi::ByteWidth(cache.element_type());
  for (int64_t a = 0; a < static_cast<int64_t>(cd.size()); ++a) {
    if (a != axis && cd[a] != nd[a]) return ffi::Error::InvalidArgument("cpu_memory: new does not fit the cache");
    if (a < axis) outer *= cd[a];
    if (a > axis) inner *= cd[a];
  }
  const int64_t S = cd[axis], T = nd[axis];
  if (T > S) return ffi::Error::InvalidArgument("cpu_memory: more new slots than the cache holds");
  const int64_t at = std::clamp<int64_t>(index.typed_data()[0], 0, S - T);
  char* dst = static_cast<char*>(out->untyped_data());
  if (dst != cache.untyped_data()) std::memcpy(dst, cache.untyped_data(), cache.size_bytes());  // not aliased
  const char* src = static_cast<const char*>(fresh.untyped_data());
  for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + (o * S + at) * inner, src + o * T * inner, T * inner);
  return ffi::Error::Success();
}

ffi::Error TakeRows(ffi::AnyBuffer table, ffi::Buffer<ffi::S32> ids, ffi::Result<ffi::AnyBuffer> out) {
  const auto td = table.dimensions();
  if (td.size() != 2 || ids.dimensions().size() != 1 || out->element_type() != table.element_type())
    return ffi::Error::InvalidArgument("cpu_memory: take_rows needs a table [V, d] and ids [n]");
  const int64_t V = td[0], width = ffi::ByteWidth(table.element_type()), row = td[1] * width;
  const int64_t n = ids.dimensions()[0];
  const char* src = static_cast<const char*>(table.untyped_data());
  char* dst = static_cast<char*>(out->untyped_data());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids.typed_data()[i];
    if (id >= 0 && id < V) {
      std::memcpy(dst + i * row, src + id * row, row);
      continue;
    }
    std::memset(dst + i * row, 0, row);
    if (table.element_type() == ffi::DataType::F32) std::fill_n(reinterpret_cast<float*>(dst + i * row), td[1],
                                                                std::numeric_limits<float>::quiet_NaN());
    if (table.element_type() == ffi::DataType::BF16)
      std::fill_n(reinterpret_cast<uint16_t*>(dst + i * row), td[1], uint16_t{0x7FC0});  // bf16 quiet NaN
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrWriteSlots, WriteSlots,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("axis"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrTakeRows, TakeRows,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>());
