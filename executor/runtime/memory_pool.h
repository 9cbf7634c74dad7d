// Host memory for tensors, with the accounting the plan's estimates are held to: bytes in use
// and the high-water mark, including kernel scratch space.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "executor/backend/allocator.h"

namespace alpa::exec {

class MemoryPool : public Allocator {
 public:
  MemoryPool() = default;
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;
  ~MemoryPool() override;

  void* allocate(size_t bytes) override;  // zero-filled, 64-byte aligned
  void release(void* ptr) override;

  int64_t bytes_in_use() const override { return in_use_; }
  int64_t peak_bytes() const override { return peak_; }
  void reset_peak() override { peak_ = in_use_; }

 private:
  std::unordered_map<void*, size_t> sizes_;
  int64_t in_use_ = 0;
  int64_t peak_ = 0;
};

}  // namespace alpa::exec
