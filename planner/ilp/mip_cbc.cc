// CBC backend of planner/ilp/mip.h — the only file in the repository that includes COIN-OR headers.
//
// Formulation handed to CBC, unchanged and in request order (column v = vars[v], row r = rows[r]):
//
//   minimise    Σ_v cost[v] · x[v]
//   subject to  (BOUND v)  vars[v].lower <= x[v] <= vars[v].upper
//               (INT v)    x[v] integer                       for every binary v
//               (ROW r)    rows[r].lower <= Σ_{t ∈ rows[r].terms} coef[t] · x[var[t]] <= rows[r].upper
//
// Duplicate terms of a row are summed; ±kInf bounds become COIN_DBL_MAX. There is no CglPreProcess
// pass, so CBC's columns are ours and its solution needs no mapping back.
//
// Determinism: CbcModel::branchAndBound on the calling thread with no worker threads, a fixed list of
// cut generators (no zero-half: it keeps process-wide state) and heuristics, fixed random seeds,
// and a node limit. Every CBC object lives on this function's stack, so concurrent calls on
// different requests share nothing. Only the safety wall-clock limit can make a result depend on
// timing; MipResult::hit_time_limit says when it fired.

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <vector>

#include <CbcHeuristic.hpp>
#include <CbcHeuristicFPump.hpp>
#include <CbcModel.hpp>
#include <CglClique.hpp>
#include <CglFlowCover.hpp>
#include <CglGomory.hpp>
#include <CglKnapsackCover.hpp>
#include <CglMixedIntegerRounding2.hpp>
#include <CglProbing.hpp>
#include <ClpSolve.hpp>
#include <CoinFinite.hpp>
#include <CoinPackedMatrix.hpp>
#include <OsiClpSolverInterface.hpp>

#include "planner/common/error.h"
#include "planner/ilp/mip.h"
#include "planner/ilp/mip_check.h"

