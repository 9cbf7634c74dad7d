#include "executor/comm/pipeline_rank.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "planner/common/log.h"
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


void build_pipeline_program(PipelineRank& pr, const Plan& plan, const std::string& src, TrainingGraph tg,
                            const Graph& plan_graph, size_t plan_forward_nodes, const std::function<Box(TensorId)>& box_of) {
  const PlanPipeline& pl = *plan.pipeline;
  pr.split = split_pipeline(tg, plan, src, &plan_graph, plan_forward_nodes);
  // The block of each boundary tensor this rank sends or reads.
  const Graph& g = tg.graph;
  const size_t nb = pr.split.boundaries.size();
  pr.my_box.assign(nb, {});
  for (size_t k = 0; k < nb; ++k) {
    const auto& b = pr.split.boundaries[k];
    if (b.from != pr.stage && b.to != pr.stage) continue;
    pr.my_box[k] = box_of(b.tensor);
    if (pr.my_box[k].size() > static_cast<size_t>(kMaxBoxDims)) {
      throw UserError(src, "/pipeline/stages/" + std::to_string(pr.stage),
                      "boundary tensor \"" + g.tensor(b.root).name + "\" has more than " + std::to_string(kMaxBoxDims) + " dims");
    }
  }
  pr.boundary_elem.clear();
  pr.boundary_numel.clear();
  for (const auto& b : pr.split.boundaries) {
    pr.boundary_elem.push_back(dtype_bytes(g.tensor(b.tensor).dtype));
    pr.boundary_numel.push_back(plan_graph.tensor(b.root).numel());
  }
  pr.shared_elem.clear();
  for (const auto& sh : pr.split.shared) pr.shared_elem.push_back(dtype_bytes(g.tensor(tg.parameters[sh.slot].grad).dtype));
  pr.program = std::make_unique<StageProgram>(stage_program(std::move(tg), pr.split, pr.stage));
  const Schedule schedule = pl.schedule == "gpipe" ? Schedule::kGPipe : Schedule::k1F1B;
  pr.instructions = stage_instructions(pr.split, pr.stage, schedule, plan.microbatches);
  if (debug_enabled(DebugChannel::kPipeline)) {
    std::string line = "stage " + std::to_string(pr.stage) + "." + std::to_string(pr.index) + ":";
    for (const PipeInstruction& in : pr.instructions) {
      line += std::string(" ") + pipe_op_name(in.op) + "(" + std::to_string(in.microbatch) + "," + std::to_string(in.index) + ")";
    }
    debug_line(DebugChannel::kPipeline, "%s", line.c_str());
    for (size_t k = 0; k < nb; ++k) {
      if (pr.my_box[k].empty()) continue;
      std::string box;
      for (const auto& [lo, hi] : pr.my_box[k]) box += "[" + std::to_string(lo) + "," + std::to_string(hi) + ")";
      debug_line(DebugChannel::kPipeline, "stage %d.%d boundary %zu %s (%d -> %d): %s", pr.stage, pr.index, k,
                 pr.program->tg.graph.tensor(pr.split.boundaries[k].tensor).name.c_str(), pr.split.boundaries[k].from,
                 pr.split.boundaries[k].to, box.c_str());
    }
  }
}

std::vector<int64_t> box_table(const PipelineRank& pr) {
  const size_t nb = pr.my_box.size(), ns = pr.my_shared_box.size();
  std::vector<int64_t> out((nb + ns) * 2 * kMaxBoxDims, -1);
  for (size_t k = 0; k < nb + ns; ++k) {
    const Box& box = k < nb ? pr.my_box[k] : pr.my_shared_box[k - nb];
    for (size_t d = 0; d < box.size(); ++d) {
      out[k * 2 * kMaxBoxDims + 2 * d] = box[d].first;
      out[k * 2 * kMaxBoxDims + 2 * d + 1] = box[d].second;
    }
  }
  return out;
}

