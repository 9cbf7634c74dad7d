#include "executor/comm/test_hook.h"

#include <cstdlib>

namespace alpa::exec {

InjectedFailure injected_failure() {
  const char* rank = std::getenv("ALPA_TEST_FAIL_RANK");
  const char* step = std::getenv("ALPA_TEST_FAIL_STEP");
  InjectedFailure out;
  if (rank && step) {
    out.rank = std::atoi(rank);
    out.step = std::atoll(step);
  }
  return out;
}

}  // namespace alpa::exec
