// Running parts of one XLA FFI call on XLA's own intra-op threads (shared by the CPU kernels).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace qrr {

// fn(part) for every part in [0, parts), on the calling thread and XLA's intra-op threads. Parts are
// claimed from one counter, so the caller never waits for a task no thread has started: it runs every
// unclaimed part itself, then waits only for parts already running.
inline void ParallelFor(xla::ffi::ThreadPool& pool, int64_t parts, std::function<void(int64_t)> fn) {
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

}  // namespace qrr
