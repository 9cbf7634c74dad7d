#include "planner/graph/op_cost.h"

#include <gtest/gtest.h>

namespace alpa {
namespace {

TensorId add(Graph& g, const std::string& name, Shape shape) {
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  return g.add_tensor(t);
}

TEST(OpCost, MatMulIsTwoMNK) {
  Graph g;
  const TensorId a = add(g, "a", {4, 8, 16}), b = add(g, "b", {16, 32}), c = add(g, "c", {4, 8, 32});
  g.add_node({"mm", OpKind::kMatMul, {a, b}, {c}, {}});
  g.finalize();
  const OpCount n = count_node(g, g.node(0));
  EXPECT_DOUBLE_EQ(n.flops, 2.0 * 4 * 8 * 32 * 16);
  EXPECT_DOUBLE_EQ(n.bytes_read, 4.0 * (4 * 8 * 16 + 16 * 32));
  EXPECT_DOUBLE_EQ(n.bytes_written, 4.0 * 4 * 8 * 32);
}

TEST(OpCost, ConvCountsKernelVolumeAndBias) {
  Graph g;
  const TensorId x = add(g, "x", {2, 6, 8, 8}), w = add(g, "w", {10, 3, 3, 3}), bias = add(g, "b", {10});
  const TensorId y = add(g, "y", {2, 10, 6, 6});
  Node conv{"conv", OpKind::kConv, {x, w, bias}, {y}, {}};
  conv.attrs.set("group", int64_t{2});
  g.add_node(conv);
  g.finalize();
  const double out = 2 * 10 * 6 * 6;
  EXPECT_DOUBLE_EQ(count_node(g, g.node(0)).flops, 2.0 * out * 3 * 3 * 3 + out);
}

TEST(OpCost, EinsumCountsEveryLabelCombination) {
  Graph g;
  const TensorId a = add(g, "a", {2, 5, 3}), b = add(g, "b", {3, 7}), c = add(g, "c", {2, 5, 7});
  Node e{"e", OpKind::kEinsum, {a, b}, {c}, {}};
  e.attrs.set("equation", std::string("bij,jk->bik"));
  g.add_node(e);
  g.finalize();
  EXPECT_DOUBLE_EQ(count_node(g, g.node(0)).flops, 2.0 * 2 * 5 * 3 * 7);
}

}  // namespace
}  // namespace alpa
