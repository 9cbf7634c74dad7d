// Lowering of a hierarchical (pipeline) plan to what each stage runs: which nodes of the
// training graph of one microbatch belong to which stage, the boundary tensors that cross
// stages (activations forward, their gradients backward), the parameters several stages hold
// (a tied embedding), and each stage's instruction list for one step under the plan's schedule
// (1F1B or GPipe), emitted before the first step so no rank needs central control.
//
// Stage rules: a forward node belongs to the stage of its layer; a backward node to the stage
// of the forward node it derives from; the sum of an activation's gradient contributions runs in
// the earliest stage that contributes (a later stage's part is sent down to it); a parameter is
// held by every stage whose forward nodes read it, each holder sums its own contributions to
// the gradient and the holders exchange those sums once per step, then each applies the same
// update. The schedule's order per stage is the one the planner's schedule model simulates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/autodiff/training_graph.h"
#include "planner/inter_op/stage_dp.h"
#include "planner/plan/plan.h"

namespace alpa {

struct PipelineSplit {
  int stages = 0;
  // Per node of the training graph: the stages that run it (several for a shared parameter's
  // update and the sums of its gradient; empty for none).
  std::vector<std::vector<int>> node_stages;
  struct Boundary {
    TensorId tensor = kNoId;
    int from = 0, to = 0;   // producing and reading stage
    bool backward = false;  // a gradient (sent during the backward), else an activation
    int64_t bytes = 0;      // one microbatch
    // The tensor the graph makes before a rank program's collectives convert it (the same on
    // every rank; `tensor` is what this program sends or reads).
    TensorId root = kNoId;
  };
  std::vector<Boundary> boundaries;  // by root, then reading stage
  struct SharedParameter {
    size_t slot = 0;          // index into TrainingGraph::parameters
    std::vector<int> stages;  // holders, ascending
  };
  std::vector<SharedParameter> shared;
};

// `tg` is the training graph of one microbatch built from the plan's model; forward node k of it
// is forward node k of the plan's graph. Throws UserError naming `plan_source` and the element
// when the plan's layers do not cover the forward nodes in order, or a tensor would have to flow
// against the pipeline.
// A rank program (build_rank_program) may sort its nodes otherwise than the model: `canonical`
// is then the plan's training graph, whose first `canonical_forward_nodes` nodes give the order
// the layers refer to.
PipelineSplit split_pipeline(const TrainingGraph& tg, const Plan& plan, const std::string& plan_source,
                             const Graph* canonical = nullptr, size_t canonical_forward_nodes = 0);

// What one stage runs of `tg`: the nodes it runs (`active`), the tensors it sends (`exported`),
// and the graph with each shared parameter's gradient sum reduced to this stage's own
// contributions (a sum whose other input another stage makes becomes an Identity).
struct StageProgram {
  TrainingGraph tg;
  std::vector<bool> active;    // per node
  std::vector<bool> exported;  // per tensor
};
StageProgram stage_program(TrainingGraph tg, const PipelineSplit& split, int stage);

enum class PipeOp : uint8_t {
  kRecvActivation,  // boundary `boundary` of microbatch `microbatch`, from its producing stage
  kForward,
  kSendActivation,
  kRecvGradient,
  kBackward,        // also accumulates the microbatch's parameter gradients
  kSendGradient,
  kSyncShared,      // exchange the step's gradient sum of shared parameter `shared` with its holders
  kUpdate,          // the optimizer update
};
const char* pipe_op_name(PipeOp op);

struct PipeInstruction {
  PipeOp op = PipeOp::kForward;
  int64_t microbatch = -1;
  int index = -1;  // boundary (send/recv) or shared parameter (sync)
};

// The stage's instructions for one step of `microbatches` microbatches.
std::vector<PipeInstruction> stage_instructions(const PipelineSplit& split, int stage, Schedule schedule,
                                                int64_t microbatches);

}  // namespace alpa
