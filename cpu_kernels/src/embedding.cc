// Gathering embedding rows on the CPU, as an XLA FFI handler (cpu_kernels/embedding.py), on the raw bytes of any
// dtype. XLA:CPU converted a whole bf16 embedding table to float32 (or copied it) to gather a few rows, once per
// sampler call.
//
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

ffi::Error TakeRows(ffi::AnyBuffer table, ffi::Buffer<ffi::S32> ids, ffi::Result<ffi::AnyBuffer> out) {
  const auto td = table.dimensions();
  if (td.size() != 2 || ids.dimensions().size() != 1 || out->element_type() != table.element_type())
    return ffi::Error::InvalidArgument("take_rows needs a table [V, d] and ids [n]");
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrrTakeRows, TakeRows,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>());