namespace {

int64_t volume(const Box& box) {
  int64_t n = 1;
  for (const auto& [lo, hi] : box) n *= hi - lo;
  return n;
}

// Intersections of `want` with each distinct block of `ranks` (their blocks in `boxes`), each
// from the rank at `place` modulo the ranks holding that block.
void pieces_from(const std::vector<int>& ranks, const std::vector<Box>& boxes, const Box& want, size_t place, int reader,
                 std::vector<PipelinePiece>& out) {
  std::map<Box, std::vector<int>> holders;
  for (int r : ranks) holders[boxes[static_cast<size_t>(r)]].push_back(r);
  for (const auto& [have, rs] : holders) {
    Box piece(want.size());
    bool empty = have.size() != want.size();
    for (size_t d = 0; d < want.size() && !empty; ++d) {
      piece[d] = {std::max(want[d].first, have[d].first), std::min(want[d].second, have[d].second)};
      empty = piece[d].second <= piece[d].first;
    }
    if (!empty) out.push_back({rs[place % rs.size()], reader, std::move(piece)});
  }
}

// The readers of one stage, grouped by the block each needs: a block k > 1 readers share is cut
// into k slices along its first dim of at least k elements (none: taken whole by each). Appends
// to `pieces` what each reader takes from `senders` and to `relays` what it passes on to the
// other readers of its group.
void pieces_with_relays(const std::vector<int>& senders, const std::vector<Box>& boxes, const std::vector<int>& readers,
                        int origin, std::vector<PipelinePiece>& pieces, std::vector<PipelinePiece>& relays) {
  std::map<Box, std::vector<size_t>> groups;  // block → places of the readers needing it
  for (size_t j = 0; j < readers.size(); ++j) groups[boxes[static_cast<size_t>(readers[j])]].push_back(j);
  for (const auto& [want, places] : groups) {
    const int64_t k = static_cast<int64_t>(places.size());
    size_t cut = want.size();
    for (size_t d = 0; d < want.size() && k > 1; ++d) {
      if (want[d].second - want[d].first >= k) {
        cut = d;
        break;
      }
    }
    // Every element a reader needs comes from exactly one holder.
    auto take = [&](const Box& box, size_t j) {
      const size_t before = pieces.size();
      pieces_from(senders, boxes, box, j, readers[j], pieces);
      int64_t got = 0;
      for (size_t p = before; p < pieces.size(); ++p) {
        pieces[p].origin = origin;
        got += volume(pieces[p].box);
      }
      ALPA_CHECK(got == volume(box), "pipeline: rank " + std::to_string(readers[j]) + " needs " + std::to_string(volume(box)) +
                                         " elements of a block, and its senders hold " + std::to_string(got) + " of them");
    };
    if (k == 1 || cut == want.size()) {
      for (size_t j : places) take(want, j);
      continue;
    }
    const int64_t lo = want[cut].first, extent = want[cut].second - want[cut].first;
    for (int64_t q = 0; q < k; ++q) {
      Box slice = want;
      slice[cut] = {lo + q * extent / k, lo + (q + 1) * extent / k};
      const size_t j = places[static_cast<size_t>(q)];
      take(slice, j);
      for (size_t other : places) {
        if (other != j) relays.push_back({readers[j], readers[other], slice, origin});
      }
    }
  }
}

}  // namespace

void finish_pipeline_layout(PipelineRank& pr, const Plan& plan, std::vector<int64_t> all_boxes, int world) {
  // Every rank's block of every boundary tensor and shared gradient (entries end at the first -1).
  const size_t nb = pr.split.boundaries.size(), ns = pr.split.shared.size();
  std::vector<std::vector<Box>> boxes(nb + ns, std::vector<Box>(static_cast<size_t>(world)));  // [entry][rank]
  for (size_t k = 0; k < nb + ns; ++k) {
    for (int r = 0; r < world; ++r) {
      const size_t at = (static_cast<size_t>(r) * (nb + ns) + k) * 2 * kMaxBoxDims;
      Box& box = boxes[k][static_cast<size_t>(r)];
      for (size_t d = 0; d < static_cast<size_t>(kMaxBoxDims) && all_boxes[at + 2 * d] >= 0; ++d) {
        box.emplace_back(all_boxes[at + 2 * d], all_boxes[at + 2 * d + 1]);
      }
    }
  }
  // Each receiving rank takes each part of its block from one holder: among the sending ranks
  // that hold the same block, the one at the receiver's place modulo their count. Readers that
  // need the same block take a slice each and relay it to the others. A shared gradient's
  // holders each take theirs from every other holder stage.
  pr.pieces.assign(nb, {});
  pr.relays.assign(nb, {});
  for (size_t k = 0; k < nb; ++k) {
    const auto& b = pr.split.boundaries[k];
    // The sending stage's ranks hold the whole tensor between them (distinct blocks are disjoint).
    std::set<Box> held;
    for (int r : pr.stage_ranks[static_cast<size_t>(b.from)]) held.insert(boxes[k][static_cast<size_t>(r)]);
    int64_t covered = 0;
    for (const Box& box : held) covered += volume(box);
    ALPA_CHECK(covered == pr.boundary_numel[k], "pipeline: the ranks of stage " + std::to_string(b.from) + " hold " +
                                                    std::to_string(covered) + " of the " + std::to_string(pr.boundary_numel[k]) +
                                                    " elements of boundary tensor " + std::to_string(k));
    pieces_with_relays(pr.stage_ranks[static_cast<size_t>(b.from)], boxes[k], pr.stage_ranks[static_cast<size_t>(b.to)], -1,
                       pr.pieces[k], pr.relays[k]);
  }
  pr.shared_pieces.assign(ns, {});
  pr.shared_relays.assign(ns, {});
  for (size_t q = 0; q < ns; ++q) {
    const auto& sh = pr.split.shared[q];
    for (int reader_stage : sh.stages) {
      for (int from : sh.stages) {
        if (from == reader_stage) continue;
        pieces_with_relays(pr.stage_ranks[static_cast<size_t>(from)], boxes[nb + q],
                           pr.stage_ranks[static_cast<size_t>(reader_stage)], from, pr.shared_pieces[q], pr.shared_relays[q]);
      }
    }
  }
  // What the plan's traffic is on this rank: its pieces and relays of every boundary (each
  // microbatch), and of its shared parameters' gradient sums (once per step).
  auto sent = [&](const std::vector<std::vector<PipelinePiece>>& lists, const std::vector<int64_t>& elem, int64_t times) {
    int64_t bytes = 0;
    for (size_t k = 0; k < lists.size(); ++k) {
      for (const PipelinePiece& p : lists[k]) {
        if (p.sender == pr.self) bytes += times * volume(p.box) * elem[k];
      }
    }
    return bytes;
  };
  pr.predicted_relay_bytes = sent(pr.relays, pr.boundary_elem, plan.microbatches) + sent(pr.shared_relays, pr.shared_elem, 1);
  pr.predicted_send_bytes = sent(pr.pieces, pr.boundary_elem, plan.microbatches) + sent(pr.shared_pieces, pr.shared_elem, 1) +
                            pr.predicted_relay_bytes;
}

