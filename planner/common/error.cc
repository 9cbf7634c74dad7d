#include "planner/common/error.h"

namespace alpa {

void internal_failure(const char* file, int line, const std::string& message) {
  throw InternalError(std::string("internal error at ") + file + ":" + std::to_string(line) +
                      ": " + message);
}

}  // namespace alpa
