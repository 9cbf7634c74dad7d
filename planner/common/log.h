// Debug output by channel, for developers: ALPA_DEBUG=comm,solve (a comma-separated list, or
// "all") in the environment turns channels on, and their lines go to stderr as "[channel] ...".
// The environment is read once, here only; library code asks debug_enabled(channel).
//   comm      every collective a plan's estimate counts (tensor, where, kind, bytes, times)
//   solve     each ILP attempt per logical view, and ILPs that take over 0.5 s
//   stages    the inter-op pass: layers, stage options, the stage DP
//   lowering  the rank program's reshaped nodes and its Reshard steps
//   pipeline  each pipeline rank's instruction list and boundary blocks
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace alpa {

enum class DebugChannel { kComm, kSolve, kStages, kLowering, kPipeline };
inline constexpr int kNumDebugChannels = 5;

std::string_view debug_channel_name(DebugChannel channel);

// Which channels a value of ALPA_DEBUG names; `unknown` receives the names it does not know.
std::array<bool, kNumDebugChannels> parse_debug_channels(std::string_view value, std::string* unknown = nullptr);

// Whether ALPA_DEBUG turns `channel` on (read once; an unknown name is reported on stderr once).
bool debug_enabled(DebugChannel channel);

// A printf-style line on stderr, "[channel] " first and a newline last, when the channel is on.
void debug_line(DebugChannel channel, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace alpa
