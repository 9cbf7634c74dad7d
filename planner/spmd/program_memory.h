// What a rank program holds in memory while it trains one step, tensor by tensor, as alpa-run's
// trainer allocates and frees (executor/runtime/trainer.cc): the figure a plan promises and
// alpa-run's allocator measures. The search's own model (simulate_memory, over the training
// graph in the plan's specs) does not see the buffers the lowering inserts: the outputs of
// Reshard nodes (a gathered operand next to its shard, a partial sum before its reduction).
#pragma once

#include <cstdint>

#include "planner/autodiff/training_graph.h"

namespace alpa {

struct ProgramMemory {
  int64_t persistent_bytes = 0;  // parameters, buffers, constants and optimizer state
  int64_t peak_bytes = 0;        // the step's high-water mark, those included
};

// One step of `microbatches` microbatches of a single-stage rank program (or one device's
// training graph): persistent tensors live throughout; each microbatch's inputs, then each node's
// outputs allocated when it runs and freed after their last reader (the loss, gradients and
// updated state kept to the microbatch's end); the first microbatch's gradients kept as the
// step's accumulators, later ones added and freed; then the optimizer-phase nodes. Kernel scratch
// space is not counted.
ProgramMemory simulate_program_memory(const TrainingGraph& program, int64_t microbatches);

}  // namespace alpa
