#include "planner/spmd/plan_check.h"

#include <algorithm>
#include <set>

#include "planner/autodiff/training_graph.h"
#include "planner/cluster/cluster.h"
#include "planner/common/error.h"
#include "planner/graph/rebatch.h"
#include "planner/inter_op/pipeline.h"
#include "planner/inter_op/stage_dp.h"
#include "planner/intra_op/search.h"
#include "planner/spmd/lowering.h"
#include "planner/spmd/pipeline_program.h"
#include "planner/spmd/program_memory.h"

namespace alpa {
namespace {

// Which ranks to lower: every one up to 16 devices, else the corners of the logical mesh.
std::set<int64_t> ranks_to_lower(int64_t d0, int64_t d1) {
  std::set<int64_t> ranks;
  if (d0 * d1 <= 16) {
    for (int64_t r = 0; r < d0 * d1; ++r) ranks.insert(r);
    return ranks;
  }
  for (int64_t i0 : {int64_t{0}, d0 - 1}) {
    for (int64_t i1 : {int64_t{0}, d1 - 1}) ranks.insert(i0 * d1 + i1);
  }
  return ranks;
}

// One rank's program, exactly as alpa-run's set-up builds it for a single-stage plan; returns
// its simulated peak memory.
int64_t lower_rank(const Plan& plan, const std::string& plan_source, const Graph& forward, const StrategyGraph& sg,
                   const std::vector<int>& choice, const TrainingGraph& tg, int64_t rank) {
  RankLowering low = lower_batch_parallel(plan, plan_source, sg, choice, rank);
  // In the plan's precision: a GPU plan's rank programs (half compute, fp32 master weights) are
  // the CUDA backend's to run, and lowered the same way.
  TrainingGraph local =
      build_training_graph(rebatch(forward, plan.global_batch, low.microbatch_samples), tg.optimizer, tg.precision);
  const TrainingGraph program = build_rank_program(low, sg, choice, std::move(local));
  return simulate_program_memory(program, plan.microbatches).peak_bytes;
}

// Turns a failure of the lowering into the refusal alpa-plan gives.
template <typename F>
void as_refusal(const std::string& plan_source, const std::string& element, F&& lower) {
  try {
    lower();
  } catch (const UserError& e) {
    throw UserError(plan_source, element, std::string("alpa-run cannot run this plan: ") + e.what());
  } catch (const InternalError& e) {
    throw UserError(plan_source, element, std::string("alpa-run cannot run this plan (its lowering stops): ") + e.what());
  }
}

// A pipeline of several stages: its split, and each multi-device stage's rank programs.
RankCheck check_pipeline(const Plan& plan, const std::string& plan_source, const Graph& forward) {
  RankCheck out;
  const TrainingGraph tg = plan_training_graph(plan, plan_source, forward);
  as_refusal(plan_source, "pipeline", [&] { batch_dims(forward, plan.global_batch); });  // as every stage tracks samples
  const PipelineSplit split = split_pipeline(tg, plan, plan_source, &tg.graph, tg.num_forward_nodes);
  const auto& stages = plan.pipeline->stages;
  out.stages = static_cast<int64_t>(stages.size());
  for (const PlanStage& st : stages) out.devices += static_cast<int64_t>(st.device_ids.size());
  const Schedule schedule = plan.pipeline->schedule == "gpipe" ? Schedule::kGPipe : Schedule::k1F1B;
  for (size_t s = 0; s < stages.size(); ++s) {
    const std::string where = "stage " + std::to_string(s);
    as_refusal(plan_source, where, [&] {
      stage_program(tg, split, static_cast<int>(s));
      stage_instructions(split, static_cast<int>(s), schedule, plan.microbatches);
    });
    if (stages[s].device_ids.size() == 1) {
      out.ranks_lowered += 1;
      continue;
    }
    if (plan.precision != "fp32") {
      out.skipped = true;
      continue;
    }
    StageChoice choice;
    as_refusal(plan_source, where, [&] {
      choice = choose_pipeline_stage(plan, plan_source, forward, tg, tg.optimizer, static_cast<int>(s));
    });
    for (int64_t index : ranks_to_lower(stages[s].logical_d0, stages[s].logical_d1)) {
      as_refusal(plan_source, where + " rank " + std::to_string(index),
                 [&] { lower_stage_rank(choice, plan, plan_source, forward, tg.optimizer, index); });
      out.ranks_lowered += 1;
    }
  }
  return out;
}

}  // namespace

void require_accumulable_loss(const Graph& forward, int64_t microbatches, const std::string& plan_source) {
  if (microbatches <= 1) return;
  const Tensor& loss = forward.tensor(forward.loss);
  const Node* made = loss.producer == kNoId ? nullptr : &forward.node(loss.producer);
  if (made && made->kind == OpKind::kSoftmaxCrossEntropyLoss &&
      (!made->attrs.has("reduction") || made->attrs.get_string("reduction") == "mean")) {
    return;
  }
  throw UserError(plan_source, "microbatches",
                  std::to_string(microbatches) + " microbatches: the loss '" + loss.name +
                      "' is not one mean SoftmaxCrossEntropyLoss, and its other terms (an MoE's balancing loss: a mean "
                      "over each microbatch) would be counted once per microbatch; plan with --microbatches 1");
}

StageChoice choose_pipeline_stage(const Plan& plan, const std::string& plan_source, const Graph& forward,
                                  const TrainingGraph& plan_tg, const OptimizerConfig& opt, int stage) {
  const PlanStage& st = plan.pipeline->stages[static_cast<size_t>(stage)];
  const std::string where = "/pipeline/stages/" + std::to_string(stage);
  const int64_t n = static_cast<int64_t>(st.device_ids.size());
  StageChoice out;
  out.mesh = std::make_unique<Cluster>(load_cluster("local:" + std::to_string(n)));
  SearchRequest rq;
  rq.forward = &forward;
  rq.model_name = plan.model;
  rq.global_batch = plan.global_batch;
  rq.microbatches = plan.microbatches;
  rq.optimizer = opt;
  try {
    rq.method = parse_method(st.method);
  } catch (const UserError&) {
    throw UserError(plan_source, where + "/method", "unknown method \"" + st.method + "\"");
  }
  rq.cluster = out.mesh.get();
  rq.cluster_label = "local:" + std::to_string(n);
  rq.logical = LogicalMesh{st.logical_d0, st.logical_d1};
  const SearchResult whole = search_shard_parallel(rq);
  if (!whole.found) {
    throw UserError(plan_source, where, "no " + st.method + " sharding of the model fits " + std::to_string(n) + " CPU devices");
  }
  // The whole-model plan of the stage's method on its mesh, with the stage's own choice for its
  // nodes and parameters (a stage solved alone may shard its edge layers differently).
  out.sg = std::make_unique<StrategyGraph>(plan_strategy_graph(whole.plan, plan_source, plan_tg, *out.mesh));
  out.choice = plan_choice(whole.plan, plan_source, plan_tg, *out.sg);
  const Graph& pg = plan_tg.graph;
  const auto& layers = plan.pipeline->layers;
  const int64_t first = pg.find_node(layers[static_cast<size_t>(st.first_layer)].first_node);
  const int64_t end = pg.find_node(layers[static_cast<size_t>(st.end_layer - 1)].last_node) + 1;
  const StrategyGraph& sg = *out.sg;
  // The stage's groups as the planner counts them: node groups with a member in its layers,
  // parameters a node in them reads.
  std::vector<bool> in_stage(sg.groups.size(), false);
  auto inside = [&](NodeId k) { return k >= first && k < end; };
  for (size_t gi = 0; gi < sg.groups.size(); ++gi) {
    const Group& grp = sg.groups[gi];
    for (NodeId m : grp.members) in_stage[gi] = in_stage[gi] || inside(m);
    if (grp.is_parameter) {
      for (NodeId c : pg.tensor(grp.parameter).consumers) in_stage[gi] = in_stage[gi] || inside(c);
    }
  }
  apply_stage_strategies(st, plan_source, where, plan_tg, sg, first, end, in_stage, out.choice);
  const ChosenSpecs cs = chosen_specs(sg, out.choice);
  for (const auto& s : st.strategies) {
    const NodeId id = pg.find_node(s.node);
    if (id == kNoId || static_cast<size_t>(id) >= cs.node.size() || cs.node[static_cast<size_t>(id)]->name != s.strategy) {
      throw UserError(plan_source, where + "/strategies/\"" + s.node + "\"",
                      "\"" + s.strategy + "\" does not fit the stage's other choices on the whole model's graph (here \"" +
                          (id == kNoId ? std::string("?") : cs.node[static_cast<size_t>(id)]->name) + "\")");
    }
  }
  out.whole = whole.plan;
  return out;
}

StageRank lower_stage_rank(const StageChoice& stage, const Plan& plan, const std::string& plan_source,
                           const Graph& forward, const OptimizerConfig& opt, int64_t index) {
  StageRank out;
  out.lowering = lower_batch_parallel(stage.whole, plan_source, *stage.sg, stage.choice, index);
  out.local = build_training_graph(rebatch(forward, plan.global_batch, out.lowering.microbatch_samples), opt);
  out.program = build_rank_program(out.lowering, *stage.sg, stage.choice, out.local);
  for (size_t k = 0; k < out.program.num_forward_nodes; ++k) {
    const Node& node = out.program.graph.node(static_cast<NodeId>(k));
    ALPA_CHECK(node.derived_from.empty() || node.kind == OpKind::kReshard,
               "pipeline: the stage's rank program does not keep its forward nodes first ('" + node.name + "')");
  }
  return out;
}

Plan as_single_stage(const Plan& plan, const std::string& plan_source) {
  const PlanStage& st = plan.pipeline->stages[0];
  if (st.remat) {
    throw UserError(plan_source, "/pipeline/stages/0/remat", "recomputation is not executed by this version of alpa-run; "
                    "set it to false (alpa-plan cost re-costs the edit)");
  }
  Plan out = plan;
  out.pipeline.reset();
  out.method = st.method;
  out.mesh_hosts = st.mesh_hosts;
  out.mesh_devices_per_host = st.mesh_devices_per_host;
  out.logical_d0 = st.logical_d0;
  out.logical_d1 = st.logical_d1;
  out.device_ids = st.device_ids;
  out.strategies = st.strategies;
  out.tensors = st.tensors;
  return out;
}

RankCheck check_rank_programs(const Plan& given, const std::string& plan_source, const Graph& forward,
                              const Cluster& cluster) {
  RankCheck out;
  require_accumulable_loss(forward, given.microbatches, plan_source);
  if (given.pipeline && given.pipeline->stages.size() > 1) return check_pipeline(given, plan_source, forward);
  const Plan plan = given.pipeline ? as_single_stage(given, plan_source) : given;
  const TrainingGraph tg = plan_training_graph(plan, plan_source, forward);
  const StrategyGraph sg = plan_strategy_graph(plan, plan_source, tg, cluster);
  const std::vector<int> choice = plan_choice(plan, plan_source, tg, sg);
  out.devices = plan.logical_d0 * plan.logical_d1;
  // alpa-run tracks every tensor's samples (data, dropout masks) on every rank.
  as_refusal(plan_source, "batch", [&] { batch_dims(forward, plan.global_batch); });
  for (int64_t rank : ranks_to_lower(plan.logical_d0, plan.logical_d1)) {
    const std::string element = "rank " + std::to_string(rank) + " of " + std::to_string(out.devices);
    as_refusal(plan_source, element, [&] {
      out.peak_bytes = std::max(out.peak_bytes, lower_rank(plan, plan_source, forward, sg, choice, tg, rank));
    });
    ++out.ranks_lowered;
  }
  return out;
}

}  // namespace alpa