namespace {

// Copies `piece` between a block's buffer (its `box`, laid out row-major with `extent` elements
// per dim, padding included) and a contiguous buffer of the piece: out of the block when
// `pack`, into it otherwise.
void copy_piece(uint8_t* block, const Box& box, const Shape& extent, const Box& piece, uint8_t* flat, int64_t elem, bool pack) {
  const size_t dims = piece.size();
  if (dims == 0) {
    if (pack) std::memcpy(flat, block, static_cast<size_t>(elem));
    else std::memcpy(block, flat, static_cast<size_t>(elem));
    return;
  }
  std::vector<int64_t> stride(dims, 1);
  for (size_t d = dims - 1; d-- > 0;) stride[d] = stride[d + 1] * extent[d + 1];
  const int64_t run = (piece[dims - 1].second - piece[dims - 1].first) * elem;
  std::vector<int64_t> at(dims);
  for (size_t d = 0; d < dims; ++d) at[d] = piece[d].first;
  for (;;) {
    int64_t offset = 0;
    for (size_t d = 0; d < dims; ++d) offset += (at[d] - box[d].first) * stride[d];
    uint8_t* here = block + offset * elem;
    if (pack) std::memcpy(flat, here, static_cast<size_t>(run));
    else std::memcpy(here, flat, static_cast<size_t>(run));
    flat += run;
    size_t d = dims - 1;  // the next run: odometer over every dim but the last
    while (d-- > 0) {
      if (++at[d] < piece[d].second) break;
      at[d] = piece[d].first;
    }
    if (d == SIZE_MAX) return;
  }
}

}  // namespace

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

