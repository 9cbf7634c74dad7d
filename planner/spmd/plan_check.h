// The planner's side of "every plan alpa-plan writes or `cost` accepts, alpa-run runs": the
// rank programs of a plan, lowered as alpa-run lowers them (lowering.h), without running them.
#pragma once

#include <cstdint>
#include <string>

#include "planner/cluster/cluster.h"
#include "planner/graph/graph.h"
#include "planner/plan/plan.h"

namespace alpa {

// A pipeline plan of one stage is a single-stage plan: the stage's mesh, method and shardings
// over the whole model. Throws UserError naming `plan_source` for a stage alpa-run does not
// execute so (recomputation).
Plan as_single_stage(const Plan& plan, const std::string& plan_source);

struct RankCheck {
  int64_t ranks_lowered = 0;  // rank programs built
  int64_t devices = 0;        // the plan's devices
  // A pipeline of several stages: alpa-run builds its stages' programs at start-up from a
  // search of each stage's mesh (executor/comm/planned_run.cc), which this check does not
  // repeat; nothing is lowered.
  bool multi_stage = false;
};

// Builds, for a single-stage plan (or a pipeline of one stage), the rank program of every device as alpa-run does (the
// plan's training graph, strategy graph and checked choice; each rank's lowering, its
// microbatch's training graph and the rank program with its Reshard nodes). Plans on more than
// 16 devices lower the ranks at the corners of the logical mesh (first and last of each row
// and column), whose blocks include every dim's first and last. Throws UserError naming
// `plan_source`, the rank and what alpa-run would have refused; an internal failure of the
// lowering is reported the same way, so no plan that the executor would stop on is written.
RankCheck check_rank_programs(const Plan& plan, const std::string& plan_source, const Graph& forward,
                              const Cluster& cluster);

}  // namespace alpa
