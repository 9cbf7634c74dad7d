#include "planner/spmd/lowering.h"

#include <algorithm>
#include <map>
#include <utility>

#include "planner/common/error.h"
#include "planner/intra_op/search.h"

namespace alpa {
namespace {

constexpr const char* kWhatRuns =
    "alpa-run executes batch-parallel plans in this version (every tensor split only along its batch "
    "dim, parameters and optimizer state replicated); plans that shard operators or optimizer state "
    "are searched and costed but not executed yet";

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
  // Parameters and their state stay replicated.
  for (const ParameterSlot& slot : tg.parameters) {
    const NodeStrategy* ps = cs.param[slot.param];
    ALPA_CHECK(ps != nullptr, "parameter without a chosen strategy");
    for (const ShardingSpec* spec : {&ps->out[0], &ps->state}) {
      for (size_t d = 0; d < spec->dims.size(); ++d) {
        if (spec->ways(d, out.view) > 1) {
          const std::string& name = g.tensor(spec == &ps->state ? slot.grad : slot.param).name;
          throw UserError(src, quoted_path("tensors", name), "spec \"" + spec->to_string() + "\" shards it; " + kWhatRuns);
        }
      }
    }
  }
  // Communication: reductions of gradient contributions and statistics inside operators; no
  // resharding of forward values and no optimizer-state collectives.
  out.stats.assign(tg.num_forward_nodes, {});
  std::map<std::pair<NodeId, size_t>, double> mean_scale;  // backward edges of means over the split batch
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
        mean_scale[{static_cast<NodeId>(i), 0}] = scale;
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
    if (ev.where == "optimizer") {
      throw UserError(src, quoted_path("tensors", g.tensor(ev.tensor).name),
                      "its optimizer update runs a " + std::string(collective_name(ev.step.kind)) + "; " + kWhatRuns);
    }
    if (ev.where == "forward") {
      throw UserError(src, quoted_path("tensors", g.tensor(ev.tensor).name),
                      std::string("is resharded (") + std::string(collective_name(ev.step.kind)) + ") before a node reads it; " + kWhatRuns);
    }
  }
  // Which (node, input) edges have a gradient contribution in the training graph.
  std::map<std::pair<NodeId, size_t>, TensorId> contribution;
  for (const GradEdge& e : tg.grad_edges) contribution[{e.node, e.input}] = e.grad;
  std::map<TensorId, size_t> reduced;  // contribution tensor → its entry
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const EdgeReshards e = edge_reshards(sg, choice, cs, static_cast<NodeId>(i), k);
      auto ms = mean_scale.find({static_cast<NodeId>(i), k});
      const double scale = ms == mean_scale.end() ? 1.0 : ms->second;
      if ((!e.has_backward || e.backward.steps.empty()) && scale == 1.0) continue;
      for (const CollectiveStep& step : e.backward.steps) {
        if (step.kind != Collective::kAllReduce) {
          throw UserError(src, quoted_path("tensors", g.tensor(n.inputs[k]).name),
                          "its gradient is resharded with a " + std::string(collective_name(step.kind)) + "; " + kWhatRuns);
        }
      }
      auto it = contribution.find({static_cast<NodeId>(i), k});
      ALPA_CHECK(it != contribution.end(), "the plan reduces a gradient of '" + g.tensor(n.inputs[k]).name + "' from '" +
                                               n.name + "' that the training graph does not compute");
      ALPA_CHECK(reduced.count(it->second) == 0, "one gradient contribution '" + g.tensor(it->second).name +
                                                     "' serves two edges");
      reduced[it->second] = out.grad_reductions.size();
      out.grad_reductions.push_back({g.tensor(it->second).name, e.param_like && !e.backward.steps.empty(),
                                     e.has_backward ? e.backward : ReshardResult{}, scale});
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

  const PlanEstimate estimate = estimate_choice(sg, choice, plan.global_batch);
  out.predicted_bytes = estimate.communication_bytes;
  out.predicted_memory = estimate.memory;
  return out;
}

std::map<std::string, double> lowered_bytes(const RankLowering& lowering, int64_t microbatches) {
  std::map<std::string, double> out;
  for (const char* kind : {"all_gather", "all_reduce", "all_to_all", "reduce_scatter"}) out[kind] = 0;
  for (const RankLowering::OutputReduction& r : lowering.output_reductions) {
    for (const CollectiveStep& s : r.reshard.steps) {
      out[std::string(collective_name(s.kind))] += s.bytes_per_device * static_cast<double>(microbatches);
    }
  }
  for (const RankLowering::GradReduction& r : lowering.grad_reductions) {
    const double count = r.per_step ? 1.0 : static_cast<double>(microbatches);
    for (const CollectiveStep& s : r.reshard.steps) out[std::string(collective_name(s.kind))] += s.bytes_per_device * count;
  }
  for (const std::vector<CollectiveStep>& steps : lowering.stats) {
    for (const CollectiveStep& s : steps) {
      out[std::string(collective_name(s.kind))] += s.bytes_per_device * static_cast<double>(microbatches);
    }
  }
  return out;
}

}  // namespace alpa
