// A device as the runtime sees it: kernels by OpKind, an allocator, and the communicator of
// the mesh it belongs to. CPU now; CUDA + NCCL slot in behind the same three interfaces.
#pragma once

#include "executor/backend/allocator.h"
#include "executor/backend/communicator.h"
#include "executor/backend/kernels.h"

namespace alpa::exec {

struct Device {
  Kernels* kernels = nullptr;
  Allocator* allocator = nullptr;
  Communicator* communicator = nullptr;
};

}  // namespace alpa::exec
