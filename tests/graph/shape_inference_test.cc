#include "planner/graph/shape_inference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace alpa {
namespace {

TensorType f32(Shape s) { return {DType::kFloat32, std::move(s)}; }
TensorType i64(Shape s) { return {DType::kInt64, std::move(s)}; }

Node make(OpKind kind, size_t outputs = 1) {
  Node n;
  n.kind = kind;
  n.outputs.assign(outputs, 0);
  return n;
}

Shape out(const Node& n, const std::vector<TensorType>& in, size_t i = 0) {
  return infer_types(n, in).at(i).shape;
}

TEST(ShapeInference, Broadcasting) {
  EXPECT_EQ(broadcast_shapes({4, 1, 3}, {2, 1}), (Shape{4, 2, 3}));
  EXPECT_EQ(broadcast_shapes({}, {5}), (Shape{5}));
  EXPECT_THROW(broadcast_shapes({3}, {4}), ShapeError);
  EXPECT_EQ(out(make(OpKind::kAdd), {f32({8, 1, 16}), f32({4, 16})}), (Shape{8, 4, 16}));
  EXPECT_EQ(infer_types(make(OpKind::kEqual), {f32({2}), f32({})})[0].dtype, DType::kBool);
}

TEST(ShapeInference, MatMulBatchedAndVectors) {
  const Node mm = make(OpKind::kMatMul);
  EXPECT_EQ(out(mm, {f32({2, 4, 3, 5}), f32({5, 7})}), (Shape{2, 4, 3, 7}));
  EXPECT_EQ(out(mm, {f32({1, 3, 5}), f32({6, 5, 2})}), (Shape{6, 3, 2}));
  EXPECT_EQ(out(mm, {f32({5}), f32({5, 2})}), (Shape{2}));
  EXPECT_EQ(out(mm, {f32({3, 5}), f32({5})}), (Shape{3}));
  EXPECT_THROW(out(mm, {f32({3, 5}), f32({4, 2})}), ShapeError);
}

TEST(ShapeInference, GemmTransposes) {
  Node g = make(OpKind::kGemm);
  g.attrs.set("transB", int64_t{1});
  EXPECT_EQ(out(g, {f32({8, 16}), f32({10, 16}), f32({10})}), (Shape{8, 10}));
}

TEST(ShapeInference, ConvAndPool) {
  Node conv = make(OpKind::kConv);
  conv.attrs.set("strides", std::vector<int64_t>{2, 2});
  conv.attrs.set("pads", std::vector<int64_t>{3, 3, 3, 3});
  EXPECT_EQ(out(conv, {f32({2, 3, 224, 224}), f32({64, 3, 7, 7})}), (Shape{2, 64, 112, 112}));
  Node grouped = make(OpKind::kConv);
  grouped.attrs.set("group", int64_t{4});
  EXPECT_EQ(out(grouped, {f32({1, 8, 5, 5}), f32({16, 2, 3, 3})}), (Shape{1, 16, 3, 3}));
  EXPECT_THROW(out(grouped, {f32({1, 8, 5, 5}), f32({16, 3, 3, 3})}), ShapeError);
  Node pool = make(OpKind::kMaxPool);
  pool.attrs.set("kernel_shape", std::vector<int64_t>{3, 3});
  pool.attrs.set("strides", std::vector<int64_t>{2, 2});
  pool.attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  EXPECT_EQ(out(pool, {f32({2, 64, 112, 112})}), (Shape{2, 64, 56, 56}));
  pool.attrs.set("ceil_mode", int64_t{1});
  EXPECT_EQ(out(pool, {f32({1, 1, 6, 6})}), (Shape{1, 1, 4, 4}));
  EXPECT_EQ(out(make(OpKind::kGlobalAveragePool), {f32({2, 8, 7, 7})}), (Shape{2, 8, 1, 1}));
}

TEST(ShapeInference, ReshapeResolution) {
  EXPECT_EQ(resolve_reshape({4, 16, 64}, {0, 0, 4, -1}, false), (Shape{4, 16, 4, 16}));
  EXPECT_EQ(resolve_reshape({4, 16, 64}, {-1, 64}, false), (Shape{64, 64}));
  EXPECT_THROW(resolve_reshape({4, 16, 64}, {-1, -1}, false), ShapeError);
  EXPECT_THROW(resolve_reshape({4, 16, 64}, {8, 16, 64}, false), ShapeError);
  EXPECT_THROW(resolve_reshape({4, 16, 64}, {7, -1}, false), ShapeError);
}

TEST(ShapeInference, SliceClampsLikeOnnx) {
  Attributes a;
  a.set("starts", std::vector<int64_t>{0, 1});
  a.set("ends", std::vector<int64_t>{std::numeric_limits<int64_t>::max(), -1});
  a.set("axes", std::vector<int64_t>{0, -1});
  const auto r = resolve_slice({5, 10}, a);
  EXPECT_EQ(r[0].count, 5);
  EXPECT_EQ(r[1].start, 1);
  EXPECT_EQ(r[1].count, 8);
  Attributes rev;
  rev.set("starts", std::vector<int64_t>{-1});
  rev.set("ends", std::vector<int64_t>{std::numeric_limits<int64_t>::min()});
  rev.set("steps", std::vector<int64_t>{-2});
  EXPECT_EQ(resolve_slice({5}, rev)[0].count, 3);  // 4, 2, 0
}

TEST(ShapeInference, GatherSplitConcatSqueeze) {
  Node gather = make(OpKind::kGather);
  EXPECT_EQ(out(gather, {f32({50257, 768}), i64({8, 1024})}), (Shape{8, 1024, 768}));
  Node split = make(OpKind::kSplit, 3);
  split.attrs.set("axis", int64_t{2});
  const auto parts = infer_types(split, {f32({2, 4, 192})});
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].shape, (Shape{2, 4, 64}));
  Node concat = make(OpKind::kConcat);
  concat.attrs.set("axis", int64_t{-1});
  EXPECT_EQ(out(concat, {f32({2, 3}), f32({2, 5})}), (Shape{2, 8}));
  EXPECT_THROW(out(concat, {f32({2, 3}), f32({3, 5})}), ShapeError);
  Node unsq = make(OpKind::kUnsqueeze);
  unsq.attrs.set("axes", std::vector<int64_t>{0, -1});
  EXPECT_EQ(out(unsq, {f32({3, 4})}), (Shape{1, 3, 4, 1}));
  Node sq = make(OpKind::kSqueeze);
  EXPECT_EQ(out(sq, {f32({1, 3, 1, 4})}), (Shape{3, 4}));
}

