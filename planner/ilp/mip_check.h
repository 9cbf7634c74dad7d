// Solver-independent checks of a MipRequest and of candidate solutions. The CBC backend uses them
// to validate requests and starting points; tests use them as an evaluator independent of CBC.
#pragma once

#include <vector>

#include "planner/ilp/mip.h"

namespace alpa::ilp {

// Stops with InternalError (ALPA_CHECK) on a malformed request: a term whose variable index is out
// of range, lower > upper (or NaN) on a variable or row, a non-finite cost, binary bounds outside
// [0, 1], an initial_solution whose size is neither 0 nor vars.size(), a negative node limit or a
// non-positive time limit.
void validate_request(const MipRequest& request);

// Σ cost·x over all variables; `values` has one entry per variable.
double objective_value(const MipRequest& request, const std::vector<double>& values);

// The largest violation by `values` of a variable bound, of binary integrality, or of a row;
// 0 when every one holds exactly. A row's violation is divided by max(1, |violated bound|), so
// rows with large coefficients (bytes of memory) are judged relatively.
double max_violation(const MipRequest& request, const std::vector<double>& values);

}  // namespace alpa::ilp