namespace alpa::ilp {
namespace {

constexpr int kSeed = 1234567;
// A starting point is offered to CBC only if max_violation() is at most this.
constexpr double kStartTolerance = 1e-6;
// CBC looks only for solutions better than the incumbent by this much (its default, 1e-5, would
// stop short of the optimum when costs are small), and stops when the bound gap is below the gap.
constexpr double kCutoffIncrement = 1e-9;
constexpr double kAllowableGap = 1e-9;

double coin_bound(double bound) {
  if (bound >= kInf) return COIN_DBL_MAX;
  if (bound <= -kInf) return -COIN_DBL_MAX;
  return bound;
}

// (ROW r) as a row-ordered matrix: terms of each row sorted by variable, duplicates summed.
CoinPackedMatrix build_rows(const MipRequest& request) {
  std::vector<double> elements;
  std::vector<int> indices;
  std::vector<CoinBigIndex> starts;
  std::vector<int> lengths;
  std::vector<Term> terms;
  for (const Constraint& row : request.rows) {
    terms = row.terms;
    std::stable_sort(terms.begin(), terms.end(),
                     [](const Term& a, const Term& b) { return a.var < b.var; });
    starts.push_back(static_cast<CoinBigIndex>(elements.size()));
    for (const Term& term : terms) {
      const bool repeats = static_cast<size_t>(starts.back()) < elements.size() &&
                           indices.back() == term.var;
      if (repeats) {
        elements.back() += term.coef;
      } else {
        indices.push_back(term.var);
        elements.push_back(term.coef);
      }
    }
    lengths.push_back(static_cast<int>(elements.size() - starts.back()));
  }
  return CoinPackedMatrix(/*colordered=*/false, static_cast<int>(request.vars.size()),
                          static_cast<int>(request.rows.size()),
                          static_cast<CoinBigIndex>(elements.size()), elements.data(),
                          indices.data(), starts.data(), lengths.data());
}

// (BOUND), (INT) and (ROW) loaded into a silent Clp solver.
void load_problem(const MipRequest& request, OsiClpSolverInterface& solver) {
  const size_t num_vars = request.vars.size();
  std::vector<double> col_lower(num_vars), col_upper(num_vars), cost(num_vars);
  for (size_t v = 0; v < num_vars; ++v) {
    col_lower[v] = coin_bound(request.vars[v].lower);
    col_upper[v] = coin_bound(request.vars[v].upper);
    cost[v] = request.vars[v].cost;
  }
  std::vector<double> row_lower, row_upper;
  for (const Constraint& row : request.rows) {
    row_lower.push_back(coin_bound(row.lower));
    row_upper.push_back(coin_bound(row.upper));
  }
  solver.loadProblem(build_rows(request), col_lower.data(), col_upper.data(), cost.data(),
                     row_lower.data(), row_upper.data());
  for (size_t v = 0; v < num_vars; ++v) {
    if (request.vars[v].type != VarType::kContinuous) solver.setInteger(static_cast<int>(v));
  }
  solver.messageHandler()->setLogLevel(0);
  solver.setHintParam(OsiDoReducePrint, true, OsiHintTry);
  solver.getModelPtr()->setRandomSeed(kSeed);
  // Clp's initial solve otherwise installs a SIGINT handler (process-wide) pointing at a global
  // model pointer; concurrent solves would race on both and could leave it installed.
  ClpSolve options;
  options.setSpecialOption(2, 1);
  solver.setSolveOptions(options);
}

void add_cut_generators(CbcModel& model) {
  // -1: at the root, then in the tree only where the root showed the generator pays off.
  CglProbing probing;
  probing.setUsingObjective(1);
  probing.setMaxPass(1);
  probing.setMaxPassRoot(5);
  probing.setMaxProbe(10);
  probing.setMaxProbeRoot(1000);
  probing.setMaxLook(50);
  probing.setMaxLookRoot(500);
  probing.setMaxElements(200);
  probing.setRowCuts(3);
  model.addCutGenerator(&probing, -1, "Probing");

  CglGomory gomory;
  gomory.setLimit(300);
  model.addCutGenerator(&gomory, -1, "Gomory");

  CglKnapsackCover knapsack;
  model.addCutGenerator(&knapsack, -1, "KnapsackCover");

  CglClique clique;
  clique.setStarCliqueReport(false);
  clique.setRowCliqueReport(false);
  model.addCutGenerator(&clique, -1, "Clique");

  CglFlowCover flow_cover;
  model.addCutGenerator(&flow_cover, -1, "FlowCover");

  CglMixedIntegerRounding2 mixed_integer_rounding;
  model.addCutGenerator(&mixed_integer_rounding, -1, "MixedIntegerRounding2");
}

void add_heuristics(CbcModel& model) {
  CbcRounding rounding(model);
  rounding.setSeed(kSeed);
  model.addHeuristic(&rounding);

  CbcHeuristicFPump pump(model);
  pump.setSeed(kSeed);
  pump.setMaximumPasses(20);
  model.addHeuristic(&pump);
}

void configure(const MipRequest& request, CbcModel& model) {
  model.setLogLevel(0);
  model.messageHandler()->setLogLevel(0);
  model.solver()->messageHandler()->setLogLevel(0);
  model.setNumberThreads(0);
  model.setRandomSeed(kSeed);
  model.setMaximumNodes(static_cast<int>(std::min<int64_t>(request.max_nodes, INT_MAX)));
  model.setUseElapsedTime(true);  // CPU time is process-wide: other threads would consume it
  model.setMaximumSeconds(std::min(request.safety_time_limit_s, 1e30));
  model.setDblParam(CbcModel::CbcCutoffIncrement, kCutoffIncrement);
  model.setAllowableGap(kAllowableGap);
  model.setAllowableFractionGap(0);
  add_cut_generators(model);
  add_heuristics(model);
}

// Binaries rounded to exact 0/1, continuous values clamped into their bounds.
std::vector<double> snap(const MipRequest& request, const double* solution) {
  std::vector<double> values(solution, solution + request.vars.size());
  for (size_t v = 0; v < values.size(); ++v) {
    const Variable& var = request.vars[v];
    if (var.type != VarType::kContinuous) values[v] = std::round(values[v]);
    values[v] = std::clamp(values[v], var.lower, var.upper);
  }
  return values;
}

// Hands request.initial_solution to CBC as its first incumbent when it is feasible; an infeasible
// starting point is ignored.
void offer_start(const MipRequest& request, CbcModel& model) {
  if (request.initial_solution.empty()) return;
  if (max_violation(request, request.initial_solution) > kStartTolerance) return;
  const std::vector<double> start = snap(request, request.initial_solution.data());
  model.setBestSolution(start.data(), static_cast<int>(start.size()),
                        objective_value(request, start), /*check=*/false);
}

// A request with no variables: every row's activity is 0, so it holds iff lower <= 0 <= upper.
MipResult solve_empty(const MipRequest& request) {
  MipResult result;
  const bool feasible = std::all_of(request.rows.begin(), request.rows.end(), [](const auto& r) {
    return r.lower <= 0 && 0 <= r.upper;
  });
  result.status = feasible ? MipStatus::kOptimal : MipStatus::kInfeasible;
  result.proven_optimal = feasible;
  return result;
}

MipResult run_branch_and_bound(const MipRequest& request) {
  OsiClpSolverInterface solver;
  load_problem(request, solver);
  CbcModel model(solver);  // clones the solver
  configure(request, model);
  offer_start(request, model);
  model.initialSolve();
  // CBC reports an unbounded program as infeasible; every program we build is bounded.
  ALPA_CHECK(!model.solver()->isProvenDualInfeasible(), "mip: the linear relaxation is unbounded");
  model.branchAndBound();

  MipResult result;
  result.nodes = model.getNodeCount();
  result.hit_time_limit = model.isSecondsLimitReached();
  const double* best = model.bestSolution();
  if (model.isProvenOptimal() && !result.hit_time_limit && best) {
    result.status = MipStatus::kOptimal;
    result.proven_optimal = true;
  } else if (model.isProvenInfeasible() && !result.hit_time_limit) {
    result.status = MipStatus::kInfeasible;
  } else {
    result.status = best ? MipStatus::kFeasible : MipStatus::kNoSolution;
  }
  if (best && result.status != MipStatus::kInfeasible) {
    result.values = snap(request, best);
    result.objective = objective_value(request, result.values);
  }
  return result;
}

}  // namespace

MipResult solve(const MipRequest& request) {
  const auto start = std::chrono::steady_clock::now();
  validate_request(request);
  MipResult result = request.vars.empty() ? solve_empty(request) : run_branch_and_bound(request);
  result.solve_time_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace alpa::ilp
