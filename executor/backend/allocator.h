// Device memory, with the accounting plans are held to (bytes in use, high-water mark).
#pragma once

#include <cstddef>
#include <cstdint>

namespace alpa::exec {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;  // zero-filled; throws std::bad_alloc
  virtual void release(void* ptr) = 0;
  virtual int64_t bytes_in_use() const = 0;
  virtual int64_t peak_bytes() const = 0;
  virtual void reset_peak() = 0;
};

}  // namespace alpa::exec
