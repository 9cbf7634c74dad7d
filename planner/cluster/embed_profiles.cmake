# Writes OUT: a C++ file holding every profiles/*.json as a raw string (built-in clusters).
file(GLOB profiles "${PROFILES_DIR}/*.json")
list(SORT profiles)
set(body "")
foreach(p ${profiles})
  get_filename_component(name "${p}" NAME_WLE)
  file(READ "${p}" text)
  string(APPEND body "      {\"${name}\", R\"alpa_json(${text})alpa_json\"},\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from profiles/*.json by planner/cluster/embed_profiles.cmake.
#include <string>
#include <utility>
#include <vector>

namespace alpa {
const std::vector<std::pair<std::string, std::string>>& builtin_profile_texts() {
  static const std::vector<std::pair<std::string, std::string>> kProfiles = {
${body}  };
  return kProfiles;
}
}  // namespace alpa
")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUT}.tmp" "${OUT}")
