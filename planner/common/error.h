// Error policy (see DESIGN.md "Invariants"):
//  - UserError: bad input from the user (model, cluster, plan, data, flags). The apps print
//    its message on one line and exit with code 2. The message names the file and the element.
//  - InternalError: a broken invariant inside the planner. Carries file:line; apps exit 3.
#pragma once

#include <stdexcept>
#include <string>

namespace alpa {

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& message) : std::runtime_error(message) {}
  // "<file>: <element>: <what>" — the canonical shape of every user-facing error.
  UserError(const std::string& file, const std::string& element, const std::string& what)
      : std::runtime_error(file + ": " + element + ": " + what) {}
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& message) : std::logic_error(message) {}
};

[[noreturn]] void internal_failure(const char* file, int line, const std::string& message);

}  // namespace alpa

#define ALPA_CHECK(cond, message)                                                \
  do {                                                                           \
    if (!(cond)) ::alpa::internal_failure(__FILE__, __LINE__, (message));        \
  } while (0)