TEST(ShapeInference, EinsumGShardDispatch) {
  Node e = make(OpKind::kEinsum);
  e.attrs.set("equation", std::string("gsec,gsm->egcm"));
  EXPECT_EQ(out(e, {f32({2, 64, 4, 40}), f32({2, 64, 32})}), (Shape{4, 2, 40, 32}));
  Node implicit = make(OpKind::kEinsum);
  implicit.attrs.set("equation", std::string("ij,jk"));
  EXPECT_EQ(out(implicit, {f32({2, 3}), f32({3, 4})}), (Shape{2, 4}));
  EXPECT_THROW(parse_einsum("ij,jk->ik", 3), ShapeError);
}

TEST(ShapeInference, TopKOneHotLossReduce) {
  Node topk = make(OpKind::kTopK, 2);
  topk.attrs.set("k", int64_t{2});
  const auto t = infer_types(topk, {f32({64, 8})});
  EXPECT_EQ(t[0].shape, (Shape{64, 2}));
  EXPECT_EQ(t[1].dtype, DType::kInt64);
  Node onehot = make(OpKind::kOneHot);
  onehot.attrs.set("depth", int64_t{8});
  onehot.attrs.set("dtype", static_cast<int64_t>(DType::kInt64));
  EXPECT_EQ(out(onehot, {i64({64})}), (Shape{64, 8}));
  Node loss = make(OpKind::kSoftmaxCrossEntropyLoss);
  EXPECT_EQ(out(loss, {f32({32, 100}), i64({32})}), Shape{});
  EXPECT_THROW(out(loss, {f32({32, 100}), i64({16})}), ShapeError);
  Node sum = make(OpKind::kReduceSum);
  sum.attrs.set("axes", std::vector<int64_t>{-1});
  sum.attrs.set("keepdims", int64_t{0});
  EXPECT_EQ(out(sum, {f32({2, 3, 4})}), (Shape{2, 3}));
  Node mean_all = make(OpKind::kReduceMean);
  mean_all.attrs.set("keepdims", int64_t{0});
  EXPECT_EQ(out(mean_all, {f32({2, 3, 4})}), Shape{});
}

TEST(ShapeInference, NormalizationChecksParameterShapes) {
  Node ln = make(OpKind::kLayerNormalization);
  EXPECT_EQ(out(ln, {f32({2, 16, 64}), f32({64}), f32({64})}), (Shape{2, 16, 64}));
  EXPECT_THROW(out(ln, {f32({2, 16, 64}), f32({32})}), ShapeError);
  Node bn = make(OpKind::kBatchNormalization, 3);
  const auto t = infer_types(bn, {f32({4, 8, 5, 5}), f32({8}), f32({8}), f32({8}), f32({8})});
  EXPECT_EQ(t[2].shape, (Shape{8}));
}

}  // namespace
}  // namespace alpa
