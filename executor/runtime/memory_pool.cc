#include "executor/runtime/memory_pool.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "planner/common/error.h"

namespace alpa::exec {

MemoryPool::~MemoryPool() {
  for (auto& [ptr, size] : sizes_) std::free(ptr);
}

void* MemoryPool::allocate(size_t bytes) {
  const size_t rounded = ((bytes + 63) / 64) * 64;
  void* ptr = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!ptr) throw std::bad_alloc();
  std::memset(ptr, 0, rounded == 0 ? 64 : rounded);
  sizes_[ptr] = bytes;
  in_use_ += static_cast<int64_t>(bytes);
  if (in_use_ > peak_) peak_ = in_use_;
  return ptr;
}

void MemoryPool::release(void* ptr) {
  if (!ptr) return;
  auto it = sizes_.find(ptr);
  ALPA_CHECK(it != sizes_.end(), "release of memory the pool did not allocate");
  in_use_ -= static_cast<int64_t>(it->second);
  sizes_.erase(it);
  std::free(ptr);
}

}  // namespace alpa::exec
