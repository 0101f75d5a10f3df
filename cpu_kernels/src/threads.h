// Running parts of one XLA FFI call on XLA's own intra-op threads (shared by the CPU kernels).
#pragma once

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

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

// A team for one FFI call that runs many short parallel loops (a whole decoder layer): the caller and up to
// `helpers` of XLA's intra-op threads, each helper woken once per call and kept between loops by spinning,
// instead of once per loop (a wake-up costs as much as a small product). As in ParallelFor, parts are claimed
// from one counter, so a helper that starts late (or never) only means the caller runs more parts itself.
class Team {
 public:
  // helpers: at most XLA's intra-op threads and the CPUs this process may run on, less the caller's (helpers
  // spin: more threads than CPUs would take turns, and XLA's pool can be larger, e.g. with fake devices).
  Team(xla::ffi::ThreadPool& pool, int64_t helpers) : state_(std::make_shared<State>()) {
    helpers_ = std::max<int64_t>(
        0, std::min({helpers, static_cast<int64_t>(pool.num_threads()) - 1, Cpus() - 1, int64_t{kMaxRanges - 1}}));
    for (int64_t i = 0; i < helpers_; ++i) pool.Schedule([s = state_] { Help(s.get()); });
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  ~Team() {
    state_->stop.store(true);  // sequentially consistent with `inside`: a helper either sees it or is waited for
    while (state_->inside.load() > 0) _mm_pause();
  }

  int64_t size() const { return helpers_ + 1; }  // threads that may run parts: the caller and its helpers

  // fn(begin, end) over runs of [0, n) that together cover it once, on the team. Each thread streams its own
  // contiguous range (one part per thread) from the front, in runs of a quarter of what is left; a thread whose
  // range is done takes single items from the back of the range with the most left. A product's weights stay long contiguous streams (the
  // tiles' prefetch runs ahead within them) while the threads still finish together: with many small parts
  // claimed from one counter each part started a new stream, and with one fixed part per thread the first
  // thread done waited for the other.
  void ForRanges(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t parts = std::min<int64_t>(size(), std::max<int64_t>(n, 1));
    for (int64_t t = 0; t < parts; ++t) ranges_[t].bounds.store(Pack(n * t / parts, n * (t + 1) / parts));
    For(parts, [&](int64_t own) {
      for (int64_t i, end; (i = TakeFront(own, &end)) >= 0;) fn(i, end);
      for (;;) {  // steal from the back of the range with the most left
        int64_t victim = -1, most = 0;
        for (int64_t t = 0; t < parts; ++t) {
          const uint64_t b = ranges_[t].bounds.load(std::memory_order_relaxed);
          if (Hi(b) - Lo(b) > most) most = Hi(b) - Lo(b), victim = t;
        }
        if (victim < 0) return;
        const int64_t i = TakeBack(victim);
        if (i >= 0) fn(i, i + 1);
      }
    });
  }

  // fn(part) for every part in [0, parts), on the team; returns when all have run.
  void For(int64_t parts, const std::function<void(int64_t)>& fn) {
    State& s = *state_;
    const uint64_t gen = ++generation_, slot = gen % kSlots;
    s.parts[slot].store(parts, std::memory_order_relaxed);
    s.fn[slot].store(&fn, std::memory_order_relaxed);
    s.done.store(0, std::memory_order_relaxed);
    s.ticket.store(gen << 32, std::memory_order_release);
    while (Claim(&s)) {
    }
    while (s.done.load(std::memory_order_acquire) < parts) _mm_pause();
  }

 private:
  static constexpr uint64_t kSlots = 4;
  static constexpr int kMaxRanges = 64;
  struct alignas(64) Range {
    std::atomic<uint64_t> bounds{0};  // front << 32 | back: items [front, back) not yet taken
  };
  static uint64_t Pack(int64_t lo, int64_t hi) { return static_cast<uint64_t>(lo) << 32 | static_cast<uint64_t>(hi); }
  static int64_t Lo(uint64_t b) { return static_cast<int64_t>(b >> 32); }
  static int64_t Hi(uint64_t b) { return static_cast<int64_t>(b & 0xFFFFFFFFu); }
  // The first items left in range t, taken: a quarter of what is left (at least one), so that the owner's runs
  // shrink as the others may come to take from the back. Returns the first and sets *end; -1 when none is left.
  int64_t TakeFront(int64_t t, int64_t* end) {
    uint64_t b = ranges_[t].bounds.load(std::memory_order_relaxed);
    while (Lo(b) < Hi(b)) {
      *end = Lo(b) + std::max<int64_t>(1, (Hi(b) - Lo(b)) / 4);
      if (ranges_[t].bounds.compare_exchange_weak(b, Pack(*end, Hi(b)), std::memory_order_relaxed)) return Lo(b);
    }
    return -1;
  }
  // the last item left in range t, taken; -1 when none is left
  int64_t TakeBack(int64_t t) {
    uint64_t b = ranges_[t].bounds.load(std::memory_order_relaxed);
    while (Lo(b) < Hi(b))
      if (ranges_[t].bounds.compare_exchange_weak(b, Pack(Lo(b), Hi(b) - 1), std::memory_order_relaxed)) return Hi(b) - 1;
    return -1;
  }
  Range ranges_[kMaxRanges];
  struct State {
    std::atomic<uint64_t> ticket{0};  // generation << 32 | next unclaimed part
    std::atomic<int64_t> done{0};     // parts of the current generation finished
    std::atomic<bool> stop{false};
    std::atomic<int> inside{0};  // helpers that may still touch a loop
    std::atomic<int64_t> parts[kSlots] = {};  // per generation, in slot generation % kSlots
    std::atomic<const std::function<void(int64_t)>*> fn[kSlots] = {};
  };

  // Claims and runs one part of the current loop; false when none is left.
  static bool Claim(State* s) {
    uint64_t t = s->ticket.load(std::memory_order_acquire);
    const uint64_t gen = t >> 32, slot = gen % kSlots;
    if (gen == 0 || static_cast<int64_t>(t & 0xFFFFFFFFu) >= s->parts[slot].load(std::memory_order_relaxed))
      return false;
    if (!s->ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) return true;  // raced: try again
    // the caller waits for this part, so fn is alive
    (*s->fn[slot].load(std::memory_order_relaxed))(static_cast<int64_t>(t & 0xFFFFFFFFu));
    s->done.fetch_add(1, std::memory_order_release);
    return true;
  }

  static int64_t Cpus() {
    static const int64_t cpus = [] {
      cpu_set_t set;
      if (sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<int64_t>(CPU_COUNT(&set));
      return std::max<int64_t>(1, std::thread::hardware_concurrency());
    }();
    return cpus;
  }

  static void Help(State* s) {
    s->inside.fetch_add(1);
    while (!s->stop.load()) {
      if (!Claim(s)) _mm_pause();
    }
    s->inside.fetch_sub(1, std::memory_order_acq_rel);
  }

  std::shared_ptr<State> state_;
  int64_t helpers_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace qrr
