// One MPI rank of a pipeline plan: its stage's program (planner/spmd/pipeline_program.h) and
// the step that runs the stage's instruction list — boundary activations and gradients sent
// point to point between the stages' ranks (non-blocking sends, so 1F1B's crossing messages
// never deadlock), shared parameters' gradients exchanged between their holders, then the
// optimizer update.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "executor/comm/mpi_communicator.h"
#include "executor/runtime/trainer.h"
#include "planner/spmd/pipeline_program.h"

namespace alpa::exec {

// One timed piece of a rank's step, for --trace: compute (forward, backward, update), send,
// recv (the time blocked waiting for the message) or sync (a shared parameter's exchange).
struct TraceEvent {
  std::string name, category;
  double start_us = 0, duration_us = 0;  // since the run's common origin
};

struct PipelineRank {
  PipelineSplit split;
  int stage = 0;
  int index = 0;                             // this rank's place in its stage (its batch block)
  std::vector<std::vector<int>> stage_ranks;  // the MPI ranks of each stage, in device order
  std::vector<int64_t> stage_rows;            // samples per rank and microbatch, per stage
  std::vector<int> boundary_batch_dim;        // per boundary: 0 (rows split like the batch) or -1
  std::unique_ptr<StageProgram> program;
  std::vector<PipeInstruction> instructions;
  int64_t microbatches = 1;
  bool remat = false;  // the stage recomputes its forward during the backward
  // What the plan predicts this rank sends per step: its share of the boundary activations and
  // gradients (the plan's transfers) and its shared parameters' gradient sums.
  int64_t predicted_send_bytes = 0;
  // --trace: the events of every step so far, timed from `origin` (taken after a barrier).
  bool tracing = false;
  std::chrono::steady_clock::time_point origin;
  std::vector<TraceEvent> events;
};

// This rank's stage and place in it. Throws UserError naming `plan_source` when the stages'
// devices are not the `world` ranks, each once, or a stage's microbatch rows do not split.
PipelineRank place_pipeline(const Plan& plan, const std::string& plan_source, int rank, int world);

// The stage's program from `program` (the training graph of one microbatch of this rank's rows:
// the plan's for a one-device stage, the data-parallel rank program otherwise; `batch_dims` its
// tensors' batch dims) and the instruction list.
void build_pipeline_program(PipelineRank& pr, const Plan& plan, const std::string& plan_source, TrainingGraph program,
                            const std::vector<int>& batch_dims);

// The ranks of holder stage `other` that this rank sends a shared parameter's gradient sum to.
std::vector<int> shared_peers(const PipelineRank& pr, int other);

// One step: the instructions in order. `micro` holds each microbatch's graph inputs. Returns the
// trainer's step result (the loss is the last stage's; 0 on the others).
StepResult run_pipeline_step(PipelineRank& pr, Trainer& trainer, MpiCommunicator& p2p,
                             const std::vector<std::vector<const void*>>& micro, int64_t step, double normalizer);

}  // namespace alpa::exec
