#include "executor/comm/pipeline_rank.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

#include "planner/common/error.h"

namespace alpa::exec {

PipelineRank place_pipeline(const Plan& plan, const std::string& src, int rank, int world) {
  PipelineRank pr;
  const PlanPipeline& pl = *plan.pipeline;
  std::vector<int> owner(static_cast<size_t>(world), -1);
  int64_t devices = 0;
  pr.stage = -1;
  const int64_t rows = plan.global_batch / plan.microbatches;
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
        pr.stage = static_cast<int>(s);
        pr.index = static_cast<int>(pr.stage_ranks.back().size());
      }
      pr.stage_ranks.back().push_back(static_cast<int>(id));
      devices += 1;
    }
    const int64_t n = static_cast<int64_t>(st.device_ids.size());
    if (n == 0 || rows % n != 0) {
      throw UserError(src, where + "/device_ids", "a microbatch of " + std::to_string(rows) + " samples does not split over " +
                      std::to_string(n) + " devices");
    }
    pr.stage_rows.push_back(rows / n);
  }
  if (devices != world) {
    throw UserError(src, "pipeline", "the plan's stages use " + std::to_string(devices) + " devices, but mpirun started " +
                    std::to_string(world) + " ranks; run mpirun -np " + std::to_string(devices));
  }
  pr.microbatches = plan.microbatches;
  pr.remat = pl.stages[static_cast<size_t>(pr.stage)].remat;
  return pr;
}

