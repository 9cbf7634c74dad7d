// parallel_for over [0, n) in a TBB arena of `threads` threads (<= 0: every core; 1: serially,
// in index order). Bodies write to pre-sized slots, so results never depend on the thread count.
// Include only from sources that link TBB (the ILP passes).
#pragma once

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <cstddef>

namespace alpa {

template <typename F>
void parallel_for_index(int threads, size_t n, F&& body) {
  if (n == 0) return;
  if (threads == 1 || n == 1) {
    for (size_t i = 0; i < n; ++i) body(i);
    return;
  }
  tbb::task_arena arena(threads > 0 ? threads : tbb::task_arena::automatic);
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, n, [&](size_t i) { body(i); }, tbb::simple_partitioner());
  });
}

}  // namespace alpa
