#include "planner/ilp/mip.h"

namespace alpa::ilp {

const char* mip_status_name(MipStatus status) {
  switch (status) {
    case MipStatus::kOptimal: return "optimal";
    case MipStatus::kFeasible: return "feasible";
    case MipStatus::kInfeasible: return "infeasible";
    case MipStatus::kNoSolution: return "no_solution";
  }
  return "unknown";
}

}  // namespace alpa::ilp
