#include "executor/comm/pipeline_rank.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

#include "planner/common/error.h"
#include "planner/common/format.h"

namespace alpa::exec {

PipelineRank place_pipeline(const Plan& plan, const std::string& src, int rank, int world) {
  PipelineRank pr;
  const PlanPipeline& pl = *plan.pipeline;
  std::vector<int> owner(static_cast<size_t>(world), -1);
  int64_t devices = 0;
  pr.stage = -1;
  for (size_t s = 0; s < pl.stages.size(); ++s) {
    const PlanStage& st = pl.stages[s];
    const std::string where = "/pipeline/stages/" + std::to_string(s);
    pr.stage_ranks.emplace_back();
    for (int64_t id : st.device_ids) {
      if (id < 0 || id >= world) {
        throw UserError(src, where + "/device_ids", "device " + std::to_string(id) + " is not one of the " + std::to_string(world) +
                        " ranks; run mpirun -np with the plan's device count");
      }
      if (owner[static_cast<size_t>(id)] >= 0) {
        throw UserError(src, where + "/device_ids", "device " + std::to_string(id) + " is also in stage " + std::to_string(owner[static_cast<size_t>(id)]));
      }
      owner[static_cast<size_t>(id)] = static_cast<int>(s);
      if (id == rank) {
        pr.self = rank;
        pr.stage = static_cast<int>(s);
        pr.index = static_cast<int>(pr.stage_ranks.back().size());
      }
      pr.stage_ranks.back().push_back(static_cast<int>(id));
      devices += 1;
    }
    if (st.device_ids.empty()) throw UserError(src, where + "/device_ids", "a stage needs at least one device");
  }
  if (devices != world) {
    throw UserError(src, "pipeline", "the plan's stages use " + std::to_string(devices) + " devices, but mpirun started " +
                    std::to_string(world) + " ranks; run mpirun -np " + std::to_string(devices));
  }
  pr.microbatches = plan.microbatches;
  pr.remat = pl.stages[static_cast<size_t>(pr.stage)].remat;
  return pr;
}

std::vector<int> shared_peers(const PipelineRank& pr, int other) {
  // Every rank of a holder stage has the stage's whole gradient sum (reduced inside the stage):
  // rank i of `other` takes it from this stage's rank i mod (this stage's size).
  std::vector<int> out;
  const auto& ranks = pr.stage_ranks[static_cast<size_t>(other)];
  const size_t mine = pr.stage_ranks[static_cast<size_t>(pr.stage)].size();
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i % mine == static_cast<size_t>(pr.index)) out.push_back(ranks[i]);
  }
  return out;
}

