// One MPI rank of a single-stage plan: its communicators (one per logical mesh axis, plus a
// control channel that carries no planned traffic), the collectives of the lowering performed
// on local buffers, and the hooks that make a Trainer run this rank's part of each step.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "executor/comm/mpi_communicator.h"
#include "executor/runtime/trainer.h"
#include "planner/spmd/lowering.h"

namespace alpa::exec {

struct RankComms {
  std::unique_ptr<MpiCommunicator> world;    // every rank; used only to split the others
  std::unique_ptr<MpiCommunicator> control;  // loss reporting, metrics, error agreement
  std::unique_ptr<MpiCommunicator> axis[2];  // the ranks that differ only in one mesh coordinate
  std::unique_ptr<MpiCommunicator> pipe;     // pipeline plans: point to point between stages
};

// Collective over MPI_COMM_WORLD, whose size must be view.size(): rank r is logical device
// (r / d1, r % d1).
RankComms make_rank_comms(const LogicalMesh& view);
// A pipeline plan: the axis groups of this rank's stage (rank `index` of the stage is logical
// device (index / d1, index % d1) of `view`), and `pipe` over every rank. Collective over
// MPI_COMM_WORLD.
RankComms make_pipeline_comms(int stage, int index, const LogicalMesh& view);


// Performs a resharding's steps (planner/spmd/reshard.h semantics: all-reduce, reduce-scatter,
// all-gather, all-to-all, padding and trims, then the local slice) on this rank's block `in` of
// the src spec (its padded local shape), writing its block `out` of the dst spec. `coord` is the
// rank's logical (i0, i1); comms.axis must be the groups along each axis of `view`.
void perform_reshard(const RankLowering::ReshardStep& step, const LogicalMesh& view, const int64_t coord[2],
                     const void* in, void* out, RankComms& comms);

// Sums over the ranks of the lowering's batch axes (axis 1, then axis 0), in place.
void sum_over_axes(AxisMask axes, void* data, int64_t count, DType dtype, RankComms& comms);

// The Trainer hooks of a batch-parallel lowering: synchronised BatchNorm statistics, partial
// outputs reduced in place, and the Reshard nodes of the rank program (build_rank_program)
// performed through the one resharding function's steps. `tg` is the rank program; `lowering`
// and `comms` must outlive the trainer.
BatchParallel batch_parallel_hooks(const RankLowering& lowering, const TrainingGraph& tg, RankComms& comms);

// Bytes this rank has sent on the planned communicators (the axes), per collective kind
// ("all_reduce", ...), every kind present.
std::map<std::string, int64_t> planned_traffic(const RankComms& comms);

// Whether any rank passed true (an all-reduce on the control channel).
bool any_rank(RankComms& comms, bool flag);

}  // namespace alpa::exec
