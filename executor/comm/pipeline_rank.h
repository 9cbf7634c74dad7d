// One MPI rank of a pipeline plan: its stage's program (planner/spmd/pipeline_program.h) and
// the step that runs the stage's instruction list — boundary activations and gradients sent
// point to point between the stages' ranks (non-blocking sends, so 1F1B's crossing messages
// never deadlock), shared parameters' gradients exchanged between their holders, then the
// optimizer update.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "executor/comm/mpi_communicator.h"
#include "executor/runtime/trainer.h"
#include "planner/plan/trace.h"
#include "planner/spmd/pipeline_program.h"

namespace alpa::exec {

// --trace's events (planner/plan/trace.h): one timed piece of a rank's step — compute (forward,
// backward, update), send, recv (the time blocked waiting for the message) or sync (a shared
// parameter's exchange) — its start since the run's common origin; the track is the rank's.

// A block of a tensor: [lo, hi) of each dim of the whole tensor (one microbatch).
using Box = std::vector<std::pair<int64_t, int64_t>>;

// Part of one boundary tensor sent from one rank to another. A relay (the paper's local
// all-gather) goes between two ranks of the receiving stage that hold the same block: each took
// a 1/k slice of it from the sending stage and passes it to the others; `origin` is the stage
// the data came from (a shared gradient's holder), -1 for boundary tensors.
struct PipelinePiece {
  int sender = 0, reader = 0;
  Box box;
  int origin = -1;
};

struct PipelineRank {
  PipelineSplit split;
  int stage = 0;
  int index = 0;  // this rank's place in its stage
  int self = 0;   // its MPI rank
  std::vector<std::vector<int>> stage_ranks;  // the MPI ranks of each stage, in device order
  // Per boundary: the block of the tensor this rank holds (empty when it neither sends nor reads
  // it), and after finish_pipeline_layout every rank's.
  std::vector<Box> my_box;
  // Per shared parameter: the block of its gradient this rank holds.
  std::vector<Box> my_shared_box;     // set by the caller after build_pipeline_program
  std::vector<int64_t> boundary_elem;  // bytes per element of each boundary tensor
  std::vector<int64_t> boundary_numel;  // and its elements, whole (one microbatch)
  std::vector<int64_t> shared_elem;    // and of each shared gradient
  // After finish_pipeline_layout, the same on every rank: the parts each boundary tensor (per
  // microbatch) and each shared gradient (per step) travel in.
  std::vector<std::vector<PipelinePiece>> pieces;
  std::vector<std::vector<PipelinePiece>> shared_pieces;
  // The relays inside the receiving stages, per boundary tensor and per shared gradient.
  std::vector<std::vector<PipelinePiece>> relays;
  std::vector<std::vector<PipelinePiece>> shared_relays;
  std::vector<std::vector<Box>> shared_boxes;  // [shared][rank]
  std::unique_ptr<StageProgram> program;
  std::vector<PipeInstruction> instructions;
  int64_t microbatches = 1;
  bool remat = false;  // the stage recomputes its forward during the backward
  // What the plan's traffic is on this rank per step: its pieces of the boundary activations
  // and gradients, and its shared parameters' gradient sums (finish_pipeline_layout).
  int64_t predicted_send_bytes = 0;
  int64_t predicted_relay_bytes = 0;  // of which relays inside the stage
  int64_t relay_bytes_sent = 0;       // relays sent so far (measured where they are sent)
  // --trace: the events of every step so far, timed from `origin` (taken after a barrier).
  bool tracing = false;
  std::chrono::steady_clock::time_point origin;
  std::vector<TraceEvent> events;
};

// This rank's stage and place in it. Throws UserError naming `plan_source` when the stages'
// devices are not the `world` ranks, each once.
PipelineRank place_pipeline(const Plan& plan, const std::string& plan_source, int rank, int world);

// The stage's program from `program` (the training graph of one microbatch as this rank runs it:
// the plan's for a one-device stage, the stage's rank program otherwise) and the instruction
// list. `box_of` gives the block of a tensor of the program this rank holds; `plan_graph` is the
// plan's training graph (whole shapes, the model's order of its first `plan_forward_nodes`
// nodes).
void build_pipeline_program(PipelineRank& pr, const Plan& plan, const std::string& plan_source, TrainingGraph program,
                            const Graph& plan_graph, size_t plan_forward_nodes, const std::function<Box(TensorId)>& box_of);

// The width of one boundary's entry in the table the ranks exchange (kMaxBoxDims dims, lo and hi).
inline constexpr int kMaxBoxDims = 6;

// Once every rank's box_table is known (gathered rank-major): the pieces of every boundary
// tensor and shared gradient, and the plan's traffic on this rank.
void finish_pipeline_layout(PipelineRank& pr, const Plan& plan, std::vector<int64_t> all_boxes, int world);

// This rank's entries of that table.
std::vector<int64_t> box_table(const PipelineRank& pr);

// One step: the instructions in order. `micro` holds each microbatch's graph inputs. Returns the
// trainer's step result (the loss is the last stage's; 0 on the others).
StepResult run_pipeline_step(PipelineRank& pr, Trainer& trainer, MpiCommunicator& p2p,
                             const std::vector<std::vector<const void*>>& micro, int64_t step, double normalizer);

}  // namespace alpa::exec