void build_pipeline_program(PipelineRank& pr, const Plan& plan, const std::string& src, TrainingGraph tg,
                            const Graph& plan_graph, size_t plan_forward_nodes, int64_t batch_ways, int64_t batch_block) {
  const PlanPipeline& pl = *plan.pipeline;
  pr.split = split_pipeline(tg, plan, src, &plan_graph, plan_forward_nodes);
  // The rows of each boundary tensor this rank holds: all of them (a stage of one device, or a
  // tensor its stage replicates), or its block of the batch; other layouts are refused.
  const Graph& g = tg.graph;
  const int64_t nb = static_cast<int64_t>(pr.split.boundaries.size());
  pr.my_rows.assign(static_cast<size_t>(nb), {-1, -1});
  for (int64_t k = 0; k < nb; ++k) {
    const auto& b = pr.split.boundaries[static_cast<size_t>(k)];
    if (b.from != pr.stage && b.to != pr.stage) continue;
    const Shape& local = g.tensor(b.tensor).shape;
    const Shape& whole = plan_graph.tensor(b.root).shape;
    bool rest_whole = local.size() == whole.size() && !local.empty();
    for (size_t d = 1; rest_whole && d < local.size(); ++d) rest_whole = local[d] == whole[d];
    if (rest_whole && local[0] == whole[0]) {
      pr.my_rows[static_cast<size_t>(k)] = {0, whole[0]};
    } else if (rest_whole && local[0] * batch_ways == whole[0]) {
      pr.my_rows[static_cast<size_t>(k)] = {batch_block * local[0], (batch_block + 1) * local[0]};
    } else {
      throw UserError(src, "/pipeline/stages/" + std::to_string(pr.stage),
                      "boundary tensor \"" + g.tensor(b.root).name + "\" is held here as " + format_dims(local) + " of " +
                          format_dims(whole) + "; stages exchange tensors whole or split by batch rows (dim 0) only");
    }
  }
  pr.program = std::make_unique<StageProgram>(stage_program(std::move(tg), pr.split, pr.stage));
  const Schedule schedule = pl.schedule == "gpipe" ? Schedule::kGPipe : Schedule::k1F1B;
  pr.instructions = stage_instructions(pr.split, pr.stage, schedule, plan.microbatches);
  if (std::getenv("ALPA_DEBUG_PIPELINE")) {
    std::string line = "stage " + std::to_string(pr.stage) + "." + std::to_string(pr.index) + ":";
    for (const PipeInstruction& in : pr.instructions) {
      line += std::string(" ") + pipe_op_name(in.op) + "(" + std::to_string(in.microbatch) + "," + std::to_string(in.index) + ")";
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

std::vector<PipelinePiece> boundary_pieces(const PipelineRank& pr, size_t k) {
  // Each receiving rank takes each range of rows it needs from one holder: among the sending
  // ranks that hold the same rows, the one at the receiver's place modulo their count.
  const auto& b = pr.split.boundaries[k];
  const auto& senders = pr.stage_ranks[static_cast<size_t>(b.from)];
  const auto& readers = pr.stage_ranks[static_cast<size_t>(b.to)];
  std::vector<PipelinePiece> out;
  for (size_t j = 0; j < readers.size(); ++j) {
    const auto [r0, r1] = pr.rows[k][static_cast<size_t>(readers[j])];
    std::map<std::pair<int64_t, int64_t>, std::vector<int>> holders;  // by row range, ascending
    for (int s : senders) holders[pr.rows[k][static_cast<size_t>(s)]].push_back(s);
    for (const auto& [range, ranks] : holders) {
      const int64_t lo = std::max(r0, range.first), hi = std::min(r1, range.second);
      if (hi > lo) out.push_back({ranks[j % ranks.size()], readers[j], lo, hi});
    }
  }
  return out;
}

void finish_pipeline_layout(PipelineRank& pr, const Plan& plan, const Graph& plan_graph, std::vector<int64_t> all_rows, int world) {
  const size_t nb = pr.split.boundaries.size();
  pr.rows.assign(nb, std::vector<std::pair<int64_t, int64_t>>(static_cast<size_t>(world)));
  for (size_t k = 0; k < nb; ++k) {
    for (int r = 0; r < world; ++r) {
      const size_t at = (static_cast<size_t>(r) * nb + k) * 2;
      pr.rows[k][static_cast<size_t>(r)] = {all_rows[at], all_rows[at + 1]};
    }
  }
  // What the plan's traffic is on this rank: its pieces of every boundary (each row of the
  // tensor is its bytes over the rows), and its shared parameters' gradient sums.
  pr.predicted_send_bytes = 0;
  for (size_t k = 0; k < nb; ++k) {
    const auto& b = pr.split.boundaries[k];
    if (b.from != pr.stage) continue;
    const Tensor& whole = plan_graph.tensor(b.root);
    for (const PipelinePiece& p : boundary_pieces(pr, k)) {
      if (p.sender == pr.stage_ranks[static_cast<size_t>(pr.stage)][static_cast<size_t>(pr.index)]) {
        pr.predicted_send_bytes += plan.microbatches * whole.bytes() / whole.shape[0] * (p.hi - p.lo);
      }
    }
  }
  for (const PlanSharedParameter& sp : plan.pipeline->shared) {
    if (std::count(sp.stages.begin(), sp.stages.end(), pr.stage) == 0) continue;
    for (int64_t s : sp.stages) {
      if (s != pr.stage) pr.predicted_send_bytes += sp.bytes * static_cast<int64_t>(shared_peers(pr, static_cast<int>(s)).size());
    }
  }
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
        // From the ranks holding them, the rows of the tensor this rank holds.
        const size_t k = static_cast<size_t>(in.index);
        const Tensor& t = g.tensor(pr.split.boundaries[k].tensor);
        auto* dst = static_cast<uint8_t*>(trainer.provide(m, pr.split.boundaries[k].tensor));
        const int64_t row = t.numel() / t.shape[0];
        const int64_t first = pr.my_rows[k].first;
        for (const PipelinePiece& p : boundary_pieces(pr, k)) {
          if (p.reader != pr.self) continue;
          p2p.recv(dst + (p.lo - first) * row * dtype_bytes(t.dtype), (p.hi - p.lo) * row, t.dtype, p.sender, in.index);
        }
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
        // To each reader, the rows of its part this rank is to send.
        const size_t k = static_cast<size_t>(in.index);
        const Tensor& t = g.tensor(pr.split.boundaries[k].tensor);
        const auto* src = static_cast<const uint8_t*>(trainer.slot_value(m, pr.split.boundaries[k].tensor));
        const int64_t row = t.numel() / t.shape[0];
        const int64_t first = pr.my_rows[k].first;
        for (const PipelinePiece& p : boundary_pieces(pr, k)) {
          if (p.sender != pr.self) continue;
          p2p.isend(src + (p.lo - first) * row * dtype_bytes(t.dtype), (p.hi - p.lo) * row, t.dtype, p.reader, in.index);
        }
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
          if (s == pr.stage) continue;
          for (int peer : shared_peers(pr, s)) p2p.isend(mine, grad.numel(), grad.dtype, peer, tag);
        }
        std::vector<uint8_t> sum(static_cast<size_t>(grad.bytes()), 0), part(static_cast<size_t>(grad.bytes()));
        for (int s : sh.stages) {
          const void* p = mine;
          if (s != pr.stage) {
            const auto& from = pr.stage_ranks[static_cast<size_t>(s)];
            p2p.recv(part.data(), grad.numel(), grad.dtype, from[static_cast<size_t>(pr.index) % from.size()], tag);
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
