#include "executor/comm/pipeline_rank.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "planner/common/error.h"

namespace alpa::exec {

PipelineRank make_pipeline_rank(const Plan& plan, const std::string& src, TrainingGraph tg, int rank, int world) {
  PipelineRank pr;
  const PlanPipeline& pl = *plan.pipeline;
  int64_t devices = 0;
  pr.stage = -1;
  for (size_t s = 0; s < pl.stages.size(); ++s) {
    const PlanStage& st = pl.stages[s];
    const std::string where = "/pipeline/stages/" + std::to_string(s);
    if (st.device_ids.size() != 1) {
      throw UserError(src, where + "/device_ids", "a stage on " + std::to_string(st.device_ids.size()) +
                      " devices: this version of alpa-run executes pipeline stages of one device each");
    }
    const int64_t id = st.device_ids[0];
    if (id < 0 || id >= world) {
      throw UserError(src, where + "/device_ids", "device " + std::to_string(id) + " is not one of the " + std::to_string(world) + " ranks");
    }
    if (std::count(pr.stage_rank.begin(), pr.stage_rank.end(), static_cast<int>(id)) > 0) {
      throw UserError(src, where + "/device_ids", "device " + std::to_string(id) + " runs two stages");
    }
    pr.stage_rank.push_back(static_cast<int>(id));
    if (id == rank) pr.stage = static_cast<int>(s);
    devices += 1;
  }
  if (devices != world) {
    throw UserError(src, "pipeline", "the plan's stages use " + std::to_string(devices) + " devices, but mpirun started " +
                    std::to_string(world) + " ranks; run mpirun -np " + std::to_string(devices));
  }
  pr.microbatches = plan.microbatches;
  pr.remat = pl.stages[static_cast<size_t>(pr.stage)].remat;
  pr.split = split_pipeline(tg, plan, src);
  pr.program = std::make_unique<StageProgram>(stage_program(std::move(tg), pr.split, pr.stage));
  const Schedule schedule = pl.schedule == "gpipe" ? Schedule::kGPipe : Schedule::k1F1B;
  pr.instructions = stage_instructions(pr.split, pr.stage, schedule, plan.microbatches);
  if (std::getenv("ALPA_DEBUG_PIPELINE")) {
    std::string line = "stage " + std::to_string(pr.stage) + ":";
    for (const PipeInstruction& in : pr.instructions) {
      line += std::string(" ") + pipe_op_name(in.op) + "(" + std::to_string(in.microbatch) + "," + std::to_string(in.index) + ")";
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  for (const PlanTransfer& t : pl.transfers) {
    if (t.from_stage == pr.stage) pr.predicted_send_bytes += t.bytes * plan.microbatches;  // the activation
    if (t.to_stage == pr.stage) pr.predicted_send_bytes += t.bytes * plan.microbatches;    // its gradient back
  }
  for (const PlanSharedParameter& sp : pl.shared) {
    if (std::count(sp.stages.begin(), sp.stages.end(), pr.stage) > 0) {
      pr.predicted_send_bytes += sp.bytes * static_cast<int64_t>(sp.stages.size() - 1);
    }
  }
  return pr;
}

namespace {

template <typename T>
void add_into(void* acc, const void* part, int64_t n) {
  T* a = static_cast<T*>(acc);
  const T* p = static_cast<const T*>(part);
  for (int64_t i = 0; i < n; ++i) a[i] += p[i];
}

void run_instruction(PipelineRank& pr, Trainer& trainer, MpiCommunicator& p2p,
                     const std::vector<std::vector<const void*>>& micro, const PipeInstruction& in, size_t m, int nb,
                     const TrainingGraph& tg);

}  // namespace

StepResult run_pipeline_step(PipelineRank& pr, Trainer& trainer, MpiCommunicator& p2p,
                             const std::vector<std::vector<const void*>>& micro, int64_t step, double normalizer) {
  const TrainingGraph& tg = trainer.training_graph();
  const Graph& g = tg.graph;
  const int nb = static_cast<int>(pr.split.boundaries.size());
  trainer.begin_step(step, normalizer, static_cast<size_t>(pr.microbatches));
  for (const PipeInstruction& in : pr.instructions) {
    const size_t m = static_cast<size_t>(in.microbatch);
    const auto start = std::chrono::steady_clock::now();
    run_instruction(pr, trainer, p2p, micro, in, m, nb, tg);
    if (!pr.tracing) continue;
    const auto end = std::chrono::steady_clock::now();
    TraceEvent e;
    const bool boundary = in.op == PipeOp::kRecvActivation || in.op == PipeOp::kRecvGradient ||
                          in.op == PipeOp::kSendActivation || in.op == PipeOp::kSendGradient;
    e.name = std::string(pipe_op_name(in.op)) + (in.microbatch >= 0 ? " " + std::to_string(in.microbatch) : "");
    if (boundary) e.name += " " + g.tensor(pr.split.boundaries[static_cast<size_t>(in.index)].tensor).name;
    if (in.op == PipeOp::kSyncShared) e.name += " " + g.tensor(tg.parameters[pr.split.shared[static_cast<size_t>(in.index)].slot].param).name;
    e.category = in.op == PipeOp::kRecvActivation || in.op == PipeOp::kRecvGradient ? "recv"
                 : in.op == PipeOp::kSendActivation || in.op == PipeOp::kSendGradient ? "send"
                 : in.op == PipeOp::kSyncShared ? "sync" : "compute";
    e.start_us = std::chrono::duration<double, std::micro>(start - pr.origin).count();
    e.duration_us = std::chrono::duration<double, std::micro>(end - start).count();
    pr.events.push_back(std::move(e));
  }
  const auto start = std::chrono::steady_clock::now();
  p2p.wait_sends();
  StepResult r = trainer.end_step();
  if (pr.tracing) {
    const auto end = std::chrono::steady_clock::now();
    pr.events.push_back({"update", "compute", std::chrono::duration<double, std::micro>(start - pr.origin).count(),
                         std::chrono::duration<double, std::micro>(end - start).count()});
  }
  return r;
}

namespace {

void run_instruction(PipelineRank& pr, Trainer& trainer, MpiCommunicator& p2p,
                     const std::vector<std::vector<const void*>>& micro, const PipeInstruction& in, size_t m, int nb,
                     const TrainingGraph& tg) {
  const Graph& g = tg.graph;
  {
    switch (in.op) {
      case PipeOp::kRecvActivation:
      case PipeOp::kRecvGradient: {
        const auto& b = pr.split.boundaries[static_cast<size_t>(in.index)];
        const Tensor& t = g.tensor(b.tensor);
        p2p.recv(trainer.provide(m, b.tensor), t.numel(), t.dtype, pr.stage_rank[static_cast<size_t>(b.from)], in.index);
        break;
      }
      case PipeOp::kForward:
        trainer.forward(m, micro.at(m));
        break;
      case PipeOp::kBackward:
        trainer.backward(m);
        break;
      case PipeOp::kSendActivation:
      case PipeOp::kSendGradient: {
        const auto& b = pr.split.boundaries[static_cast<size_t>(in.index)];
        const Tensor& t = g.tensor(b.tensor);
        p2p.isend(trainer.slot_value(m, b.tensor), t.numel(), t.dtype, pr.stage_rank[static_cast<size_t>(b.to)], in.index);
        // After the phase's last send the trainer frees what it exported.
        const PipeInstruction* next = &in + 1 < pr.instructions.data() + pr.instructions.size() ? &in + 1 : nullptr;
        if (!next || next->op != in.op || next->microbatch != in.microbatch) trainer.release_exports(m);
        break;
      }
      case PipeOp::kSyncShared: {
        // Every holder sends its part to the others and sums all parts in stage order, so the
        // holders end with identical sums.
        const auto& sh = pr.split.shared[static_cast<size_t>(in.index)];
        const Tensor& grad = g.tensor(tg.parameters[sh.slot].grad);
        void* mine = trainer.accumulated_gradient(sh.slot);
        ALPA_CHECK(mine != nullptr, "pipeline: stage " + std::to_string(pr.stage) + " has no gradient of '" + grad.name + "'");
        const int tag = nb + in.index;
        for (int s : sh.stages) {
          if (s != pr.stage) p2p.isend(mine, grad.numel(), grad.dtype, pr.stage_rank[static_cast<size_t>(s)], tag);
        }
        std::vector<uint8_t> sum(static_cast<size_t>(grad.bytes()), 0), part(static_cast<size_t>(grad.bytes()));
        for (int s : sh.stages) {
          const void* p = mine;
          if (s != pr.stage) {
            p2p.recv(part.data(), grad.numel(), grad.dtype, pr.stage_rank[static_cast<size_t>(s)], tag);
            p = part.data();
          }
          if (grad.dtype == DType::kFloat64) add_into<double>(sum.data(), p, grad.numel());
          else add_into<float>(sum.data(), p, grad.numel());
        }
        p2p.wait_sends();  // `mine` is copied by isend, but keep the exchange's sends bounded
        std::memcpy(mine, sum.data(), sum.size());
        break;
      }
      case PipeOp::kUpdate:
        break;  // end_step, after the loop
    }
  }
}

}  // namespace

}  // namespace alpa::exec
