#include "planner/common/log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace alpa {
namespace {

constexpr std::array<std::string_view, kNumDebugChannels> kNames = {"comm", "solve", "stages", "lowering", "pipeline"};

const std::array<bool, kNumDebugChannels>& enabled_channels() {
  static const std::array<bool, kNumDebugChannels> channels = [] {
    const char* value = std::getenv("ALPA_DEBUG");
    std::string unknown;
    const auto on = parse_debug_channels(value ? value : "", &unknown);
    if (!unknown.empty()) {
      std::fprintf(stderr, "alpa: warning: ALPA_DEBUG: unknown channel(s) %s (known: comm, solve, stages, lowering, pipeline, all)\n",
                   unknown.c_str());
    }
    return on;
  }();
  return channels;
}

}  // namespace

std::string_view debug_channel_name(DebugChannel channel) { return kNames[static_cast<size_t>(channel)]; }

std::array<bool, kNumDebugChannels> parse_debug_channels(std::string_view value, std::string* unknown) {
  std::array<bool, kNumDebugChannels> on{};
  while (!value.empty()) {
    const size_t comma = value.find(',');
    const std::string_view name = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    if (name.empty()) continue;
    bool known = false;
    for (size_t i = 0; i < kNames.size(); ++i) {
      if (name == kNames[i] || name == "all") on[i] = known = true;
    }
    if (!known && unknown) *unknown += (unknown->empty() ? "" : ", ") + std::string(name);
  }
  return on;
}

bool debug_enabled(DebugChannel channel) { return enabled_channels()[static_cast<size_t>(channel)]; }

void debug_line(DebugChannel channel, const char* format, ...) {
  if (!debug_enabled(channel)) return;
  std::fprintf(stderr, "[%s] ", kNames[static_cast<size_t>(channel)].data());
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
}

}  // namespace alpa
