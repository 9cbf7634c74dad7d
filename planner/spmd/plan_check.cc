#include "planner/spmd/plan_check.h"

#include <set>

#include "planner/autodiff/training_graph.h"
#include "planner/common/error.h"
#include "planner/graph/rebatch.h"
#include "planner/intra_op/search.h"
#include "planner/spmd/lowering.h"

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

// One rank's program, exactly as alpa-run's set-up builds it for a single-stage plan.
void lower_rank(const Plan& plan, const std::string& plan_source, const Graph& forward, const StrategyGraph& sg,
                const std::vector<int>& choice, const TrainingGraph& tg, int64_t rank) {
  RankLowering low = lower_batch_parallel(plan, plan_source, sg, choice, rank);
  batch_dims(forward, plan.global_batch);  // alpa-run tracks every tensor's samples (data, dropout masks)
  // In the plan's precision: a GPU plan's rank programs (half compute, fp32 master weights) are
  // the CUDA backend's to run, and lowered the same way.
  TrainingGraph local =
      build_training_graph(rebatch(forward, plan.global_batch, low.microbatch_samples), tg.optimizer, tg.precision);
  build_rank_program(low, sg, choice, std::move(local));
}

}  // namespace

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
  if (given.pipeline && given.pipeline->stages.size() > 1) {
    out.multi_stage = true;
    return out;
  }
  const Plan plan = given.pipeline ? as_single_stage(given, plan_source) : given;
  const TrainingGraph tg = plan_training_graph(plan, plan_source, forward);
  const StrategyGraph sg = plan_strategy_graph(plan, plan_source, tg, cluster);
  const std::vector<int> choice = plan_choice(plan, plan_source, tg, sg);
  out.devices = plan.logical_d0 * plan.logical_d1;
  for (int64_t rank : ranks_to_lower(plan.logical_d0, plan.logical_d1)) {
    const std::string element = "rank " + std::to_string(rank) + " of " + std::to_string(out.devices);
    try {
      lower_rank(plan, plan_source, forward, sg, choice, tg, rank);
    } catch (const UserError& e) {
      throw UserError(plan_source, element, std::string("alpa-run cannot run this plan: ") + e.what());
    } catch (const InternalError& e) {
      throw UserError(plan_source, element, std::string("alpa-run cannot run this plan (its lowering stops): ") + e.what());
    }
    ++out.ranks_lowered;
  }
  return out;
}

}  // namespace alpa