namespace {

// The rows [first, end) of a microbatch that rank `index` of a stage with `rows` per rank holds.
std::pair<int64_t, int64_t> rows_of(int64_t rows, int index) { return {index * rows, (index + 1) * rows}; }

// Bytes rank `index` of stage `from` sends of a boundary whose whole tensor (one microbatch) is
// `bytes`: its rows that each reader needs (rows split like the batch), or the whole tensor to
// each reader whose place it serves (replicated: reader j from sender j mod senders).
int64_t share_sent(const PipelineRank& pr, int from, int to, int index, int batch_dim, int64_t bytes) {
  const int64_t na = static_cast<int64_t>(pr.stage_ranks[static_cast<size_t>(from)].size());
  const int64_t nb = static_cast<int64_t>(pr.stage_ranks[static_cast<size_t>(to)].size());
  int64_t out = 0;
  for (int64_t j = 0; j < nb; ++j) {
    if (batch_dim < 0) {
      if (j % na == index) out += bytes;
      continue;
    }
    const auto [a0, a1] = rows_of(pr.stage_rows[static_cast<size_t>(from)], index);
    const auto [b0, b1] = rows_of(pr.stage_rows[static_cast<size_t>(to)], static_cast<int>(j));
    const int64_t overlap = std::max<int64_t>(0, std::min(a1, b1) - std::max(a0, b0));
    out += bytes / (pr.stage_rows[static_cast<size_t>(from)] * na) * overlap;
  }
  return out;
}

}  // namespace

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
                            const std::vector<int>& batch_dims) {
  const PlanPipeline& pl = *plan.pipeline;
  pr.split = split_pipeline(tg, plan, src);
  // Each boundary's batch dim: an activation's own; a gradient's that of the tensor it is the
  // gradient of (autodiff's contributions and their sums).
  const Graph& g = tg.graph;
  std::vector<TensorId> grad_of(g.num_tensors(), kNoId);
  for (const GradEdge& e : tg.grad_edges) {
    if (static_cast<size_t>(e.grad) < grad_of.size()) grad_of[e.grad] = g.node(e.node).inputs[e.input];
  }
  for (size_t k = tg.num_forward_nodes; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    if ((n.kind == OpKind::kAdd || n.kind == OpKind::kReshard) && grad_of[n.outputs[0]] == kNoId && grad_of[n.inputs[0]] != kNoId) {
      grad_of[n.outputs[0]] = grad_of[n.inputs[0]];
    }
  }
  std::map<std::string, int> dim_by_name;
  for (const auto& b : pr.split.boundaries) {
    const TensorId of = b.backward ? grad_of[b.tensor] : b.tensor;
    ALPA_CHECK(of != kNoId, "pipeline: gradient boundary '" + g.tensor(b.tensor).name + "' of no known tensor");
    const int d = static_cast<size_t>(of) < batch_dims.size() ? batch_dims[of] : -1;
    const bool split = pr.stage_ranks[static_cast<size_t>(b.from)].size() > 1 || pr.stage_ranks[static_cast<size_t>(b.to)].size() > 1;
    if (split && d > 0) {
      throw UserError(src, "pipeline", "boundary tensor \"" + g.tensor(b.tensor).name + "\" has its batch in dim " + std::to_string(d) +
                      "; stages on several devices exchange rows of dim 0 only");
    }
    pr.boundary_batch_dim.push_back(d);
    if (!b.backward) dim_by_name[g.tensor(b.tensor).name] = d;
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
  // The plan's traffic, as this rank's share of it.
  for (const PlanTransfer& t : pl.transfers) {
    auto d = dim_by_name.find(t.tensor);
    const int dim = d == dim_by_name.end() ? -1 : d->second;
    if (t.from_stage == pr.stage) pr.predicted_send_bytes += plan.microbatches * share_sent(pr, static_cast<int>(t.from_stage), static_cast<int>(t.to_stage), pr.index, dim, t.bytes);
    if (t.to_stage == pr.stage) pr.predicted_send_bytes += plan.microbatches * share_sent(pr, static_cast<int>(t.to_stage), static_cast<int>(t.from_stage), pr.index, dim, t.bytes);
  }
  for (const PlanSharedParameter& sp : pl.shared) {
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
        // From each rank of the producing stage, the rows of this rank's block it holds.
        const auto& b = pr.split.boundaries[static_cast<size_t>(in.index)];
        const Tensor& t = g.tensor(b.tensor);
        auto* dst = static_cast<uint8_t*>(trainer.provide(m, b.tensor));
        const auto& senders = pr.stage_ranks[static_cast<size_t>(b.from)];
        const int dim = pr.boundary_batch_dim[static_cast<size_t>(in.index)];
        if (dim < 0 || (senders.size() == 1 && pr.stage_ranks[static_cast<size_t>(pr.stage)].size() == 1)) {
          p2p.recv(dst, t.numel(), t.dtype, senders[static_cast<size_t>(pr.index) % senders.size()], in.index);
          break;
        }
        const int64_t row = t.numel() / t.shape[0];
        const auto [m0, m1] = rows_of(pr.stage_rows[static_cast<size_t>(pr.stage)], pr.index);
        for (size_t a = 0; a < senders.size(); ++a) {
          const auto [a0, a1] = rows_of(pr.stage_rows[static_cast<size_t>(b.from)], static_cast<int>(a));
          const int64_t lo = std::max(m0, a0), hi = std::min(m1, a1);
          if (hi <= lo) continue;
          p2p.recv(dst + (lo - m0) * row * dtype_bytes(t.dtype), (hi - lo) * row, t.dtype, senders[a], in.index);
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
        // To each rank of the reading stage, the rows of its block this rank holds.
        const auto& b = pr.split.boundaries[static_cast<size_t>(in.index)];
        const Tensor& t = g.tensor(b.tensor);
        const auto* src = static_cast<const uint8_t*>(trainer.slot_value(m, b.tensor));
        const auto& readers = pr.stage_ranks[static_cast<size_t>(b.to)];
        const int dim = pr.boundary_batch_dim[static_cast<size_t>(in.index)];
        const size_t senders = pr.stage_ranks[static_cast<size_t>(pr.stage)].size();
        if (dim < 0 || (senders == 1 && readers.size() == 1)) {
          for (size_t j = 0; j < readers.size(); ++j) {
            if (j % senders == static_cast<size_t>(pr.index)) p2p.isend(src, t.numel(), t.dtype, readers[j], in.index);
          }
        } else {
          const int64_t row = t.numel() / t.shape[0];
          const auto [m0, m1] = rows_of(pr.stage_rows[static_cast<size_t>(pr.stage)], pr.index);
          for (size_t j = 0; j < readers.size(); ++j) {
            const auto [b0, b1] = rows_of(pr.stage_rows[static_cast<size_t>(b.to)], static_cast<int>(j));
            const int64_t lo = std::max(m0, b0), hi = std::min(m1, b1);
            if (hi > lo) p2p.isend(src + (lo - m0) * row * dtype_bytes(t.dtype), (hi - lo) * row, t.dtype, readers[j], in.index);
          }
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
