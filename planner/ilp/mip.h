// A solver-independent mixed-integer program and its result. The CBC backend (mip_cbc.cc) is
// the only code that includes COIN-OR headers.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace alpa::ilp {

inline constexpr double kInf = std::numeric_limits<double>::infinity();

enum class VarType : uint8_t { kBinary, kContinuous, kInteger };  // kInteger: within [lower, upper]

struct Variable {
  VarType type = VarType::kBinary;
  double lower = 0, upper = 1;
  double cost = 0;  // objective coefficient (minimised)
};

struct Term {
  int32_t var = 0;
  double coef = 0;
};

// lower <= Σ coef·x <= upper
struct Constraint {
  std::vector<Term> terms;
  double lower = -kInf, upper = kInf;
};

struct MipRequest {
  std::vector<Variable> vars;
  std::vector<Constraint> rows;
  // Optional feasible starting point (one value per variable), handed to the solver.
  std::vector<double> initial_solution;
  // Deterministic limit: branch-and-bound nodes. The wall-clock limit is only a safety net;
  // when it fires the result is not proven optimal.
  int64_t max_nodes = 200000;
  double safety_time_limit_s = 120;
};

enum class MipStatus : uint8_t {
  kOptimal,     // proven optimal
  kFeasible,    // a solution, but a limit stopped the proof
  kInfeasible,  // proven infeasible
  kNoSolution,  // a limit stopped the search before any solution was found
};
const char* mip_status_name(MipStatus status);

struct MipResult {
  MipStatus status = MipStatus::kNoSolution;
  std::vector<double> values;  // one per variable when a solution exists
  double objective = 0;
  bool proven_optimal = false;
  bool hit_time_limit = false;
  int64_t nodes = 0;     // branch-and-bound nodes explored
  double solve_time_s = 0;
};

// Solves with CBC on the calling thread (single-threaded, fixed cut generators, fixed seeds);
// safe to call from several threads at once on different requests; same request → same result.
MipResult solve(const MipRequest& request);

}  // namespace alpa::ilp
