#include "planner/spmd/lowering.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "planner/common/log.h"
#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/graph/shape_inference.h"
#include "planner/intra_op/search.h"

namespace alpa {
namespace {

constexpr const char* kWhatRuns =
    "alpa-run executes batch-parallel plans (parameters and optimizer state replicated or sharded "
    "as ZeRO does) and tensor parallelism of element-wise ops, contractions, reductions and of "
    "convolutions and pools on channel blocks in this version; plans that split other operators "
    "are searched and costed but not executed yet";

// Operators whose kernels run unchanged on a block of any of their dims: element-wise ops,
// contractions (a split contraction dim leaves a partial sum, reduced after the node),
// reductions (likewise), softmax and normalization over an unsplit axis (a split one exchanges
// statistics, refused below), transposes and reshapes (targets rewritten to the block); and on
// blocks of the dims they do not index: a Gather of a whole table at a block of indices, a Split
// or Concat along an unsplit axis, a Slice that keeps every split dim whole.
bool runs_on_blocks(const Graph& g, const Node& n, const NodeStrategy& st) {
  const OpFamily f = op_info(n.kind).family;
  if (f == OpFamily::kElementwise || f == OpFamily::kContraction || f == OpFamily::kReduction ||
      f == OpFamily::kSoftmax || f == OpFamily::kNormalization || n.kind == OpKind::kTranspose ||
      n.kind == OpKind::kReshape || n.kind == OpKind::kUnsqueeze || (n.kind == OpKind::kSqueeze && n.attrs.has("axes"))) {
    // (A Squeeze without axes drops every dim of size 1, which a block of a split dim may be.)
    return true;
  }
  auto split = [&](const ShardingSpec& spec, int64_t d) {
    return d >= 0 && static_cast<size_t>(d) < spec.dims.size() && spec.dims[static_cast<size_t>(d)] != DimSharding::kR;
  };
  if (st.in.empty()) return false;
  const Shape& x = g.tensor(n.inputs[0]).shape;
  if (n.kind == OpKind::kSoftmaxCrossEntropyLoss) {
    // Vocab-parallel: the class dim split (its max and sum of exponentials all-reduced inside the
    // kernel), positions and batch as the labels; not per-position losses.
    if (n.attrs.has("reduction") && n.attrs.get_string("reduction") == "none") return false;
    for (size_t d = 2; d < st.in[0].dims.size(); ++d) if (split(st.in[0], static_cast<int64_t>(d))) return false;
    return n.inputs.size() == 2;
  }
  const int64_t rank = static_cast<int64_t>(x.size());
  if (n.kind == OpKind::kGather) {
    // The table whole, split by the rows the indices pick (a vocab-parallel embedding: rows held
    // elsewhere read as zeros, the ranks' outputs summed after the node), or split along its other
    // dims (each rank gathers its columns: the output is split the same way).
    (void)rank;
    return true;
  }
  if (n.kind == OpKind::kSplit || n.kind == OpKind::kConcat) {
    int64_t axis = n.attrs.get_int("axis", 0);
    if (axis < 0) axis += rank;
    for (const ShardingSpec& s : st.in) if (split(s, axis)) return false;
    return true;
  }
  if (n.kind == OpKind::kDropout) return true;
  if (n.kind == OpKind::kOneHot) {  // each index on its own: the new class axis whole
    if (st.out.empty()) return false;
    int64_t axis = n.attrs.get_int("axis", -1);
    if (axis < 0) axis += static_cast<int64_t>(st.out[0].dims.size());
    return !split(st.out[0], axis);
  }
  if (n.kind == OpKind::kTopK || n.kind == OpKind::kCumSum) {  // along an unsplit axis (an MoE's routing)
    int64_t axis = n.attrs.get_int("axis", -1);
    if (axis < 0) axis += rank;
    return !split(st.in[0], axis);
  }
  if (n.kind == OpKind::kConv || n.kind == OpKind::kMaxPool || n.kind == OpKind::kAveragePool ||
      n.kind == OpKind::kGlobalAveragePool || n.kind == OpKind::kFlatten) {
    // Channels split (a Conv's output channels, or its input channels leaving a partial sum);
    // the spatial dims a window slides over (and a Conv's kernel) whole.
    for (const ShardingSpec& s : st.in) {
      for (size_t d = 2; d < s.dims.size(); ++d) if (s.dims[d] != DimSharding::kR) return false;
    }
    for (const ShardingSpec& s : st.out) {
      for (size_t d = 2; d < s.dims.size(); ++d) if (s.dims[d] != DimSharding::kR) return false;
    }
    return true;
  }
  if (n.kind == OpKind::kSlice) {
    const std::vector<SliceRange> r = resolve_slice(x, n.attrs);
    for (size_t d = 0; d < r.size(); ++d) {
      if (split(st.in[0], static_cast<int64_t>(d)) && (r[d].start != 0 || r[d].step != 1 || r[d].count != x[d])) return false;
    }
    return true;
  }
  return false;
}

DimSharding sharding_of_axes(AxisMask axes) {
  if (axes == (kAxis0 | kAxis1)) return DimSharding::kS01;
  if (axes == kAxis0) return DimSharding::kS0;
  if (axes == kAxis1) return DimSharding::kS1;
  return DimSharding::kR;
}

// The local target of a reshape whose input is a block of the global one: dims are grouped as
// the reshape merges and splits them (contiguous, row-major); a group whose leading input dim is
// split keeps contiguous blocks, so its leading output dim is split the same number of ways.
// Nothing when the block is not contiguous in the output, unless `merge_any` (the result's rows
// are only summed over, in the same order as its partner's): then any block merged into one
// output dim is.
std::optional<Shape> local_reshape_target(const Shape& gin, const Shape& lin, const Shape& gout,
                                         bool merge_any = false) {
  Shape out = gout;
  size_t i = 0, j = 0;
  while (i < gin.size() || j < gout.size()) {
    const size_t i0 = i, j0 = j;
    int64_t pi = 1, po = 1;
    if (i < gin.size()) pi *= gin[i++];
    if (j < gout.size()) po *= gout[j++];
    while (pi != po) {
      if (pi < po && i < gin.size()) pi *= gin[i++];
      else if (po < pi && j < gout.size()) po *= gout[j++];
      else return std::nullopt;
    }
    if (i - i0 == 1 && j - j0 == 1) {  // one dim kept as it is: its block (padded or not)
      out[j0] = lin[i0];
      continue;
    }
    int64_t ratio = 1;
    for (size_t d = i0; d < i; ++d) {
      if (gin[d] == lin[d]) continue;
      if (lin[d] <= 0 || gin[d] % lin[d] != 0) return std::nullopt;
      // A block of an inner dim is not contiguous in the merged dim: only where the caller
      // takes the merged rows as a set (a weight gradient's GEMM over all rows).
      if (d != i0 && !(merge_any && j - j0 == 1)) return std::nullopt;
      ratio *= gin[d] / lin[d];
    }
    if (ratio > 1) {
      if (j0 >= gout.size() || gout[j0] % ratio != 0) return std::nullopt;
      out[j0] = gout[j0] / ratio;
    }
  }
  return out;
}

// The mesh axes (of more than one device) over which node `i`'s strategy splits a batch letter,
// and into how many blocks.
AxisMask node_batch_axes(const StrategyGraph& sg, const NodeStrategy& st, size_t i, int64_t* ways) {
  AxisMask axes = 0;
  if (ways) *ways = 1;
  for (int ax = 0; ax < 2; ++ax) {
    const int l = st.axis_letter[ax];
    if (l == kNoLetter || sg.costs.axis_size(ax) == 1 || !sg.spaces[i].letters[static_cast<size_t>(l)].is_batch) continue;
    axes |= static_cast<AxisMask>(1u << ax);
    if (ways) *ways *= sg.costs.axis_size(ax);
  }
  return axes;
}

std::string quoted_path(const char* section, const std::string& name) {
  return std::string("/") + section + "/\"" + name + "\"";
}

}  // namespace

std::vector<int> mesh_axes(DimSharding s, const LogicalMesh& view) {
  std::vector<int> out;
  if ((s == DimSharding::kS0 || s == DimSharding::kS01) && view.d0 > 1) out.push_back(0);
  if ((s == DimSharding::kS1 || s == DimSharding::kS01) && view.d1 > 1) out.push_back(1);
  return out;
}

int64_t block_index(DimSharding s, const LogicalMesh& view, const int64_t coord[2]) {
  int64_t index = 0;
  for (int a : mesh_axes(s, view)) index = index * (a == 0 ? view.d0 : view.d1) + coord[a];
  return index;
}

RankLowering lower_batch_parallel(const Plan& plan, const std::string& src, const StrategyGraph& sg,
                                  const std::vector<int>& choice, int64_t rank) {
  const TrainingGraph& tg = *sg.training;
  const Graph& g = tg.graph;
  RankLowering out;
  out.view = sg.costs.view;
  out.rank = rank;
  out.coord[0] = rank / out.view.d1;
  out.coord[1] = rank % out.view.d1;
  const ChosenSpecs cs = chosen_specs(sg, choice);

  // Uniform batch parallelism: every node that has a batch dim splits it over one common set of
  // mesh axes, so each rank runs the training graph rebuilt for its block of the samples. Plans
  // that split the batch in some nodes only (the ILP gathers it before a tensor-parallel MLP, say)
  // are lowered with the batch as one more split dim: each rank builds the graph of the whole
  // microbatch, loads its data whole, and nodes take blocks of it as their specs say.
  auto batch_axes_of = [&](size_t i) { return node_batch_axes(sg, *cs.node[i], i, nullptr); };
  for (size_t i = 0; i < tg.num_forward_nodes && !out.batch_in_blocks; ++i) {
    const AxisMask axes = batch_axes_of(i);
    if (axes == 0) continue;
    if (out.batch_axes != 0 && axes != out.batch_axes) out.batch_in_blocks = true;
    out.batch_axes = axes;
  }
  if (out.batch_axes != 0) {
    for (size_t i = 0; i < tg.num_forward_nodes && !out.batch_in_blocks; ++i) {
      bool has_batch = false;
      for (const Letter& l : sg.spaces[i].letters) has_batch = has_batch || l.is_batch;
      if (has_batch && batch_axes_of(i) != out.batch_axes) out.batch_in_blocks = true;
    }
  }
  if (out.batch_in_blocks) out.batch_axes = 0;
  // Every other split (and, with the batch in blocks, the batch's) must be one the kernels run
  // on blocks of.
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const NodeStrategy& st = *cs.node[i];
    const IterationSpace& sp = sg.spaces[i];
    for (int ax = 0; ax < 2; ++ax) {
      const int l = st.axis_letter[ax];
      if (l == kNoLetter || sg.costs.axis_size(ax) == 1) continue;
      if (sp.letters[static_cast<size_t>(l)].is_batch && !out.batch_in_blocks) continue;
      if (!runs_on_blocks(g, g.node(static_cast<NodeId>(i)), st)) {
        throw UserError(src, quoted_path("strategies", g.node(static_cast<NodeId>(i)).name),
                        "\"" + st.name + "\" splits a " + (sp.letters[static_cast<size_t>(l)].is_batch ? "" : "non-") +
                            "batch dim of a " + std::string(op_name(g.node(static_cast<NodeId>(i)).kind)) + " over mesh axis " +
                            std::to_string(ax) + (out.batch_in_blocks ? " (the batch split in some nodes only)" : "") + "; " +
                            kWhatRuns);
      }
    }
  }
  // A letter the lowering treats as the batch: split samples each rank's graph is rebuilt for.
  auto uniform_batch = [&](size_t i, int l) {
    return !out.batch_in_blocks && l != kNoLetter && sg.spaces[i].letters[static_cast<size_t>(l)].is_batch;
  };
  // Communication: partial outputs (the loss, means over the batch), statistics inside
  // operators, parameter gathers and gradient reductions (build_rank_program); no resharding of
  // activations.
  out.stats.assign(tg.num_forward_nodes, {});
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    const NodeStrategy& st = *cs.node[i];
    size_t output_steps = 0;
    for (size_t o = 0; o < n.outputs.size() && o < st.out_partial.size(); ++o) {
      if (!st.out_partial[o]) continue;
      const Tensor& t = g.tensor(n.outputs[o]);
      // Reductions over the split batch the lowering follows: the mean cross-entropy (its kernel
      // divides by the step's global label count, so the partial losses sum to the loss) and
      // ReduceMean (the local mean divides by the local count: scaled back after the sum, and
      // its backward likewise).
      const bool mean_loss = n.kind == OpKind::kSoftmaxCrossEntropyLoss && o == 0 &&
                             (!n.attrs.has("reduction") || n.attrs.get_string("reduction") == "mean");
      const bool mean = n.kind == OpKind::kReduceMean;
      // A sum over a split non-batch letter (a row-parallel contraction, a reduction over a
      // split dim): the partial results add up to the whole, reduced right after the node.
      bool over_model_dims = true;
      for (int ax = 0; ax < 2; ++ax) {
        if (!(st.out_partial[o] & (1u << ax))) continue;
        const int l = st.axis_letter[ax];
        over_model_dims = over_model_dims && l != kNoLetter && !uniform_batch(i, l);
      }
      const bool sum = over_model_dims && !mean && !mean_loss && op_info(n.kind).family != OpFamily::kLoss;
      if (!(mean_loss || mean || sum) || st.scatter_dim >= 0) {
        throw UserError(src, quoted_path("strategies", n.name),
                        "\"" + st.name + "\" leaves output '" + t.name + "' a partial sum over the split batch, which only "
                        "the mean SoftmaxCrossEntropyLoss and ReduceMean do in this version; " + kWhatRuns);
      }
      ReshardResult r = reshard(st.out[o], st.out_partial[o], st.out[o], t.shape, t.dtype, sg.costs);
      output_steps += r.steps.size();
      double scale = 1;
      if (mean) {
        // The kernel divides by its local count: the partial means sum to the mean times the
        // blocks over every split axis. The backward's 1/count is a constant of the rank's
        // graph, rebuilt for its batch block only: scaled by the batch blocks alone.
        int64_t ways = plan.microbatches, batch_ways = plan.microbatches;
        for (int ax = 0; ax < 2; ++ax) {
          if (!(st.out_partial[o] & (1u << ax))) continue;
          ways *= sg.costs.axis_size(ax);
          const int l = st.axis_letter[ax];
          if (uniform_batch(i, l)) batch_ways *= sg.costs.axis_size(ax);
        }
        scale = 1.0 / static_cast<double>(ways);
        out.mean_scale[{static_cast<NodeId>(i), 0}] = 1.0 / static_cast<double>(batch_ways);
      }
      out.output_reductions.push_back({t.name, std::move(r), scale});
    }
    for (size_t k = output_steps; k < st.comms.size(); ++k) {
      const CollectiveStep& step = st.comms[k];
      const int l = st.axis_letter[step.axis];
      // With the batch in blocks a BatchNorm splitting it sums its statistics over its own
      // batch axes (its "batch_axes" attribute, build_rank_program).
      const bool own_batch = out.batch_in_blocks && n.kind == OpKind::kBatchNormalization && l != kNoLetter &&
                             sg.spaces[i].letters[static_cast<size_t>(l)].is_batch;
      if (l != kNoLetter && !uniform_batch(i, l) && !own_batch && n.kind != OpKind::kSoftmaxCrossEntropyLoss) {
        throw UserError(src, quoted_path("strategies", n.name),
                        "\"" + st.name + "\" exchanges statistics over a split " +
                            (out.batch_in_blocks ? "dim (synchronised statistics need the batch split alike in every node)"
                                                 : "non-batch dim") + "; " + kWhatRuns);
      }
      out.stats[i].push_back(step);
      if (step.kind != Collective::kAllReduce) {
        throw UserError(src, quoted_path("strategies", g.node(static_cast<NodeId>(i)).name),
                        "\"" + cs.node[i]->name + "\" runs a " + std::string(collective_name(step.kind)) + " inside the node; " + kWhatRuns);
      }
    }
  }

  for (int ax = 0; ax < 2; ++ax) {
    if (out.batch_axes & (1u << ax)) out.batch_ways *= sg.costs.axis_size(ax);
  }
  if (out.batch_axes == kAxis0) out.batch_block = out.coord[0];
  else if (out.batch_axes == kAxis1) out.batch_block = out.coord[1];
  else if (out.batch_axes == (kAxis0 | kAxis1)) out.batch_block = out.coord[0] * out.view.d1 + out.coord[1];
  const int64_t per_microbatch = plan.global_batch / plan.microbatches;
  if (per_microbatch % out.batch_ways != 0) {
    throw UserError(src, "global_batch", "a microbatch of " + std::to_string(per_microbatch) + " samples does not split " +
                    std::to_string(out.batch_ways) + " ways");
  }
  out.microbatch_samples = per_microbatch / out.batch_ways;
  out.microbatches = plan.microbatches;
  const PlanEstimate estimate = estimate_choice(sg, choice, plan.global_batch);
  out.predicted_bytes = estimate.communication_bytes;
  out.predicted_memory = estimate.memory;
  return out;
}

