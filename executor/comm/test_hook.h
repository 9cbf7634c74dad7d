// Test-only failure injection, for the failure tests of `mpirun alpa-run --plan`
// (tests/mpi/planned_run_test.py errors): with ALPA_TEST_FAIL_RANK=r and ALPA_TEST_FAIL_STEP=s
// in the environment, rank r stops with a UserError at step s, as a rank whose step fails.
// The only place alpa-run reads these variables.
#pragma once

#include <cstdint>

namespace alpa::exec {

struct InjectedFailure {
  int rank = -1;      // -1: none
  int64_t step = -1;  // 1-based
  bool at(int r, int64_t step_1based) const { return rank >= 0 && r == rank && step_1based == step; }
};

InjectedFailure injected_failure();

}  // namespace alpa::exec
