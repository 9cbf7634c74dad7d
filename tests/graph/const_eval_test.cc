#include "planner/graph/const_eval.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace alpa {
namespace {

ConstArray ints(Shape shape, std::vector<int64_t> v) {
  ConstArray a;
  a.dtype = DType::kInt64;
  a.shape = std::move(shape);
  a.ints = std::move(v);
  return a;
}

ConstArray eval(const Node& n, const std::vector<ConstArray>& in) {
  std::vector<TensorType> types;
  std::vector<TensorType> in_types;
  for (const auto& a : in) in_types.push_back({a.dtype, a.shape});
  types = infer_types(n, in_types);
  auto out = evaluate_constant(n, in, types);
  EXPECT_TRUE(out.has_value());
  return out ? (*out)[0] : ConstArray{};
}

Node make(OpKind kind) {
  Node n;
  n.kind = kind;
  n.outputs = {0};
  return n;
}

TEST(ConstEval, ShapeChainPieces) {
  // Gather(shape, 0) → Unsqueeze → Concat with [-1, 64].
  Node gather = make(OpKind::kGather);
  const ConstArray batch = eval(gather, {ints({3}, {8, 16, 64}), ints({}, {0})});
  EXPECT_EQ(batch.shape, Shape{});
  EXPECT_EQ(batch.ints, (std::vector<int64_t>{8}));
  Node unsq = make(OpKind::kUnsqueeze);
  unsq.attrs.set("axes", std::vector<int64_t>{0});
  const ConstArray b1 = eval(unsq, {batch});
  Node concat = make(OpKind::kConcat);
  concat.attrs.set("axis", int64_t{0});
  EXPECT_EQ(eval(concat, {b1, ints({2}, {-1, 64})}).ints, (std::vector<int64_t>{8, -1, 64}));
}

TEST(ConstEval, ArithmeticBroadcastAndCompare) {
  Node mul = make(OpKind::kMul);
  EXPECT_EQ(eval(mul, {ints({2, 2}, {1, 2, 3, 4}), ints({2}, {10, 100})}).ints,
            (std::vector<int64_t>{10, 200, 30, 400}));
  Node div = make(OpKind::kDiv);
  EXPECT_EQ(eval(div, {ints({2}, {7, -7}), ints({}, {2})}).ints, (std::vector<int64_t>{3, -3}));
  Node eq = make(OpKind::kEqual);
  const ConstArray e = eval(eq, {ints({3}, {1, 2, 3}), ints({}, {2})});
  EXPECT_EQ(e.dtype, DType::kBool);
  EXPECT_EQ(e.ints, (std::vector<int64_t>{0, 1, 0}));
  Node where = make(OpKind::kWhere);
  ConstArray cond = e;
  EXPECT_EQ(eval(where, {cond, ints({3}, {7, 8, 9}), ints({}, {-1})}).ints,
            (std::vector<int64_t>{-1, 8, -1}));
}

TEST(ConstEval, SliceTransposeExpand) {
  Node slice = make(OpKind::kSlice);
  slice.attrs.set("starts", std::vector<int64_t>{1});
  slice.attrs.set("ends", std::vector<int64_t>{std::numeric_limits<int64_t>::max()});
  EXPECT_EQ(eval(slice, {ints({4}, {5, 6, 7, 8})}).ints, (std::vector<int64_t>{6, 7, 8}));
  Node tr = make(OpKind::kTranspose);
  tr.attrs.set("perm", std::vector<int64_t>{1, 0});
  EXPECT_EQ(eval(tr, {ints({2, 3}, {1, 2, 3, 4, 5, 6})}).ints, (std::vector<int64_t>{1, 4, 2, 5, 3, 6}));
  Node ex = make(OpKind::kExpand);
  ex.attrs.set("shape", std::vector<int64_t>{2, 2});
  EXPECT_EQ(eval(ex, {ints({2}, {3, 4})}).ints, (std::vector<int64_t>{3, 4, 3, 4}));
}

TEST(ConstEval, BytesRoundTrip) {
  ConstArray f;
  f.dtype = DType::kFloat32;
  f.shape = {3};
  f.floats = {1.5, -2.0, 0.25};
  Tensor t;
  t.name = "c";
  t.dtype = f.dtype;
  t.shape = f.shape;
  t.data = array_to_bytes(f);
  EXPECT_EQ(t.data->size(), 12u);
  EXPECT_EQ(array_from_tensor(t).floats, f.floats);
}

TEST(ConstEval, SaturatingIntConversion) {
  EXPECT_EQ(saturating_int(1e30), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(saturating_int(-1e30), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(saturating_int(std::nan("")), 0);
  EXPECT_EQ(saturating_int(-3.7), -3);
}

}  // namespace
}  // namespace alpa
