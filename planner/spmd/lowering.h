// Lowering of a single-stage plan to what one rank runs: which block of the batch it takes, the
// collectives that synchronise each parameter's gradient, and the statistics all-reduced inside
// operators. The executor performs exactly these; the plan's estimate predicts them through the
// same resharding function, so measured and predicted bytes agree by construction and a test
// holds them to it.
//
// Batch letters (data parallelism on one or both mesh axes) split the samples: each rank runs
// the training graph rebuilt for its block of them. Parameters and optimizer state may be
// sharded (ZeRO-2: gradients reduce-scattered, each rank updates its shard, the parameter
// all-gathered; ZeRO-3: parameters stored sharded and gathered where nodes read them). Other
// letters (tensor parallelism) are lowered for element-wise ops, contractions, reductions,
// softmax and normalization over unsplit axes, transposes and reshapes, and convolutions, pools
// and Flatten on channel blocks (BatchNorm's running statistics then stored in blocks): every
// tensor takes its block's shape, activations are resharded between nodes as the plan's edges
// say, partial sums are reduced after their node, reshape targets follow the block. Plans that
// split other operators are refused with a UserError naming the node.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "planner/autodiff/training_graph.h"
#include "planner/intra_op/strategy_graph.h"
#include "planner/plan/plan.h"
#include "planner/spmd/reshard.h"

namespace alpa {

struct RankLowering {
  LogicalMesh view;
  int64_t rank = 0;
  int64_t coord[2] = {0, 0};     // logical (i0, i1): device rank = i0·d1 + i1
  AxisMask batch_axes = 0;       // mesh axes the batch is split over (S0, S1 or S01)
  int64_t batch_ways = 1;        // blocks the batch is cut into
  int64_t batch_block = 0;       // this rank's block (S01: i0·d1 + i1)
  int64_t microbatch_samples = 0;  // samples per rank per microbatch
  // The plan splits the batch in some nodes only: each rank runs the whole microbatch's graph
  // (batch_ways 1, data loaded whole) and the batch is one more dim nodes take blocks of.
  bool batch_in_blocks = false;
  int64_t microbatches = 1;
  // The Reshard nodes of the rank program (build_rank_program; node attribute "reshard" is the
  // index): a parameter gathered before a node reads it (ZeRO-3, again for the backward when the
  // backward reads it), a gradient contribution reduced where the backward produces it (a
  // partial sum over the batch axes, reduced or reduce-scattered to the spec its producer wants;
  // param-like ones once per step: accumulated over the microbatches and reduced with the
  // last one), and the optimizer's shard of a parameter and the gathered update (ZeRO-2).
  struct ReshardStep {
    std::string tensor;     // the tensor it reads (name in the rank program)
    ShardingSpec src, dst;
    AxisMask src_partial = 0;
    Shape global;           // the tensor's global shape (one microbatch)
    DType dtype = DType::kFloat32;
    ReshardResult reshard;  // the collectives, as the plan costs them
    bool per_step = false;
    bool optimizer_phase = false;  // runs once per step with the optimizer update
    double scale = 1;       // then multiplied by this (the backward of a mean over the split batch)
  };
  std::vector<ReshardStep> reshards;
  // Per tensor of the plan's training graph: the spec of its stored value where the lowering
  // shards it (parameters and optimizer state), empty elsewhere.
  std::vector<ShardingSpec> stored_spec;
  // Forward outputs that come out as partial sums (the loss, a mean over a split batch):
  // reduced in place right after their node, every microbatch.
  struct OutputReduction {
    std::string tensor;
    ReshardResult reshard;
    // Then multiplied by this: a ReduceMean over the split batch divides by its local count,
    // so the sum over ranks and microbatches is scaled back to the mean.
    double scale = 1;
  };
  std::vector<OutputReduction> output_reductions;
  // Per forward node: the statistics it all-reduces over the split batch (synchronised
  // BatchNorm), every microbatch; empty for most nodes.
  std::vector<std::vector<CollectiveStep>> stats;
  // Backward edges (node, input) of means over the split batch: their contribution is scaled.
  std::map<std::pair<NodeId, size_t>, double> mean_scale;
  // What the plan's estimate says each device sends per step, per collective kind.
  std::map<std::string, double> predicted_bytes;
  PlanMemory predicted_memory;  // the estimate's memory per device
};

// `tg` and `sg` are the plan's training graph and strategy graph (plan_training_graph,
// plan_strategy_graph) and `choice` its checked choice (plan_choice). Throws UserError naming
// `plan_source` and the element when the plan is not batch-parallel.
// The mesh axes splitting a dim, major first; an axis of size 1 splits nothing (reshard.h).
std::vector<int> mesh_axes(DimSharding s, const LogicalMesh& view);
// Which block of a dim split as `s` the device at logical `coord` holds (0 when unsplit).
int64_t block_index(DimSharding s, const LogicalMesh& view, const int64_t coord[2]);

RankLowering lower_batch_parallel(const Plan& plan, const std::string& plan_source, const StrategyGraph& sg,
                                  const std::vector<int>& choice, int64_t rank);

// The rank's program: `local` (the training graph of one microbatch of this rank's block,
// built from the same model) with the lowering's Reshard nodes inserted, parameters and
// optimizer state in their stored (possibly sharded) local shapes, and every shape downstream
// re-inferred. Fills lowering.reshards.
TrainingGraph build_rank_program(RankLowering& lowering, const StrategyGraph& sg, const std::vector<int>& choice,
                                 TrainingGraph local);

}  // namespace alpa