TrainingGraph build_rank_program(RankLowering& low, const StrategyGraph& sg, const std::vector<int>& choice,
                                 TrainingGraph local) {
  const TrainingGraph& tg = *sg.training;
  const Graph& pg = tg.graph;  // the plan's graph: ids and names as in `local`
  Graph& g = local.graph;
  ALPA_CHECK(g.num_tensors() == pg.num_tensors() && g.num_nodes() == pg.num_nodes(),
             "the rank's training graph differs from the plan's");
  const ChosenSpecs cs = chosen_specs(sg, choice);
  const LogicalMesh& view = low.view;
  std::set<TensorId> reshaped;  // tensors whose local shape the lowering changed

  // Stored shapes: parameters as their spec, optimizer state as the state spec.
  low.stored_spec.assign(pg.num_tensors(), ShardingSpec{});
  for (const ParameterSlot& slot : tg.parameters) {
    const NodeStrategy& ps = *cs.param[static_cast<size_t>(slot.param)];
    low.stored_spec[static_cast<size_t>(slot.param)] = ps.out[0];
    for (TensorId s : slot.state) low.stored_spec[static_cast<size_t>(s)] = ps.state;
  }
  // Buffers a node updates in blocks (BatchNorm's running statistics under split channels) are
  // stored as the update makes them, so the next step reads and replaces the rank's block.
  for (const auto& [dst, src] : tg.state_updates) {
    if (pg.tensor(dst).role != TensorRole::kBuffer || static_cast<size_t>(src) >= cs.tensor.size()) continue;
    const ShardingSpec& made = cs.tensor[static_cast<size_t>(src)];
    bool split = false;
    for (DimSharding d : made.dims) split = split || d != DimSharding::kR;
    if (split) low.stored_spec[static_cast<size_t>(dst)] = made;
  }
  // A Gemm or Conv whose contraction dim (a Conv's input channels) is split computes partial
  // sums that are added up across the ranks: each adds 1/ranks of the bias, and the bias
  // gradient (whole on every rank, summed by the plan's reduction) is scaled back by the same
  // factor.
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = pg.node(static_cast<NodeId>(i));
    if ((n.kind != OpKind::kGemm && n.kind != OpKind::kConv) || n.inputs.size() < 3 || n.inputs[2] == kNoId) continue;
    const NodeStrategy& st = *cs.node[i];
    if (st.out_partial.empty() || st.out_partial[0] == 0) continue;
    int64_t ways = 1;
    for (int ax = 0; ax < 2; ++ax) {
      if (st.out_partial[0] & (1u << ax)) ways *= sg.costs.axis_size(ax);
    }
    if (ways == 1) continue;
    g.node(static_cast<NodeId>(i)).attrs.set("bias_scale", 1.0 / static_cast<double>(ways));
    low.mean_scale[{static_cast<NodeId>(i), 2}] = 1.0 / static_cast<double>(ways);
  }
  for (size_t t = 0; t < pg.num_tensors(); ++t) {
    const ShardingSpec& spec = low.stored_spec[t];
    if (spec.dims.empty()) continue;
    Tensor& ten = g.tensor(static_cast<TensorId>(t));
    const Shape shape = spec.local_shape(pg.tensor(static_cast<TensorId>(t)).shape, view);
    if (shape != ten.shape) {
      ten.shape = shape;
      reshaped.insert(static_cast<TensorId>(t));
    }
  }

  // Inserts a Reshard node reading `from` (whose global shape and dtype are those of plan tensor
  // `like`); returns its output.
  auto add_reshard = [&](TensorId from, TensorId like, const ShardingSpec& src_spec, AxisMask partial,
                         const ShardingSpec& dst_spec, const std::string& out_name, bool per_step, bool optimizer_phase,
                         double scale) {
    const Tensor& global = pg.tensor(like);
    RankLowering::ReshardStep step;
    step.tensor = g.tensor(from).name;
    step.src = src_spec;
    step.dst = dst_spec;
    step.src_partial = partial;
    step.global = global.shape;
    step.dtype = global.dtype;
    step.reshard = reshard(src_spec, partial, dst_spec, global.shape, global.dtype, sg.costs);
    step.per_step = per_step;
    step.optimizer_phase = optimizer_phase;
    step.scale = scale;
    Tensor t;
    t.name = out_name;
    t.dtype = global.dtype;
    t.shape = dst_spec.local_shape(global.shape, view);
    t.role = g.tensor(from).role == TensorRole::kGradient ? TensorRole::kGradient : TensorRole::kActivation;
    const TensorId out = g.add_tensor(std::move(t));
    Node n;
    n.kind = OpKind::kReshard;
    n.name = "reshard/" + std::to_string(low.reshards.size()) + "/" + out_name;
    n.inputs = {from};
    n.outputs = {out};
    n.attrs.set("reshard", static_cast<int64_t>(low.reshards.size()));
    n.attrs.set("shape", g.tensor(out).shape);
    n.attrs.set("optimizer_phase", static_cast<int64_t>(optimizer_phase ? 1 : 0));
    n.derived_from = step.tensor;
    g.add_node(std::move(n));
    low.reshards.push_back(std::move(step));
    reshaped.insert(out);
    return out;
  };
  auto rewire = [&](NodeId node, TensorId from, TensorId to) {
    for (TensorId& in : g.node(node).inputs) {
      if (in == from) in = to;
    }
  };

  std::map<std::pair<NodeId, size_t>, TensorId> contribution;
  for (const GradEdge& e : tg.grad_edges) contribution[{e.node, e.input}] = e.grad;
  std::set<std::pair<TensorId, std::string>> reduced;  // (contribution, producer it is converted for)
  // The Reshard nodes converting a gradient contribution, by the forward node whose edge it is.
  std::map<NodeId, std::string> edge_conversion_of;
  const size_t original_nodes = g.num_nodes();
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = pg.node(static_cast<NodeId>(i));
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const TensorId t = n.inputs[k];
      const EdgeReshards e = edge_reshards(sg, choice, cs, static_cast<NodeId>(i), k);
      const NodeStrategy& st = *cs.node[i];
      // The backward nodes of this node read its input as it did.
      auto rewire_backward = [&](TensorId from, TensorId to) {
        for (size_t b = tg.num_forward_nodes; b < original_nodes; ++b) {
          if (g.node(static_cast<NodeId>(b)).derived_from == n.name) rewire(static_cast<NodeId>(b), from, to);
        }
      };
      if (!e.planned) {
        // Data, labels and constants are loaded whole but for the rank's batch block; a node
        // that reads a block of other dims takes it locally.
        const Tensor& ten = pg.tensor(t);
        if (st.in[k].dims.size() != ten.shape.size()) continue;
        ShardingSpec loaded = low.stored_spec[static_cast<size_t>(t)].dims.empty() ? ShardingSpec::replicated(ten.shape.size())
                                                                                  : low.stored_spec[static_cast<size_t>(t)];
        const int bd = sg.batch_dim[static_cast<size_t>(t)];
        if (bd >= 0 && ten.producer == kNoId && ten.role != TensorRole::kConstant) {
          loaded.dims[static_cast<size_t>(bd)] = sharding_of_axes(low.batch_axes);
        }
        if (loaded == st.in[k]) continue;
        const ReshardResult r = reshard(loaded, 0, st.in[k], ten.shape, ten.dtype, sg.costs);
        ALPA_CHECK(r.steps.empty(), "input '" + ten.name + "' of '" + n.name + "' would need communication to load");
        const TensorId sliced = add_reshard(t, t, loaded, 0, st.in[k], ten.name + "@" + n.name, false, false, 1.0);
        rewire(static_cast<NodeId>(i), t, sliced);
        rewire_backward(t, sliced);
        continue;
      }
      const ShardingSpec& produced = cs.tensor[static_cast<size_t>(t)];
      // Forward: an activation resharded for this node (tensor parallelism), or a parameter (or a
      // tensor computed from parameters) gathered for it, and again for its backward when that
      // reads it.
      if ((!e.forward.steps.empty() || e.forward.local_slice) && !e.param_like) {
        const TensorId fwd = add_reshard(t, t, produced, 0, st.in[k], pg.tensor(t).name + "@" + n.name, false, false, 1.0);
        rewire(static_cast<NodeId>(i), t, fwd);
        rewire_backward(t, fwd);
      } else if (!e.forward.steps.empty() || e.forward.local_slice) {
        const std::string base = pg.tensor(t).name + "@" + n.name;
        const TensorId fwd = add_reshard(t, t, produced, 0, st.in[k], base, false, false, 1.0);
        rewire(static_cast<NodeId>(i), t, fwd);
        bool backward_reads = false;
        for (size_t b = tg.num_forward_nodes; b < original_nodes; ++b) {
          const Node& bn = g.node(static_cast<NodeId>(b));
          if (bn.derived_from != n.name) continue;
          if (std::find(bn.inputs.begin(), bn.inputs.end(), t) != bn.inputs.end()) backward_reads = true;
        }
        if (backward_reads) {
          ALPA_CHECK(e.forward_again, "the backward of '" + n.name + "' reads '" + pg.tensor(t).name +
                                          "', which the plan does not gather again");
          const TensorId bwd = add_reshard(t, t, produced, 0, st.in[k], base + "/backward", false, false, 1.0);
          for (size_t b = tg.num_forward_nodes; b < original_nodes; ++b) {
            if (g.node(static_cast<NodeId>(b)).derived_from == n.name) rewire(static_cast<NodeId>(b), t, bwd);
          }
        }
      }
      // Backward: the contribution this node gives input k, from its spec (partial where the
      // node reduced over split letters) to the spec the producer wants.
      auto ms = low.mean_scale.find({static_cast<NodeId>(i), k});
      const double scale = ms == low.mean_scale.end() ? 1.0 : ms->second;
      if (!e.has_backward) continue;
      // The parameter's optimizer-state spec; for a tensor computed from parameters, the spec
      // its producer's backward takes the gradient in; else as produced (edge_reshards).
      const ShardingSpec& target = e.grad_target;
      // A follower of a parameter (its transpose, cast, reshape) whose output's gradient was
      // converted to the state's layout runs its backward on that layout: the gradient it gives
      // the parameter is already the target's block.
      const int node_group = sg.group_of_node[i];
      if (e.param_like && node_group >= 0 && sg.groups[static_cast<size_t>(node_group)].is_parameter && !st.grad_out.empty() &&
          !(st.grad_out[0] == st.out[0])) {
        ALPA_CHECK(e.backward.steps.empty() && st.in_grad_partial[k] == 0 && scale == 1.0,
                   "the gradient '" + n.name + "' gives '" + pg.tensor(t).name + "' needs communication the plan does not count");
        continue;  // (every parameter's gradient is checked against its state's layout below)
      }
      const bool changes = !e.backward.steps.empty() || e.backward.local_slice || !(st.in[k] == target) ||
                           st.in_grad_partial[k] != 0;
      if (!changes && scale == 1.0) continue;
      auto it = contribution.find({static_cast<NodeId>(i), k});
      ALPA_CHECK(it != contribution.end(), "the plan reduces a gradient of '" + pg.tensor(t).name + "' from '" + n.name +
                                               "' that the training graph does not compute");
      const TensorId c = it->second;
      // One contribution can serve several inputs (an Add passes its output's gradient to both):
      // only the backward of this input's producer (its gradient sum, its own backward) reads
      // the converted one.
      const NodeId producer = pg.tensor(t).producer;
      const std::string owner = producer == kNoId ? std::string() : pg.node(producer).name;
      ALPA_CHECK(reduced.insert({c, owner}).second,
                 "one gradient contribution '" + pg.tensor(c).name + "' serves two edges from '" + owner + "'");
      const std::string name = g.tensor(c).name;
      const bool shared = std::count_if(tg.grad_edges.begin(), tg.grad_edges.end(), [&](const GradEdge& x) { return x.grad == c; }) > 1;
      if (!shared) g.tensor(c).name = name + "/partial";
      const TensorId r = add_reshard(c, c, st.in[k], st.in_grad_partial[k], target,
                                     shared ? name + "@" + pg.tensor(t).name : name,
                                     e.param_like && !e.backward.steps.empty() && low.microbatches > 1, false, scale);
      // The backward nodes that read it as this input's gradient: its producer's, and through
      // the gradients the producer passes on unchanged (an Add's), theirs in turn.
      std::set<std::string> owners;
      if (producer != kNoId) {
        std::vector<NodeId> todo = {producer};
        while (!todo.empty()) {
          const NodeId f = todo.back();
          todo.pop_back();
          if (!owners.insert(pg.node(f).name).second) continue;
          for (const GradEdge& x : tg.grad_edges) {
            if (x.grad != c || x.node != f) continue;
            const NodeId up = pg.tensor(pg.node(f).inputs[x.input]).producer;
            if (up != kNoId) todo.push_back(up);
          }
        }
      }
      for (size_t b = 0; b < original_nodes; ++b) {
        if (producer == kNoId || owners.count(g.node(static_cast<NodeId>(b)).derived_from)) rewire(static_cast<NodeId>(b), c, r);
      }
      // So do the conversions made earlier for the edges of those nodes that pass the same
      // gradient on (an Add whose inputs' gradients are its output's): they convert this block
      // (a residual Add splitting the hidden dim reads its output's gradient as converted
      // here, and its other input, a row-parallel GEMM's output, gathers it from that block).
      for (const auto& [conversion, of] : edge_conversion_of) {
        if (producer != kNoId && owners.count(of)) rewire(conversion, c, r);
      }
      edge_conversion_of[static_cast<NodeId>(g.num_nodes() - 1)] = n.name;
      for (ParameterSlot& slot : local.parameters) {
        if (slot.grad == c) slot.grad = r;
      }
    }
  }
  // The optimizer updates the state's shard of each parameter: narrowed on the way in, the
  // update gathered back to the parameter's spec (ZeRO-2).
  for (size_t p = 0; p < local.parameters.size(); ++p) {
    ParameterSlot& slot = local.parameters[p];
    const NodeStrategy& ps = *cs.param[static_cast<size_t>(slot.param)];
    if (ps.out[0] == ps.state) continue;
    NodeId update = kNoId;
    for (size_t b = 0; b < original_nodes; ++b) {
      const Node& bn = g.node(static_cast<NodeId>(b));
      if (op_info(bn.kind).family == OpFamily::kOptimizer && !bn.outputs.empty() && bn.outputs[0] == slot.updated_param) {
        update = static_cast<NodeId>(b);
      }
    }
    ALPA_CHECK(update != kNoId, "no optimizer update of '" + pg.tensor(slot.param).name + "'");
    const TensorId shard = add_reshard(slot.param, slot.param, ps.out[0], 0, ps.state,
                                       pg.tensor(slot.param).name + "@shard", false, true, 1.0);
    g.node(update).inputs[0] = shard;
    Tensor& upd = g.tensor(slot.updated_param);
    upd.shape = ps.state.local_shape(pg.tensor(slot.param).shape, view);
    reshaped.insert(slot.updated_param);
    const TensorId gathered = add_reshard(slot.updated_param, slot.param, ps.state, 0, ps.out[0],
                                          pg.tensor(slot.updated_param).name + "@gathered", false, true, 1.0);
    for (auto& [dst, srcu] : local.state_updates) {
      if (dst == slot.param && srcu == slot.updated_param) srcu = gathered;
    }
    slot.updated_param = gathered;
  }
  // Kernels that need to know which block of a split dim the rank holds: attributes on the
  // forward node and on its backward twin of `twin` kind.
  std::map<std::string, std::vector<NodeId>> backward_of;  // forward node name → its backward nodes
  for (size_t b = tg.num_forward_nodes; b < original_nodes; ++b) {
    backward_of[g.node(static_cast<NodeId>(b)).derived_from].push_back(static_cast<NodeId>(b));
  }
  auto set_on = [&](size_t i, OpKind twin, const std::function<void(Attributes&)>& set) {
    set(g.node(static_cast<NodeId>(i)).attrs);
    auto it = backward_of.find(pg.node(static_cast<NodeId>(i)).name);
    if (it == backward_of.end()) return;
    for (NodeId b : it->second) {
      if (g.node(b).kind == twin) set(g.node(b).attrs);
    }
  };
  // First index of the rank's block of dim d (size `size`) split as `spec` says.
  auto block_start = [&](const ShardingSpec& spec, size_t d, int64_t size) {
    const int64_t ways = spec.ways(d, view);
    return block_index(spec.dims[d], view, low.coord) * ((size + ways - 1) / ways);  // padded blocks
  };
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = pg.node(static_cast<NodeId>(i));
    const ShardingSpec& spec = cs.node[i]->in.empty() ? ShardingSpec{} : cs.node[i]->in[0];
    if (n.kind == OpKind::kDropout) {
      // Dropout on a block of non-batch dims draws the whole tensor's masks at its block's place
      // (its backward applies the same mask).
      const Shape& whole = pg.tensor(n.inputs[0]).shape;
      const int bd = sg.batch_dim[static_cast<size_t>(n.inputs[0])];
      std::vector<int64_t> offsets(whole.size(), 0);
      bool split = false;
      bool batch_block = false;  // the batch in blocks (RankLowering::batch_in_blocks) and split here
      for (size_t d = 0; d < whole.size() && d < spec.dims.size(); ++d) {
        if (spec.dims[d] == DimSharding::kR || (static_cast<int>(d) == bd && !low.batch_in_blocks)) continue;
        offsets[d] = block_start(spec, d, whole[d]);
        split = true;
        batch_block = batch_block || static_cast<int>(d) == bd;
      }
      if (!split) continue;
      set_on(i, OpKind::kDropout, [&](Attributes& at) {
        at.set("block_offsets", offsets);
        at.set("block_global", whole);
        if (batch_block) at.set("block_batch", int64_t{1});
      });
    } else if (n.kind == OpKind::kGather) {
      // A Gather from a table split by the rows it picks (and its gradient): the rows it holds.
      const Shape& table = pg.tensor(n.inputs[0]).shape;
      int64_t axis = n.attrs.get_int("axis", 0);
      if (axis < 0) axis += static_cast<int64_t>(table.size());
      const size_t ax = static_cast<size_t>(axis);
      if (ax >= spec.dims.size() || spec.dims[ax] == DimSharding::kR) continue;
      set_on(i, OpKind::kGatherGrad, [&](Attributes& at) {
        at.set("index_offset", block_start(spec, ax, table[ax]));
        at.set("index_total", table[ax]);
      });
    } else if (n.kind == OpKind::kBatchNormalization && low.batch_in_blocks) {
      // Statistics over the node's own split of the batch (and its gradient's sums).
      int64_t ways = 1;
      const int64_t axes = node_batch_axes(sg, *cs.node[i], i, &ways);
      if (axes == 0) continue;
      set_on(i, OpKind::kBatchNormalizationGrad, [&](Attributes& at) {
        at.set("batch_axes", axes);
        at.set("batch_ways", ways);
      });
    } else if (n.kind == OpKind::kSoftmaxCrossEntropyLoss) {
      // A vocab-parallel cross-entropy (and its gradient): the classes it holds.
      if (spec.dims.size() < 2 || spec.dims[1] == DimSharding::kR) continue;
      const int64_t c = pg.tensor(n.inputs[0]).shape[1];
      int64_t mask = 0;
      for (int ax : mesh_axes(spec.dims[1], view)) mask |= int64_t{1} << ax;
      set_on(i, OpKind::kSoftmaxCrossEntropyLossGrad, [&](Attributes& at) {
        at.set("class_offset", block_start(spec, 1, c));
        at.set("class_total", c);
        at.set("class_ways", spec.ways(1, view));
        at.set("class_axes", mask);
      });
    }
  }
  // Shapes downstream of what changed, in the original order (Reshard outputs are set).
  g.finalize();
  // The forward pass first again: the forward nodes and the Reshard nodes they read through
  // (sorting may have put a backward node that needs only constants among them), so a
  // pipeline stage can run its forward and backward as separate phases, and the shapes below
  // are settled for every forward node before any backward node reads them.
  size_t front = 0;
  {
    std::set<std::string> forward_names;
    for (size_t i = 0; i < tg.num_forward_nodes; ++i) forward_names.insert(pg.node(static_cast<NodeId>(i)).name);
    std::vector<bool> forward(g.num_nodes(), false);
    for (size_t k = 0; k < g.num_nodes(); ++k) forward[k] = forward_names.count(g.node(static_cast<NodeId>(k)).name) > 0;
    for (size_t k = g.num_nodes(); k-- > 0;) {
      if (!forward[k]) continue;
      for (TensorId in : g.node(static_cast<NodeId>(k)).inputs) {
        const NodeId p = g.tensor(in).producer;
        if (p != kNoId && g.node(p).kind == OpKind::kReshard) forward[static_cast<size_t>(p)] = true;
      }
    }
    for (bool f : forward) front += f ? 1 : 0;
    g.move_to_front(forward);
  }
  std::map<std::string, NodeId> pg_node;  // every plan node by name
  for (size_t i = 0; i < pg.num_nodes(); ++i) pg_node[pg.node(static_cast<NodeId>(i)).name] = static_cast<NodeId>(i);
  // Forward nodes by name: their ids in the plan's graph and in the rank's (finalize reorders).
  std::map<std::string, std::pair<NodeId, NodeId>> forward_node;
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) forward_node[pg.node(static_cast<NodeId>(i)).name] = {static_cast<NodeId>(i), kNoId};
  for (size_t b = 0; b < g.num_nodes(); ++b) {
    auto it = forward_node.find(g.node(static_cast<NodeId>(b)).name);
    if (it != forward_node.end()) it->second.second = static_cast<NodeId>(b);
  }
  // Sets attribute `key` of backward op `n` (derived from the forward node `fw`: plan id, rank
  // id) to the local shape of the forward input whose global shape it names (a Reshape's with
  // reduced dims kept as 1); the plan's own attribute says which.
  auto rewrite_shape_attr = [&](Node& n, const char* key, std::pair<NodeId, NodeId> fw, NodeId in_plan) {
    const Node& fg = pg.node(fw.first);   // global shapes
    const Node& fl = g.node(fw.second);   // this rank's (inputs rewired)
    const Shape want = in_plan != kNoId ? pg.node(in_plan).attrs.get_ints(key)  // the plan's: whole batch too
                                        : n.attrs.get_ints(key);
    std::optional<Shape> local;
    bool ambiguous = false;
    for (size_t k = 0; k < fg.inputs.size(); ++k) {
      const Shape& gs = pg.tensor(fg.inputs[k]).shape;
      const Shape& ls = g.tensor(fl.inputs[k]).shape;
      Shape cand;
      if (gs == want) {
        cand = ls;
      } else if (n.kind == OpKind::kReshape && gs.size() == want.size()) {
        cand = want;  // reduced dims (1) kept, the others as the input's
        bool fits = true;
        for (size_t d = 0; d < want.size(); ++d) {
          if (want[d] == gs[d]) cand[d] = ls[d];
          else fits = fits && want[d] == 1;
        }
        if (!fits) continue;
      } else {
        continue;
      }
      if (local && *local != cand) ambiguous = true;
      local = cand;
    }
    if (ambiguous && in_plan != kNoId) {
      // Inputs of the same global shape but different blocks (a 1x1 convolution whose batch
      // equals its output channels): the gradient edge this backward op feeds says which.
      for (const GradEdge& e : tg.grad_edges) {
        if (e.node != fw.first || e.grad == kNoId || pg.tensor(e.grad).producer != in_plan) continue;
        if (pg.tensor(fg.inputs[e.input]).shape != want) continue;
        local = g.tensor(fl.inputs[e.input]).shape;
        ambiguous = false;
        break;
      }
    }
    if (ambiguous) {
      throw UserError("plan", "/strategies/\"" + fg.name + "\"",
                      "the backward of '" + fg.name + "' cannot tell which input's local shape '" + n.name + "' takes; " +
                          kWhatRuns);
    }
    if (local && *local != n.attrs.get_ints(key)) {
      n.attrs.set(key, *local);
      for (TensorId out : n.outputs) reshaped.insert(out);
    }
  };
  for (size_t b = 0; b < g.num_nodes(); ++b) {
    Node& n = g.node(static_cast<NodeId>(b));
    if (n.kind == OpKind::kReshard) continue;
    // A backward op whose output shape is an attribute (the gradient summed or broadcast to an
    // input's shape, or reshaped to it with reduced dims kept): the input's local shape, as the
    // forward node reads it on this rank.
    if (n.kind == OpKind::kReshape && forward_node.count(n.name) > 0 && n.attrs.has("shape")) {
      // A forward reshape of a block (attention heads split off a split hidden dim): its target
      // becomes the block's.
      const Shape& gin = pg.tensor(pg.node(forward_node.at(n.name).first).inputs[0]).shape;
      const Shape& lin = g.tensor(n.inputs[0]).shape;
      const Shape want = pg.tensor(pg.node(forward_node.at(n.name).first).outputs[0]).shape;
      if (gin != lin) {
        const std::optional<Shape> local = local_reshape_target(gin, lin, want);
        if (!local) {
          throw UserError("plan", "/strategies/\"" + n.name + "\"",
                          "reshapes a block of " + format_dims(gin) + " to " + format_dims(want) +
                              ", which is not a block of the result; " + kWhatRuns);
        }
        if (*local != n.attrs.get_ints("shape")) {
          n.attrs.set("shape", *local);
          for (TensorId out : n.outputs) reshaped.insert(out);
        }
      }
    }
    if (forward_node.count(n.name) == 0 && n.attrs.has("shape") &&
        (n.kind == OpKind::kSumToShape || n.kind == OpKind::kExpand || n.kind == OpKind::kReshape ||
         n.kind == OpKind::kGatherGrad)) {
      auto fw = forward_node.find(n.derived_from);
      const NodeId in_plan = pg_node.count(n.name) ? pg_node.at(n.name) : kNoId;
      if (n.kind == OpKind::kReshape && in_plan != kNoId) {  // backward (forward ones below)
        const Shape& gin = pg.tensor(pg.node(in_plan).inputs[0]).shape;
        const Shape& lin = g.tensor(n.inputs[0]).shape;
        const Shape want = pg.node(in_plan).attrs.get_ints("shape");  // the plan's: whole batch too
        if (gin != lin) {
          // Autodiff's reshapes flatten rows for a weight gradient's GEMM (x and its gradient
          // alike): any block of the merged dims will do.
          const std::optional<Shape> local = local_reshape_target(gin, lin, want, true);
          if (!local) {
            throw UserError("plan", "/strategies/\"" + n.derived_from + "\"",
                            "the backward reshape '" + n.name + "' of a block of " + format_dims(gin) + " to " + format_dims(want) +
                                " is not a block of the result; " + kWhatRuns);
          }
          if (*local != n.attrs.get_ints("shape")) {
            n.attrs.set("shape", *local);
            for (TensorId out : n.outputs) reshaped.insert(out);
          }
        }
      } else if (fw != forward_node.end()) {
        rewrite_shape_attr(n, "shape", fw->second, in_plan);
      }
    }
    // A backward op whose output is an input's shape by attribute (a convolution's or a pool's
    // input gradient, a convolution's weight gradient): that input's local shape.
    for (const char* key : {"input_shape", "weight_shape"}) {
      if (forward_node.count(n.name) > 0 || !n.attrs.has(key)) continue;
      auto fw = forward_node.find(n.derived_from);
      if (fw == forward_node.end()) continue;
      rewrite_shape_attr(n, key, fw->second, pg_node.count(n.name) ? pg_node.at(n.name) : kNoId);
    }
    bool touched = false;
    for (TensorId in : n.inputs) touched = touched || reshaped.count(in) > 0;
    for (TensorId out : n.outputs) touched = touched || reshaped.count(out) > 0;
    if (!touched) continue;
    std::vector<TensorType> in_types;
    for (TensorId in : n.inputs) in_types.push_back({g.tensor(in).dtype, g.tensor(in).shape});
    if (debug_enabled(DebugChannel::kLowering)) {
      std::string ins;
      for (TensorId in : n.inputs) ins += " " + g.tensor(in).name + format_dims(g.tensor(in).shape);
      debug_line(DebugChannel::kLowering, "%s %s:%s", std::string(op_name(n.kind)).c_str(), n.name.c_str(), ins.c_str());
    }
    std::vector<TensorType> out_types;
    try {
      out_types = infer_types(n, in_types);
    } catch (const std::exception& e) {
      std::string ins;
      for (TensorId in : n.inputs) ins += (ins.empty() ? "" : ", ") + g.tensor(in).name + " " + format_dims(g.tensor(in).shape);
      ALPA_CHECK(false, "the rank program's '" + n.name + "' (" + std::string(op_name(n.kind)) + " of " + ins +
                            ") has no consistent local shapes: " + e.what());
    }
    for (size_t o = 0; o < n.outputs.size() && o < out_types.size(); ++o) {
      Tensor& t = g.tensor(n.outputs[o]);
      if (t.shape != out_types[o].shape) {
        t.shape = out_types[o].shape;
        reshaped.insert(n.outputs[o]);
      }
    }
  }
  if (debug_enabled(DebugChannel::kLowering)) {
    for (const RankLowering::ReshardStep& r : low.reshards) {
      for (const CollectiveStep& c : r.reshard.steps) {
        debug_line(DebugChannel::kLowering, "reshard %s %s->%s partial %u per_step %d opt %d: %s %.0f B", r.tensor.c_str(),
                   r.src.to_string().c_str(), r.dst.to_string().c_str(), static_cast<unsigned>(r.src_partial), r.per_step ? 1 : 0,
                   r.optimizer_phase ? 1 : 0, std::string(collective_name(c.kind)).c_str(), c.bytes_per_device);
      }
    }
  }
  local.num_forward_nodes = front;
  // The optimizer reads each parameter's gradient in its state's layout.
  for (const ParameterSlot& slot : local.parameters) {
    const Shape want = cs.param[static_cast<size_t>(slot.param)]->state.local_shape(pg.tensor(slot.param).shape, view);
    ALPA_CHECK(g.tensor(slot.grad).shape == want, "the rank program's gradient of '" + pg.tensor(slot.param).name + "' is " +
                                                     format_dims(g.tensor(slot.grad).shape) + ", not its state's block " +
                                                     format_dims(want));
  }
  return local;
}

}  // namespace alpa
