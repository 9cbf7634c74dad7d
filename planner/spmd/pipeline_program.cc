#include "planner/spmd/pipeline_program.h"

#include <algorithm>
#include <map>
#include <set>

#include "planner/common/error.h"

namespace alpa {

PipelineSplit split_pipeline(const TrainingGraph& tg, const Plan& plan, const std::string& src, const Graph* canonical,
                             size_t canonical_forward_nodes) {
  ALPA_CHECK(plan.pipeline.has_value(), "split_pipeline: not a pipeline plan");
  const PlanPipeline& pl = *plan.pipeline;
  const Graph& g = tg.graph;
  const size_t nf = tg.num_forward_nodes;
  PipelineSplit out;
  out.stages = static_cast<int>(pl.stages.size());
  out.node_stages.assign(g.num_nodes(), {});

  // Forward nodes: the stage of their layer. A rank program may have Reshard nodes among them
  // (an activation resharded, a parameter gathered for a forward node): the layers count the
  // model's nodes only, and such a Reshard runs with its reader.
  // Positions are the model's canonical order (a rank program's sort may differ).
  const Graph& cg = canonical ? *canonical : g;
  const size_t cnf = canonical ? canonical_forward_nodes : nf;
  std::vector<NodeId> model_nodes(cnf, kNoId);  // canonical position → node of `tg`
  std::vector<int64_t> position(nf, -1);
  for (size_t k = 0; k < nf; ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    if (n.kind == OpKind::kReshard) continue;
    const NodeId c = cg.find_node(n.name);
    ALPA_CHECK(c != kNoId && static_cast<size_t>(c) < cnf, "split_pipeline: forward node '" + n.name + "' is not in the model");
    position[k] = c;
    model_nodes[static_cast<size_t>(c)] = static_cast<NodeId>(k);
  }
  auto model_position = [&](const std::string& name) -> int64_t {
    const NodeId id = cg.find_node(name);
    return id == kNoId || static_cast<size_t>(id) >= cnf ? -1 : id;
  };
  std::vector<int64_t> layer_first;
  for (size_t l = 0; l < pl.layers.size(); ++l) {
    const int64_t first = model_position(pl.layers[l].first_node);
    const int64_t last = model_position(pl.layers[l].last_node);
    const std::string where = "/pipeline/layers/" + std::to_string(l);
    if (first < 0) throw UserError(src, where + "/first", "\"" + pl.layers[l].first_node + "\" is not a forward node of the model");
    if (last < 0) throw UserError(src, where + "/last", "\"" + pl.layers[l].last_node + "\" is not a forward node of the model");
    const int64_t expect_first = l == 0 ? 0 : model_position(pl.layers[l - 1].last_node) + 1;
    if (first != expect_first || last < first) {
      throw UserError(src, where, "layers must cover the forward nodes in canonical order, each starting after the previous one ends");
    }
    layer_first.push_back(first);
  }
  if (pl.layers.empty() || model_position(pl.layers.back().last_node) + 1 != static_cast<int64_t>(model_nodes.size())) {
    throw UserError(src, "/pipeline/layers", "the last layer must end at the model's last forward node");
  }
  std::vector<int> layer_stage(pl.layers.size(), -1);
  for (size_t s = 0; s < pl.stages.size(); ++s) {
    for (int64_t l = pl.stages[s].first_layer; l < pl.stages[s].end_layer; ++l) {
      if (l < 0 || static_cast<size_t>(l) >= layer_stage.size()) {
        throw UserError(src, "/pipeline/stages/" + std::to_string(s) + "/layers", "layer " + std::to_string(l) + " does not exist");
      }
      layer_stage[static_cast<size_t>(l)] = static_cast<int>(s);
    }
  }
  for (size_t l = 0; l < layer_stage.size(); ++l) {
    if (layer_stage[l] < 0) throw UserError(src, "/pipeline/layers/" + std::to_string(l), "no stage runs this layer");
  }
  std::map<std::string, int> forward_stage;
  for (size_t p = 0, l = 0; p < model_nodes.size(); ++p) {
    while (l + 1 < layer_first.size() && static_cast<int64_t>(p) >= layer_first[l + 1]) ++l;
    const NodeId k = model_nodes[p];
    ALPA_CHECK(k != kNoId, "split_pipeline: the program lacks the model's forward node '" + cg.node(static_cast<NodeId>(p)).name + "'");
    out.node_stages[static_cast<size_t>(k)] = {layer_stage[l]};
    forward_stage[g.node(k).name] = layer_stage[l];
  }
  for (size_t k = nf; k-- > 0;) {  // forward Reshards: with their readers (later in the order)
    if (position[k] >= 0) continue;
    std::set<int> readers;
    for (NodeId c : g.tensor(g.node(static_cast<NodeId>(k)).outputs[0]).consumers) {
      if (static_cast<size_t>(c) < nf) readers.insert(out.node_stages[static_cast<size_t>(c)].begin(), out.node_stages[static_cast<size_t>(c)].end());
    }
    out.node_stages[k].assign(readers.begin(), readers.end());
  }

  // Parameters: held by every stage whose forward nodes read them.
  std::map<std::string, std::vector<int>> holders;  // by parameter name
  std::map<std::string, size_t> slot_of;
  for (size_t p = 0; p < tg.parameters.size(); ++p) {
    const Tensor& param = g.tensor(tg.parameters[p].param);
    std::set<int> st;
    for (NodeId c : param.consumers) {
      if (static_cast<size_t>(c) < nf) st.insert(out.node_stages[static_cast<size_t>(c)][0]);
    }
    holders[param.name] = std::vector<int>(st.begin(), st.end());
    slot_of[param.name] = p;
  }

  // Backward and optimizer nodes. The stages making each tensor (a shared parameter's gradient
  // sums: each holder its own part).
  std::vector<std::vector<int>> made_by(g.num_tensors());
  for (size_t k = 0; k < nf; ++k) {
    for (TensorId t : g.node(static_cast<NodeId>(k)).outputs) made_by[t] = out.node_stages[k];
  }
  for (size_t k = nf; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    std::vector<int> st;
    auto fw = forward_stage.find(n.derived_from);
    auto hold = holders.find(n.derived_from);
    if (n.kind == OpKind::kReshard) {
      // A rank program's collective. One a forward node reads (an activation resharded for it,
      // a parameter gathered) runs with its reader, which receives the tensor as made; one in the
      // backward (a gradient contribution converted, a gradient reduced) with the node that makes
      // its input, which sends the converted tensor.
      std::set<int> readers;
      for (NodeId c : g.tensor(n.outputs[0]).consumers) {
        if (static_cast<size_t>(c) < nf) readers.insert(out.node_stages[static_cast<size_t>(c)][0]);
      }
      if (!readers.empty()) {
        st.assign(readers.begin(), readers.end());
      } else {
        st = made_by[n.inputs[0]];
        if (st.empty()) {  // a parameter gathered for a backward: with the backward's stage
          for (NodeId c : g.tensor(n.outputs[0]).consumers) {
            auto f = forward_stage.find(g.node(c).derived_from);
            if (f != forward_stage.end()) readers.insert(f->second);
          }
          st.assign(readers.begin(), readers.end());
        }
        // The optimizer's shard of a parameter (ZeRO-2): with the parameter's holders.
        if (st.empty() && hold != holders.end()) st = hold->second;
      }
    } else if (hold != holders.end() && is_grad_sum(n)) {
      std::set<int> parts;  // a parameter's gradient sum: in each stage that has a part
      for (TensorId t : n.inputs) parts.insert(made_by[t].begin(), made_by[t].end());
      st.assign(parts.begin(), parts.end());
    } else if (hold != holders.end()) {
      st = hold->second;  // its update (or the zero gradient of an unused parameter)
    } else if (fw != forward_stage.end() && is_grad_sum(n)) {
      int lowest = out.stages;  // an activation's gradient sum: the earliest contributing stage
      for (TensorId t : n.inputs) {
        for (int s : made_by[t]) lowest = std::min(lowest, s);
      }
      st = {lowest == out.stages ? fw->second : lowest};
    } else if (fw != forward_stage.end()) {
      st = {fw->second};
    } else {
      throw UserError(src, "pipeline", "node \"" + n.name + "\" of the training graph derives from \"" + n.derived_from +
                      "\", which no stage runs");
    }
    out.node_stages[k] = st;
    for (TensorId t : n.outputs) made_by[t] = st;
  }

  // Parameters whose gradient several stages make in part.
  for (const auto& [name, st] : holders) {
    const ParameterSlot& slot = tg.parameters[slot_of[name]];
    if (st.size() <= 1) continue;
    if (made_by[slot.grad] != st) {
      throw UserError(src, "pipeline", "parameter \"" + name + "\" is read by " + std::to_string(st.size()) +
                      " stages but not every one contributes to its gradient; a pipeline cannot share it");
    }
    out.shared.push_back({slot_of[name], st});
  }
  std::sort(out.shared.begin(), out.shared.end(), [](const auto& a, const auto& b) { return a.slot < b.slot; });

  // Boundaries: a tensor one stage makes (alone) and another reads.
  std::set<std::pair<TensorId, int>> seen;
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    const bool shared_sum = is_grad_sum(n) && holders.count(n.derived_from) > 0;
    for (int s : out.node_stages[k]) {
      for (TensorId t : n.inputs) {
        const std::vector<int>& from = made_by[t];
        if (from.empty() || std::find(from.begin(), from.end(), s) != from.end()) continue;
        if (shared_sum) continue;  // another stage's part of a shared gradient: exchanged per step
        ALPA_CHECK(from.size() == 1, "split_pipeline: tensor '" + g.tensor(t).name + "' made by several stages");
        // Keyed by the tensor the graph made before any collective of a rank program converted it,
        // so ranks whose programs convert differently still pair their messages.
        TensorId root = t;
        while (g.tensor(root).producer != kNoId && g.node(g.tensor(root).producer).kind == OpKind::kReshard) {
          root = g.node(g.tensor(root).producer).inputs[0];
        }
        if (!seen.insert({root, s}).second) continue;
        const bool backward = g.tensor(root).producer >= static_cast<NodeId>(nf);
        if (backward ? from[0] < s : from[0] > s) {
          throw UserError(src, "pipeline", "tensor \"" + g.tensor(t).name + "\" would flow from stage " + std::to_string(from[0]) +
                          " to stage " + std::to_string(s) + (backward ? " in the backward pass" : " in the forward pass") +
                          ", against the pipeline");
        }
        out.boundaries.push_back({t, from[0], s, backward, g.tensor(t).bytes(), root});
      }
    }
  }
  // By the tensor they carry (before conversion): the same order on every rank.
  std::sort(out.boundaries.begin(), out.boundaries.end(),
            [](const auto& a, const auto& b) { return a.root != b.root ? a.root < b.root : a.to < b.to; });
  return out;
}

