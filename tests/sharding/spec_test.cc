#include "planner/sharding/spec.h"

#include <gtest/gtest.h>

#include "planner/cost/collective.h"

namespace alpa {
namespace {

TEST(ShardingSpec, ParsePrintRoundTrip) {
  for (const char* text : {"S0R", "RS1", "S01R", "RR", "S1S0", "R"}) {
    const auto spec = ShardingSpec::parse(text, std::string(text) == "R" ? 1 : 2);
    ASSERT_TRUE(spec.has_value()) << text;
    EXPECT_EQ(spec->to_string(), text);
  }
  EXPECT_FALSE(ShardingSpec::parse("S0S0", 2));   // axis 0 used twice
  EXPECT_FALSE(ShardingSpec::parse("S01S1", 2));  // axis 1 used twice
  EXPECT_FALSE(ShardingSpec::parse("S2R", 2));
  EXPECT_FALSE(ShardingSpec::parse("S0R", 3));    // wrong rank
}

TEST(ShardingSpec, LocalShapesPadUnevenDims) {
  const LogicalMesh mesh{2, 4};
  const auto spec = *ShardingSpec::parse("S0S1", 2);
  EXPECT_EQ(spec.local_shape({8, 50257}, mesh), (Shape{4, 12565}));  // GPT-2's vocab, padded
  EXPECT_FALSE(spec.divides({8, 50257}, mesh));
  EXPECT_TRUE(spec.divides({8, 50256}, mesh));
  EXPECT_EQ(ShardingSpec::parse("S01R", 2)->local_shape({30522, 768}, mesh), (Shape{3816, 768}));
}

// α-β formulas of the paper on a 4-device axis with α = β = 1: all-reduce of B bytes costs
// 1 + 2·(3/4)·B, all-gather and reduce-scatter 1 + (3/4)·B; an all-to-all of a local buffer
// of L bytes moves a tensor of B = 4·L across the group: 1 + (3/16)·B·2.
TEST(Collective, AlphaBetaFormulas) {
  AxisCost axis;
  axis.size = 4;
  axis.alpha_s = 1;
  axis.beta_s_per_byte = 1;
  EXPECT_DOUBLE_EQ(collective_time(Collective::kAllReduce, axis, 8), 1 + 12);
  EXPECT_DOUBLE_EQ(collective_time(Collective::kAllGather, axis, 8), 1 + 6);
  EXPECT_DOUBLE_EQ(collective_time(Collective::kReduceScatter, axis, 8), 1 + 6);
  EXPECT_DOUBLE_EQ(collective_time(Collective::kAllToAll, axis, 8), 1 + 12);
  axis.size = 1;
  EXPECT_DOUBLE_EQ(collective_time(Collective::kAllReduce, axis, 8), 0);
  EXPECT_DOUBLE_EQ(collective_bytes_per_device(Collective::kAllReduce, 4, 1000), 1500);
  EXPECT_DOUBLE_EQ(collective_bytes_per_device(Collective::kAllGather, 1, 1000), 0);
}

}  // namespace
}  // namespace alpa