// The local all-gather of a block this rank and others of its stage took in slices (the relays
// of data from `origin`): sends the slices it holds to the others (non-blocking), then receives
// theirs into `block`.
void relay(PipelineRank& pr, MpiCommunicator& p2p, const std::vector<PipelinePiece>& relays, int origin, uint8_t* block,
           const Box& box, const Shape& extent, DType dtype, int tag) {
  const int64_t elem = dtype_bytes(dtype);
  std::vector<uint8_t> flat;
  for (const PipelinePiece& p : relays) {
    if (p.sender != pr.self || p.origin != origin) continue;
    flat.resize(static_cast<size_t>(volume(p.box) * elem));
    copy_piece(block, box, extent, p.box, flat.data(), elem, /*pack=*/true);
    p2p.isend(flat.data(), volume(p.box), dtype, p.reader, tag);  // isend copies
    pr.relay_bytes_sent += volume(p.box) * elem;
  }
  for (const PipelinePiece& p : relays) {
    if (p.reader != pr.self || p.origin != origin) continue;
    flat.resize(static_cast<size_t>(volume(p.box) * elem));
    p2p.recv(flat.data(), volume(p.box), dtype, p.sender, tag);
    copy_piece(block, box, extent, p.box, flat.data(), elem, /*pack=*/false);
  }
}

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
    pr.events.push_back({"update", "compute", 0, std::chrono::duration<double, std::micro>(start - pr.origin).count(),
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
        // From the ranks holding them, the parts of the block this rank holds.
        const size_t k = static_cast<size_t>(in.index);
        const Tensor& t = g.tensor(pr.split.boundaries[k].tensor);
        auto* dst = static_cast<uint8_t*>(trainer.provide(m, pr.split.boundaries[k].tensor));
        const int64_t elem = dtype_bytes(t.dtype);
        std::vector<uint8_t> flat;
        for (const PipelinePiece& p : pr.pieces[k]) {
          if (p.reader != pr.self) continue;
          flat.resize(static_cast<size_t>(volume(p.box) * elem));
          p2p.recv(flat.data(), volume(p.box), t.dtype, p.sender, in.index);
          copy_piece(dst, pr.my_box[k], t.shape, p.box, flat.data(), elem, /*pack=*/false);
        }
        relay(pr, p2p, pr.relays[k], -1, dst, pr.my_box[k], t.shape, t.dtype, in.index);
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
        // To each reader, the parts of its block this rank is to send.
        const size_t k = static_cast<size_t>(in.index);
        const Tensor& t = g.tensor(pr.split.boundaries[k].tensor);
        auto* src = const_cast<uint8_t*>(static_cast<const uint8_t*>(trainer.slot_value(m, pr.split.boundaries[k].tensor)));
        const int64_t elem = dtype_bytes(t.dtype);
        std::vector<uint8_t> flat;
        for (const PipelinePiece& p : pr.pieces[k]) {
          if (p.sender != pr.self) continue;
          flat.resize(static_cast<size_t>(volume(p.box) * elem));
          copy_piece(src, pr.my_box[k], t.shape, p.box, flat.data(), elem, /*pack=*/true);
          p2p.isend(flat.data(), volume(p.box), t.dtype, p.reader, in.index);  // isend copies
        }
        // After the phase's last send the trainer frees what it exported.
        const PipeInstruction* next = &in + 1 < pr.instructions.data() + pr.instructions.size() ? &in + 1 : nullptr;
        if (!next || next->op != in.op || next->microbatch != in.microbatch) trainer.release_exports(m);
        break;
      }
      case PipeOp::kSyncShared: {
        // Each holder sends the parts of its block the other holders' ranks take from it, and
        // sums every holder's part of its own block in stage order, so all holders end with
        // identical sums.
        const size_t q = static_cast<size_t>(in.index);
        const auto& sh = pr.split.shared[q];
        const Tensor& grad = g.tensor(tg.parameters[sh.slot].grad);
        auto* mine = static_cast<uint8_t*>(trainer.accumulated_gradient(sh.slot));
        ALPA_CHECK(mine != nullptr, "pipeline: stage " + std::to_string(pr.stage) + " has no gradient of '" + grad.name + "'");
        const int tag = nb + in.index;
        const int64_t elem = dtype_bytes(grad.dtype);
        const Box& box = pr.my_shared_box[q];
        const std::vector<PipelinePiece>& pieces = pr.shared_pieces[q];
        std::vector<uint8_t> flat;
        for (const PipelinePiece& p : pieces) {
          if (p.sender != pr.self) continue;
          flat.resize(static_cast<size_t>(volume(p.box) * elem));
          copy_piece(mine, box, grad.shape, p.box, flat.data(), elem, /*pack=*/true);
          p2p.isend(flat.data(), volume(p.box), grad.dtype, p.reader, tag);
        }
        std::vector<uint8_t> sum(static_cast<size_t>(grad.bytes()), 0), part(static_cast<size_t>(grad.bytes()), 0);
        auto add = [&](const void* p) {
          if (grad.dtype == DType::kFloat64) add_into<double>(sum.data(), p, grad.numel());
          else add_into<float>(sum.data(), p, grad.numel());
        };
        for (int s : sh.stages) {
          if (s == pr.stage) {
            add(mine);
            continue;
          }
          std::fill(part.begin(), part.end(), 0);
          for (const PipelinePiece& p : pieces) {
            if (p.reader != pr.self || p.origin != s) continue;
            flat.resize(static_cast<size_t>(volume(p.box) * elem));
            p2p.recv(flat.data(), volume(p.box), grad.dtype, p.sender, tag);
            copy_piece(part.data(), box, grad.shape, p.box, flat.data(), elem, /*pack=*/false);
          }
          // The other slices of holder s's sum, from this stage's ranks.
          relay(pr, p2p, pr.shared_relays[q], s, part.data(), box, grad.shape, grad.dtype, tag);
          add(part.data());
        }
        p2p.wait_sends();
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
