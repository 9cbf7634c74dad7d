#include "planner/spmd/lowering.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "planner/common/error.h"
#include "planner/graph/shape_inference.h"
#include "planner/intra_op/search.h"

namespace alpa {
namespace {

constexpr const char* kWhatRuns =
    "alpa-run executes batch-parallel plans in this version (every activation split only along its "
    "batch dim; parameters and optimizer state replicated or sharded as ZeRO does); plans that "
    "shard operators are searched and costed but not executed yet";

std::string quoted_path(const char* section, const std::string& name) {
  return std::string("/") + section + "/\"" + name + "\"";
}

}  // namespace

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

  // Every node splits only batch letters, over one common set of mesh axes.
  bool axes_known = false;
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const NodeStrategy& st = *cs.node[i];
    const IterationSpace& sp = sg.spaces[i];
    AxisMask axes = 0;
    for (int ax = 0; ax < 2; ++ax) {
      const int l = st.axis_letter[ax];
      if (l == kNoLetter || sg.costs.axis_size(ax) == 1) continue;
      if (!sp.letters[static_cast<size_t>(l)].is_batch) {
        throw UserError(src, quoted_path("strategies", g.node(static_cast<NodeId>(i)).name),
                        "\"" + st.name + "\" splits a non-batch dim over mesh axis " + std::to_string(ax) + "; " + kWhatRuns);
      }
      axes |= static_cast<AxisMask>(1u << ax);
    }
    if (axes == 0) continue;
    if (axes_known && axes != out.batch_axes) {
      throw UserError(src, quoted_path("strategies", g.node(static_cast<NodeId>(i)).name),
                      "\"" + st.name + "\" splits the batch over other mesh axes than earlier nodes; " + kWhatRuns);
    }
    out.batch_axes = axes;
    axes_known = true;
  }
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
      if (!(mean_loss || mean) || st.scatter_dim >= 0) {
        throw UserError(src, quoted_path("strategies", n.name),
                        "\"" + st.name + "\" leaves output '" + t.name + "' a partial sum over the split batch, which only "
                        "the mean SoftmaxCrossEntropyLoss and ReduceMean do in this version; " + kWhatRuns);
      }
      ReshardResult r = reshard(st.out[o], st.out_partial[o], st.out[o], t.shape, t.dtype, sg.costs);
      output_steps += r.steps.size();
      double scale = 1;
      if (mean) {
        int64_t ways = plan.microbatches;
        for (int ax = 0; ax < 2; ++ax) {
          if (st.out_partial[o] & (1u << ax)) ways *= sg.costs.axis_size(ax);
        }
        scale = 1.0 / static_cast<double>(ways);
        out.mean_scale[{static_cast<NodeId>(i), 0}] = scale;
      }
      out.output_reductions.push_back({t.name, std::move(r), scale});
    }
    for (size_t k = output_steps; k < st.comms.size(); ++k) {
      const CollectiveStep& step = st.comms[k];
      out.stats[i].push_back(step);
      if (step.kind != Collective::kAllReduce) {
        throw UserError(src, quoted_path("strategies", g.node(static_cast<NodeId>(i)).name),
                        "\"" + cs.node[i]->name + "\" runs a " + std::string(collective_name(step.kind)) + " inside the node; " + kWhatRuns);
      }
    }
  }
  for (const CommEvent& ev : communication(sg, choice)) {
    if (ev.where == "forward" && !param_like(sg, ev.tensor)) {
      throw UserError(src, quoted_path("tensors", g.tensor(ev.tensor).name),
                      std::string("is resharded (") + std::string(collective_name(ev.step.kind)) + ") before a node reads it; " + kWhatRuns);
    }
    if (ev.step.kind == Collective::kAllToAll) {
      throw UserError(src, quoted_path("tensors", g.tensor(ev.tensor).name), std::string("is resharded with an all-to-all; ") + kWhatRuns);
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
  std::map<TensorId, TensorId> reduced;  // contribution → its reduced tensor
  const size_t original_nodes = g.num_nodes();
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = pg.node(static_cast<NodeId>(i));
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const TensorId t = n.inputs[k];
      const EdgeReshards e = edge_reshards(sg, choice, cs, static_cast<NodeId>(i), k);
      if (!e.planned) continue;
      const NodeStrategy& st = *cs.node[i];
      const ShardingSpec& produced = cs.tensor[static_cast<size_t>(t)];
      // Forward: a parameter (or a tensor computed from parameters) gathered for this node, and
      // again for its backward when that reads it.
      if (!e.forward.steps.empty() || e.forward.local_slice) {
        ALPA_CHECK(e.param_like, "forward resharding of an activation in a batch-parallel plan");
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
      const ShardingSpec& target = sg.group_of_param[static_cast<size_t>(t)] >= 0
                                       ? cs.param[static_cast<size_t>(t)]->state
                                       : produced;
      const bool changes = !e.backward.steps.empty() || e.backward.local_slice || !(st.in[k] == target) ||
                           st.in_grad_partial[k] != 0;
      if (!changes && scale == 1.0) continue;
      auto it = contribution.find({static_cast<NodeId>(i), k});
      ALPA_CHECK(it != contribution.end(), "the plan reduces a gradient of '" + pg.tensor(t).name + "' from '" + n.name +
                                               "' that the training graph does not compute");
      const TensorId c = it->second;
      ALPA_CHECK(reduced.count(c) == 0, "one gradient contribution '" + pg.tensor(c).name + "' serves two edges");
      const std::string name = g.tensor(c).name;
      g.tensor(c).name = name + "/partial";
      const TensorId r = add_reshard(c, c, st.in[k], st.in_grad_partial[k], target, name,
                                     e.param_like && !e.backward.steps.empty() && low.microbatches > 1, false, scale);
      reduced[c] = r;
      for (size_t b = 0; b < original_nodes; ++b) rewire(static_cast<NodeId>(b), c, r);
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
  // Shapes downstream of what changed, in the original order (Reshard outputs are set).
  g.finalize();
  for (size_t b = 0; b < g.num_nodes(); ++b) {
    Node& n = g.node(static_cast<NodeId>(b));
    if (n.kind == OpKind::kReshard) continue;
    bool touched = false;
    for (TensorId in : n.inputs) touched = touched || reshaped.count(in) > 0;
    if (!touched) continue;
    std::vector<TensorType> in_types;
    for (TensorId in : n.inputs) in_types.push_back({g.tensor(in).dtype, g.tensor(in).shape});
    const std::vector<TensorType> out_types = infer_types(n, in_types);
    for (size_t o = 0; o < n.outputs.size() && o < out_types.size(); ++o) {
      Tensor& t = g.tensor(n.outputs[o]);
      if (t.shape != out_types[o].shape) {
        t.shape = out_types[o].shape;
        reshaped.insert(n.outputs[o]);
      }
    }
  }
  return local;
}

}  // namespace alpa
