// ALPA_DEBUG's channel list: names, "all", unknown names reported, empty entries ignored.
#include "planner/common/log.h"

#include <gtest/gtest.h>

namespace alpa {
namespace {

TEST(DebugChannels, ParsesTheList) {
  std::string unknown;
  auto on = parse_debug_channels("comm,stages", &unknown);
  EXPECT_TRUE(on[static_cast<size_t>(DebugChannel::kComm)]);
  EXPECT_TRUE(on[static_cast<size_t>(DebugChannel::kStages)]);
  EXPECT_FALSE(on[static_cast<size_t>(DebugChannel::kSolve)]);
  EXPECT_FALSE(on[static_cast<size_t>(DebugChannel::kLowering)]);
  EXPECT_FALSE(on[static_cast<size_t>(DebugChannel::kPipeline)]);
  EXPECT_EQ(unknown, "");
  on = parse_debug_channels("all");
  for (bool b : on) EXPECT_TRUE(b);
  on = parse_debug_channels("", &unknown);
  for (bool b : on) EXPECT_FALSE(b);
  on = parse_debug_channels(",solve,,bogus,pipeline,x", &unknown);
  EXPECT_TRUE(on[static_cast<size_t>(DebugChannel::kSolve)]);
  EXPECT_TRUE(on[static_cast<size_t>(DebugChannel::kPipeline)]);
  EXPECT_FALSE(on[static_cast<size_t>(DebugChannel::kComm)]);
  EXPECT_EQ(unknown, "bogus, x");
}

TEST(DebugChannels, NamesRoundTrip) {
  for (int i = 0; i < kNumDebugChannels; ++i) {
    const auto c = static_cast<DebugChannel>(i);
    const auto on = parse_debug_channels(debug_channel_name(c));
    for (int j = 0; j < kNumDebugChannels; ++j) EXPECT_EQ(on[static_cast<size_t>(j)], i == j);
  }
}

}  // namespace
}  // namespace alpa