StageProgram stage_program(TrainingGraph tg, const PipelineSplit& split, int stage) {
  StageProgram out;
  Graph& g = tg.graph;
  out.active.assign(g.num_nodes(), false);
  out.exported.assign(g.num_tensors(), false);
  std::vector<bool> here(g.num_tensors(), false);  // tensors this stage holds
  for (TensorId t = 0; t < static_cast<TensorId>(g.num_tensors()); ++t) here[t] = g.tensor(t).producer == kNoId;
  for (const auto& b : split.boundaries) {
    if (b.to == stage) here[b.tensor] = true;
    if (b.from == stage) out.exported[b.tensor] = true;
  }
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    const auto& st = split.node_stages[k];
    if (std::find(st.begin(), st.end(), stage) == st.end()) continue;
    Node& n = g.node(static_cast<NodeId>(k));
    out.active[k] = true;
    if (is_grad_sum(n) && st.size() > 1) {  // a shared gradient's sum: this stage's part only
      std::vector<TensorId> mine;
      for (TensorId t : n.inputs) {
        if (here[t]) mine.push_back(t);
      }
      ALPA_CHECK(!mine.empty(), "stage_program: a shared gradient sum with no part in stage " + std::to_string(stage));
      if (mine.size() == 1) {
        n.kind = OpKind::kIdentity;
        n.inputs = mine;
      }
    }
    for (TensorId t : n.outputs) here[t] = true;
  }
  out.tg = std::move(tg);
  return out;
}

