#include "planner/graph/graph.h"

#include <gtest/gtest.h>

#include "planner/common/error.h"

namespace alpa {
namespace {

TensorId add(Graph& g, const std::string& name) {
  Tensor t;
  t.name = name;
  t.shape = {2};
  return g.add_tensor(t);
}

// Nodes inserted out of dependency order come out topologically sorted; independent nodes keep
// their insertion (ONNX) order.
TEST(Graph, CanonicalTopologicalOrder) {
  Graph g;
  const TensorId x = add(g, "x"), a = add(g, "a"), b = add(g, "b"), c = add(g, "c");
  g.add_node({"uses_a_b", OpKind::kAdd, {a, b}, {c}, {}});
  g.add_node({"makes_b", OpKind::kRelu, {x}, {b}, {}});
  g.add_node({"makes_a", OpKind::kNeg, {x}, {a}, {}});
  g.finalize();
  ASSERT_EQ(g.num_nodes(), 3u);
  EXPECT_EQ(g.node(0).name, "makes_b");
  EXPECT_EQ(g.node(1).name, "makes_a");
  EXPECT_EQ(g.node(2).name, "uses_a_b");
  EXPECT_EQ(g.tensor(c).producer, 2);
  EXPECT_EQ(g.tensor(x).consumers, (std::vector<NodeId>{0, 1}));
  EXPECT_EQ(g.find_node("makes_a"), 1);
  EXPECT_EQ(g.find_tensor("c"), c);
  EXPECT_EQ(g.find_tensor("zzz"), kNoId);
}

TEST(Graph, CycleIsAnInternalError) {
  Graph g;
  const TensorId a = add(g, "a"), b = add(g, "b");
  g.add_node({"n1", OpKind::kRelu, {a}, {b}, {}});
  g.add_node({"n2", OpKind::kRelu, {b}, {a}, {}});
  EXPECT_THROW(g.finalize(), InternalError);
}

TEST(Graph, NumElementsSaturatesInsteadOfOverflowing) {
  EXPECT_EQ(num_elements({2, 3, 4}), 24);
  EXPECT_EQ(num_elements({}), 1);
  EXPECT_FALSE(checked_num_elements({int64_t{1} << 40, int64_t{1} << 40}).has_value());
  EXPECT_FALSE(checked_num_elements({-1, 2}).has_value());
}

TEST(OpKind, TableRoundTripsOnnxNames) {
  for (int k = 0; k < kNumOpKinds; ++k) {
    const auto kind = static_cast<OpKind>(k);
    if (is_internal(kind)) {
      EXPECT_FALSE(op_kind_from_onnx(op_name(kind)).has_value()) << op_name(kind);
    } else {
      EXPECT_EQ(op_kind_from_onnx(op_name(kind)), kind);
    }
  }
  EXPECT_FALSE(op_kind_from_onnx("Hardmax").has_value());
  // Differentiability facts the importer's parameter detection depends on.
  EXPECT_FALSE(mask_has(op_info(OpKind::kBatchNormalization).differentiable_inputs, 3));
  EXPECT_TRUE(mask_has(op_info(OpKind::kBatchNormalization).differentiable_inputs, 1));
  EXPECT_FALSE(mask_has(op_info(OpKind::kWhere).differentiable_inputs, 0));
  EXPECT_FALSE(mask_has(op_info(OpKind::kGather).differentiable_inputs, 1));
  EXPECT_FALSE(mask_has(op_info(OpKind::kTopK).differentiable_outputs, 1));
  EXPECT_EQ(op_info(OpKind::kEqual).differentiable_inputs, 0u);
}

}  // namespace
}  // namespace alpa
