#include "planner/ilp/mip_check.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "planner/common/error.h"

namespace alpa::ilp {

void validate_request(const MipRequest& request) {
  const auto num_vars = static_cast<int64_t>(request.vars.size());
  for (int64_t v = 0; v < num_vars; ++v) {
    const Variable& var = request.vars[v];
    const std::string where = "mip variable " + std::to_string(v);
    ALPA_CHECK(var.lower <= var.upper, where + ": lower bound above upper bound (or NaN)");
    ALPA_CHECK(std::isfinite(var.cost), where + ": cost is not finite");
    if (var.type == VarType::kBinary) {
      ALPA_CHECK(var.lower >= 0 && var.upper <= 1, where + ": binary bounds outside [0, 1]");
    }
  }
  for (size_t r = 0; r < request.rows.size(); ++r) {
    const Constraint& row = request.rows[r];
    const std::string where = "mip row " + std::to_string(r);
    ALPA_CHECK(row.lower <= row.upper, where + ": lower bound above upper bound (or NaN)");
    for (const Term& term : row.terms) {
      ALPA_CHECK(term.var >= 0 && term.var < num_vars,
                 where + ": variable index " + std::to_string(term.var) + " out of range");
      ALPA_CHECK(std::isfinite(term.coef), where + ": coefficient is not finite");
    }
  }
  ALPA_CHECK(request.initial_solution.empty() ||
                 static_cast<int64_t>(request.initial_solution.size()) == num_vars,
             "mip initial_solution needs one value per variable");
  ALPA_CHECK(request.max_nodes >= 0, "mip max_nodes is negative");
  ALPA_CHECK(request.safety_time_limit_s > 0, "mip safety_time_limit_s is not positive");
}

double objective_value(const MipRequest& request, const std::vector<double>& values) {
  ALPA_CHECK(values.size() == request.vars.size(), "mip objective: one value per variable needed");
  double total = 0;
  for (size_t v = 0; v < values.size(); ++v) total += request.vars[v].cost * values[v];
  return total;
}

double max_violation(const MipRequest& request, const std::vector<double>& values) {
  ALPA_CHECK(values.size() == request.vars.size(), "mip violation: one value per variable needed");
  double worst = 0;
  for (size_t v = 0; v < values.size(); ++v) {
    const Variable& var = request.vars[v];
    const double x = values[v];
    if (!std::isfinite(x)) return kInf;
    worst = std::max({worst, var.lower - x, x - var.upper});
    if (var.type != VarType::kContinuous) worst = std::max(worst, std::abs(x - std::round(x)));
  }
  for (const Constraint& row : request.rows) {
    double activity = 0;
    for (const Term& term : row.terms) activity += term.coef * values[term.var];
    if (activity < row.lower) {
      worst = std::max(worst, (row.lower - activity) / std::max(1.0, std::abs(row.lower)));
    }
    if (activity > row.upper) {
      worst = std::max(worst, (activity - row.upper) / std::max(1.0, std::abs(row.upper)));
    }
  }
  return worst;
}

}  // namespace alpa::ilp