const char* pipe_op_name(PipeOp op) {
  switch (op) {
    case PipeOp::kRecvActivation: return "recv_activation";
    case PipeOp::kForward: return "forward";
    case PipeOp::kSendActivation: return "send_activation";
    case PipeOp::kRecvGradient: return "recv_gradient";
    case PipeOp::kBackward: return "backward";
    case PipeOp::kSendGradient: return "send_gradient";
    case PipeOp::kSyncShared: return "sync_shared";
    case PipeOp::kUpdate: return "update";
  }
  return "?";
}

std::vector<PipeInstruction> stage_instructions(const PipelineSplit& split, int stage, Schedule schedule,
                                                int64_t microbatches) {
  const std::vector<double> unit(static_cast<size_t>(split.stages), 1.0);
  const ScheduleResult model = simulate_schedule(schedule, unit, unit, microbatches);
  std::vector<PipeInstruction> out;
  for (int64_t e : model.order[static_cast<size_t>(stage)]) {
    const bool fwd = e >= 0;
    const int64_t m = fwd ? e : -e - 1;
    for (size_t b = 0; b < split.boundaries.size(); ++b) {
      const auto& bd = split.boundaries[b];
      if (bd.to == stage && bd.backward != fwd) {
        out.push_back({fwd ? PipeOp::kRecvActivation : PipeOp::kRecvGradient, m, static_cast<int>(b)});
      }
    }
    out.push_back({fwd ? PipeOp::kForward : PipeOp::kBackward, m, -1});
    for (size_t b = 0; b < split.boundaries.size(); ++b) {
      const auto& bd = split.boundaries[b];
      if (bd.from == stage && bd.backward != fwd) {
        out.push_back({fwd ? PipeOp::kSendActivation : PipeOp::kSendGradient, m, static_cast<int>(b)});
      }
    }
  }
  for (size_t p = 0; p < split.shared.size(); ++p) {
    const auto& st = split.shared[p].stages;
    if (std::find(st.begin(), st.end(), stage) != st.end()) out.push_back({PipeOp::kSyncShared, -1, static_cast<int>(p)});
  }
  out.push_back({PipeOp::kUpdate, -1, -1});
  return out;
}

}  // namespace alpa
