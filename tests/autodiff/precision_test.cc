// Mixed-precision training graphs (for planning GPU runs): the memory arithmetic per parameter
// is 2 (half weight) + 4 (fp32 master) + 8 (Adam m, v) + 2 (half gradient) bytes, fp16 scales
// the loss, and fp32 graphs are unchanged.
#include <gtest/gtest.h>

#include <cstring>

#include "planner/autodiff/training_graph.h"
#include "planner/graph/const_eval.h"

namespace alpa {
namespace {

// x[8,16] · W1[16,32] → Relu → · W2[32,4] → mean: 16·32 + 32·4 = 640 parameters.
Graph mlp() {
  Graph g;
  auto add = [&](const std::string& name, Shape shape, TensorRole role) {
    Tensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.role = role;
    return g.add_tensor(t);
  };
  const TensorId x = add("x", {8, 16}, TensorRole::kDataInput);
  const TensorId w1 = add("w1", {16, 32}, TensorRole::kParameter);
  const TensorId w2 = add("w2", {32, 4}, TensorRole::kParameter);
  const TensorId h = add("h", {8, 32}, TensorRole::kActivation);
  const TensorId r = add("r", {8, 32}, TensorRole::kActivation);
  const TensorId y = add("y", {8, 4}, TensorRole::kActivation);
  const TensorId loss = add("loss", {}, TensorRole::kLoss);
  g.add_node({"mm1", OpKind::kMatMul, {x, w1}, {h}, {}});
  g.add_node({"relu", OpKind::kRelu, {h}, {r}, {}});
  g.add_node({"mm2", OpKind::kMatMul, {r, w2}, {y}, {}});
  Node mean{"mean", OpKind::kReduceMean, {y}, {loss}, {}};
  mean.attrs.set("keepdims", int64_t{0});
  g.add_node(mean);
  g.inputs = {x};
  g.input_batch_axes = {0};
  g.loss = loss;
  g.finalize();
  return g;
}

int64_t bytes_named(const Graph& g, const std::string& prefix) {
  int64_t total = 0;
  for (const Tensor& t : g.tensors()) {
    if (t.name.rfind(prefix, 0) == 0) total += t.bytes();
  }
  return total;
}

double seed_value(const TrainingGraph& tg) {
  const Tensor& seed = tg.graph.tensor(tg.graph.find_tensor("grad/loss"));
  return array_from_tensor(seed).floats.at(0);
}

TEST(Precision, Fp16AdamMemoryArithmetic) {
  OptimizerConfig adam;
  adam.kind = OptimizerKind::kAdam;
  const TrainingGraph tg = build_training_graph(mlp(), adam, {DType::kFloat16});
  const Graph& g = tg.graph;
  const int64_t params = 640;
  int64_t master = 0;
  for (TensorId t : g.tensors_with_role(TensorRole::kParameter)) master += g.tensor(t).bytes();
  EXPECT_EQ(master, 4 * params);                      // fp32 master weights
  EXPECT_EQ(bytes_named(g, "half/"), 2 * params);     // half copies the compute reads
  EXPECT_EQ(bytes_named(g, "grad/w"), 2 * params);    // half gradients
  EXPECT_EQ(bytes_named(g, "adam_"), 8 * params);     // fp32 m and v
  EXPECT_EQ(g.tensor(g.find_tensor("h")).dtype, DType::kFloat16);
  EXPECT_EQ(g.tensor(g.loss).dtype, DType::kFloat16);
  EXPECT_DOUBLE_EQ(seed_value(tg), 32768.0);
  EXPECT_DOUBLE_EQ(g.node(g.find_node("update/w1")).attrs.get_float("loss_scale"), 32768.0);
  // Compute: the same matmuls as fp32, now in half precision.
  EXPECT_EQ(g.tensor(g.find_tensor("half/w1")).dtype, DType::kFloat16);
}

TEST(Precision, Bf16HasNoLossScaleAndFp32IsUnchanged) {
  const TrainingGraph bf = build_training_graph(mlp(), OptimizerConfig{}, {DType::kBFloat16});
  EXPECT_DOUBLE_EQ(seed_value(bf), 1.0);
  EXPECT_FALSE(bf.graph.node(bf.graph.find_node("update/w1")).attrs.has("loss_scale"));
  EXPECT_EQ(bytes_named(bf.graph, "grad/w"), 2 * 640);
  const TrainingGraph fp = build_training_graph(mlp(), OptimizerConfig{});
  EXPECT_EQ(fp.graph.find_tensor("half/w1"), kNoId);
  EXPECT_EQ(bytes_named(fp.graph, "grad/w"), 4 * 640);
  EXPECT_EQ(fp.graph.tensor(fp.graph.find_tensor("h")).dtype, DType::kFloat32);
}

TEST(Precision, HalfEncoding) {
  ConstArray a;
  a.dtype = DType::kFloat16;
  a.floats = {1.0, -2.5, 65504.0, 1e6, 5.9604644775390625e-08};
  a.shape = {5};
  const auto bytes = array_to_bytes(a);
  uint16_t h[5];
  std::memcpy(h, bytes->data(), 10);
  EXPECT_EQ(h[0], 0x3C00);
  EXPECT_EQ(h[1], 0xC100);
  EXPECT_EQ(h[2], 0x7BFF);
  EXPECT_EQ(h[3], 0x7C00);  // overflow → inf
  EXPECT_EQ(h[4], 0x0001);  // smallest subnormal
  a.dtype = DType::kBFloat16;
  a.floats = {1.0};
  a.shape = {1};
  const auto b = array_to_bytes(a);
  EXPECT_EQ((*b)[0] | ((*b)[1] << 8), 0x3F80);
}

}  // namespace
}  // namespace alpa
