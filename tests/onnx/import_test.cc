// Importer rules on hand-built ONNX graphs: folding, roles, batch binding, normalisation.
#include <gtest/gtest.h>

#include "planner/common/error.h"
#include "planner/graph/rebatch.h"
#include "planner/onnx/import.h"
#include "tests/onnx/model_builder.h"

namespace alpa {
namespace {

using testing::ModelBuilder;
using testing::mean_loss;
constexpr int32_t kF = onnx::TensorProto::FLOAT;
constexpr int32_t kI64 = onnx::TensorProto::INT64;

ImportedModel import(const ModelBuilder& b, ImportOptions options = {}) {
  return import_onnx_bytes(b.bytes(), "test.onnx", options);
}

std::string import_error(const ModelBuilder& b, ImportOptions options = {}) {
  try {
    import(b, options);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

// x[B,4,8] → Reshape to [B, 32] via the exporter's shape chain → MatMul W[32,2] → ReduceMean.
ModelBuilder reshape_chain_model() {
  ModelBuilder b;
  b.input("x", kF, {-1, 4, 8}).weight("w", {32, 2});
  b.node("Shape", {"x"}, {"s"});
  b.constant_ints("zero", {0}, true);
  b.node("Gather", {"s", "zero"}, {"batch"});
  b.constant_ints("axes0", {0});
  b.node("Unsqueeze", {"batch", "axes0"}, {"batch1"});
  b.constant_ints("c32", {32});
  auto& concat = b.node("Concat", {"batch1", "c32"}, {"target"});
  ModelBuilder::set_int(concat, "axis", 0);
  b.node("Reshape", {"x", "target"}, {"flat"}, "flatten_reshape");
  b.node("MatMul", {"flat", "w"}, {"y"});
  mean_loss(b, "y");
  b.output("loss");
  return b;
}

TEST(Import, FoldsShapeChainsIntoReshapeTargets) {
  ImportOptions options;
  options.batch = 6;
  const ImportedModel m = import(reshape_chain_model(), options);
  const Graph& g = m.graph;
  ASSERT_EQ(g.num_nodes(), 3u);  // Reshape, MatMul, ReduceMean
  const Node& reshape = g.node(g.find_node("flatten_reshape"));
  EXPECT_EQ(reshape.kind, OpKind::kReshape);
  EXPECT_EQ(reshape.inputs.size(), 1u);
  EXPECT_EQ(reshape.attrs.get_ints("shape"), (std::vector<int64_t>{6, 32}));
  EXPECT_EQ(g.tensor(reshape.outputs[0]).shape, (Shape{6, 32}));
  EXPECT_EQ(m.batch, 6);
  EXPECT_EQ(m.folded_nodes, 7);  // Shape, 3 Constants, Gather, Unsqueeze, Concat
  EXPECT_EQ(g.tensor(g.find_tensor("w")).role, TensorRole::kParameter);
  EXPECT_EQ(g.tensor(g.loss).role, TensorRole::kLoss);
  EXPECT_EQ(g.tensor(g.find_tensor("x")).role, TensorRole::kDataInput);
}

TEST(Import, SymbolicBatchWithoutBatchFlagIsAnError) {
  const std::string e = import_error(reshape_chain_model());
  EXPECT_NE(e.find("test.onnx: input 'x': batch dim 0 'batch' is symbolic; pass --batch N"), std::string::npos) << e;
}

TEST(Import, UnboundDynamicDimIsAnError) {
  ModelBuilder b;
  b.input("x", kF, {4, -1}, "seq").weight("w", {8, 2});
  b.node("MatMul", {"x", "w"}, {"y"});
  mean_loss(b, "y");
  b.output("loss");
  const std::string e = import_error(b);
  EXPECT_NE(e.find("input 'x': dim 1 'seq1' is dynamic and --batch does not bind it"), std::string::npos) << e;
}

TEST(Import, BatchDimFlagPicksAnotherAxis) {
  ModelBuilder b;
  b.input("x", kF, {8, -1}, "batch").weight("w", {8, 2});
  auto& t = b.node("Transpose", {"x"}, {"xt"});
  ModelBuilder::set_ints(t, "perm", {1, 0});
  b.node("MatMul", {"xt", "w"}, {"y"});
  mean_loss(b, "y");
  b.output("loss");
  ImportOptions options;
  options.batch = 3;
  options.batch_dims = {{"x", 1}};
  const ImportedModel m = import(b, options);
  EXPECT_EQ(m.graph.tensor(m.graph.find_tensor("x")).shape, (Shape{8, 3}));
}

TEST(Import, StaticBatchBakedIntoReshapeNamesTheReshape) {
  ModelBuilder b;
  b.input("x", kF, {4, 8}).weight("w", {2, 2});
  b.constant_ints("target", {4, 4, 2});
  b.node("Reshape", {"x", "target"}, {"r"}, "attn/Reshape_3");
  b.node("MatMul", {"r", "w"}, {"y"});
  mean_loss(b, "y");
  b.output("loss");
  EXPECT_NO_THROW(import(b));  // static batch 4 needs no flag
  ImportOptions options;
  options.batch = 8;
  const std::string e = import_error(b, options);
  EXPECT_NE(e.find("node 'attn/Reshape_3' (Reshape)"), std::string::npos) << e;
  EXPECT_NE(e.find("exported with batch 4"), std::string::npos) << e;
  EXPECT_NE(e.find("--batch 8"), std::string::npos) << e;
}

// A float mask buffer compared with Equal, and BatchNorm running statistics, are buffers;
// everything with a differentiable path to the loss is a parameter.
TEST(Import, ParametersVersusBuffers) {
  ModelBuilder b;
  b.input("x", kF, {2, 3, 4, 4});
  b.weight("conv.weight", {3, 3, 1, 1}).weight("bn.weight", {3}).weight("bn.bias", {3});
  b.weight("bn.running_mean", {3}).weight("bn.running_var", {3}).weight("mask", {1, 1, 4, 4});
  b.node("Conv", {"x", "conv.weight"}, {"c"});
  auto& bn = b.node("BatchNormalization",
                    {"c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"},
                    {"bn_out", "rm_out", "rv_out"}, "bn");
  ModelBuilder::set_int(bn, "training_mode", 1);
  ModelBuilder::set_float(bn, "momentum", 0.9f);
  b.constant_float("zero", 0.0f);
  b.node("Equal", {"mask", "zero"}, {"masked"});
  b.constant_float("neg", -1e9f);
  b.node("Where", {"masked", "neg", "bn_out"}, {"filled"});
  mean_loss(b, "filled");
  b.output("loss");
  const ImportedModel m = import(b);
  const Graph& g = m.graph;
  EXPECT_EQ(g.tensor(g.find_tensor("conv.weight")).role, TensorRole::kParameter);
  EXPECT_EQ(g.tensor(g.find_tensor("bn.weight")).role, TensorRole::kParameter);
  EXPECT_EQ(g.tensor(g.find_tensor("bn.bias")).role, TensorRole::kParameter);
  EXPECT_EQ(g.tensor(g.find_tensor("bn.running_mean")).role, TensorRole::kBuffer);
  EXPECT_EQ(g.tensor(g.find_tensor("bn.running_var")).role, TensorRole::kBuffer);
  EXPECT_EQ(g.tensor(g.find_tensor("mask")).role, TensorRole::kBuffer);
  const Node& bn_node = g.node(g.find_node("bn"));
  EXPECT_EQ(bn_node.outputs.size(), 3u);
  EXPECT_EQ(bn_node.attrs.get_float("momentum"), 0.9f);

  ImportOptions options;
  options.frozen_regex = "^conv\\.";
  options.trainable_regex = "mask";
  const ImportedModel o = import(b, options);
  EXPECT_EQ(o.graph.tensor(o.graph.find_tensor("conv.weight")).role, TensorRole::kBuffer);
  EXPECT_EQ(o.graph.tensor(o.graph.find_tensor("mask")).role, TensorRole::kParameter);
}

// Constant folding never passes through a parameter, even when every operand is known.
TEST(Import, NeverFoldsThroughParameters) {
  ModelBuilder b;
  b.input("x", kF, {2, 4}).weight("w", {2, 4});
  auto& t = b.node("Transpose", {"w"}, {"wt"}, "tied_transpose");
  ModelBuilder::set_ints(t, "perm", {1, 0});
  b.node("MatMul", {"x", "wt"}, {"y"});
  mean_loss(b, "y");
  b.output("loss");
  const ImportedModel m = import(b);
  EXPECT_NE(m.graph.find_node("tied_transpose"), kNoId);
  EXPECT_EQ(m.graph.tensor(m.graph.find_tensor("w")).role, TensorRole::kParameter);
}

TEST(Import, DropoutZeroAndIdentityAreRemovedPositiveDropoutKept) {
  ModelBuilder b;
  b.input("x", kF, {2, 4}).weight("w", {4, 4});
  b.constant_float("r0", 0.0f);
  b.constant_float("r1", 0.1f);
  {
    auto& n = b.node("Constant", {}, {"train"}, "train_const");
    auto* a = n.add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    a->mutable_t()->set_data_type(onnx::TensorProto::BOOL);
    a->mutable_t()->add_int32_data(1);
  }
  b.node("Dropout", {"x", "r0", "train"}, {"d0"}, "drop_zero");
  b.node("Identity", {"d0"}, {"i0"}, "ident");
  b.node("MatMul", {"i0", "w"}, {"y"});
  b.node("Dropout", {"y", "r1", "train"}, {"d1", "mask"}, "drop_real");
  mean_loss(b, "d1");
  b.output("loss");
  const ImportedModel m = import(b);
  const Graph& g = m.graph;
  EXPECT_EQ(g.find_node("drop_zero"), kNoId);
  EXPECT_EQ(g.find_node("ident"), kNoId);
  const NodeId d = g.find_node("drop_real");
  ASSERT_NE(d, kNoId);
  EXPECT_EQ(g.node(d).kind, OpKind::kDropout);
  EXPECT_DOUBLE_EQ(g.node(d).attrs.get_float("ratio"), static_cast<double>(0.1f));
  EXPECT_EQ(g.tensor(g.node(d).outputs[1]).dtype, DType::kBool);
}

TEST(Import, LabelsAreDetectedThroughReshape) {
  ModelBuilder b;
  b.input("x", kF, {2, 3, 4}).input("labels", kI64, {2, 3}).weight("w", {4, 5});
  b.node("MatMul", {"x", "w"}, {"logits"});
  b.constant_ints("flat_scores", {-1, 5});
  b.node("Reshape", {"logits", "flat_scores"}, {"scores"});
  b.constant_ints("flat_labels", {-1});
  b.node("Reshape", {"labels", "flat_labels"}, {"lab"});
  auto& loss = b.node("SoftmaxCrossEntropyLoss", {"scores", "lab"}, {"loss"});
  ModelBuilder::set_int(loss, "ignore_index", -100);
  b.output("loss");
  const ImportedModel m = import(b);
  EXPECT_EQ(m.graph.tensor(m.graph.find_tensor("labels")).role, TensorRole::kLabel);
  EXPECT_EQ(m.graph.tensor(m.graph.find_tensor("x")).role, TensorRole::kDataInput);
  EXPECT_EQ(m.graph.tensor(m.graph.loss).shape, Shape{});
}

TEST(Import, ShapeOnlyInitializersImport) {
  ModelBuilder b;
  b.input("x", kF, {2, 1024}).weight("w", {1024, 4096}, /*with_data=*/false);
  b.node("MatMul", {"x", "w"}, {"y"});
  mean_loss(b, "y");
  b.output("loss");
  const ImportedModel m = import(b);
  EXPECT_TRUE(m.shape_only);
  const Tensor& w = m.graph.tensor(m.graph.find_tensor("w"));
  EXPECT_FALSE(w.has_data());
  EXPECT_EQ(w.numel(), 1024 * 4096);
}

TEST(Import, NodesOffTheLossPathAreRemoved) {
  ModelBuilder b;
  b.input("x", kF, {2, 4}).weight("w", {4, 4}).weight("unused", {4, 4});
  b.node("MatMul", {"x", "w"}, {"y"});
  b.node("MatMul", {"x", "unused"}, {"dead"}, "dead_matmul");
  mean_loss(b, "y");
  b.output("loss");
  const ImportedModel m = import(b);
  EXPECT_EQ(m.graph.find_node("dead_matmul"), kNoId);
  EXPECT_EQ(m.graph.find_tensor("unused"), kNoId);
}

TEST(Import, NonScalarOutputIsAnError) {
  ModelBuilder b;
  b.input("x", kF, {2, 4}).weight("w", {4, 4});
  b.node("MatMul", {"x", "w"}, {"y"});
  b.output("y");
  EXPECT_NE(import_error(b).find("output 'y': has shape [2,4]; the model's output must be a scalar loss"),
            std::string::npos);
}

TEST(Import, OpsetOutsideTheSupportedRangeIsAnError) {
  ModelBuilder b(11);
  b.input("x", kF, {2, 4});
  mean_loss(b, "x");
  b.output("loss");
  EXPECT_NE(import_error(b).find("opset_import: opset 11 is not supported"), std::string::npos);
}

TEST(Import, CanonicalOrderIsStable) {
  const ImportedModel a = import(reshape_chain_model(), ImportOptions{.batch = 2});
  const ImportedModel b = import(reshape_chain_model(), ImportOptions{.batch = 2});
  ASSERT_EQ(a.graph.num_nodes(), b.graph.num_nodes());
  for (size_t i = 0; i < a.graph.num_nodes(); ++i) {
    EXPECT_EQ(a.graph.node(i).name, b.graph.node(i).name);
  }
}

}  // namespace
}  // namespace alpa

namespace alpa {
namespace {

// A graph that sums over the samples inside a MatMul cannot be split by batch: the error names
// the node. A graph that keeps samples separate splits, and Reshape targets follow.
TEST(Rebatch, ContractionOverTheBatchIsReportedByName) {
  testing::ModelBuilder b;
  b.input("x", onnx::TensorProto::FLOAT, {4, 4}).weight("w", {3, 4});
  b.node("MatMul", {"w", "x"}, {"y"}, "mixes_samples");
  testing::mean_loss(b, "y");
  b.output("loss");
  const ImportedModel m = import_onnx_bytes(b.bytes(), "m.onnx", {});
  try {
    rebatch(m.graph, 4, 2);
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("node 'mixes_samples'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("contracts over the batch"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rebatch(m.graph, 4, 3), UserError);  // 3 does not divide 4
}

// A causal mask [seq, seq] broadcast against scores [batch, heads, seq, seq] is no
// batch-shaped constant even when seq equals the batch (a PyTorch GPT at batch = seq); a
// constant lined up with the batch dim still is, and is refused by name.
TEST(Rebatch, ConstantBesideTheBatchDimIsNotBatchShaped) {
  auto model = [](const std::vector<int64_t>& mask_dims) {
    testing::ModelBuilder b;
    b.input("scores", onnx::TensorProto::FLOAT, {4, 2, 4, 4});
    int64_t n = 1;
    for (int64_t d : mask_dims) n *= d;
    std::vector<int64_t> flat(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) flat[static_cast<size_t>(i)] = i % 3 == 0;
    b.constant_ints("flat", flat).constant_ints("mask_shape", mask_dims).constant_float("fill", -1e9f);
    b.node("Reshape", {"flat", "mask_shape"}, {"mask_ints"});
    testing::ModelBuilder::set_int(b.node("Cast", {"mask_ints"}, {"mask"}), "to", onnx::TensorProto::BOOL);
    b.node("Where", {"mask", "fill", "scores"}, {"masked"}, "apply_mask");
    testing::mean_loss(b, "masked");
    b.output("loss");
    return import_onnx_bytes(b.bytes(), "m.onnx", {});
  };
  const ImportedModel causal = model({4, 4});
  const Graph g = rebatch(causal.graph, 4, 2);
  EXPECT_EQ(g.tensor(g.find_tensor("masked")).shape, (Shape{2, 2, 4, 4}));
  const ImportedModel per_sample = model({4, 1, 1, 1});
  try {
    rebatch(per_sample.graph, 4, 2);
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("bakes in the global batch 4"), std::string::npos) << e.what();
  }
}

TEST(Rebatch, ReshapeTargetsFollowTheBatch) {
  const ImportedModel m = import_onnx_bytes(reshape_chain_model().bytes(), "m.onnx", ImportOptions{.batch = 8});
  const Graph g = rebatch(m.graph, 8, 2);
  const Node& reshape = g.node(g.find_node("flatten_reshape"));
  EXPECT_EQ(reshape.attrs.get_ints("shape"), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(g.tensor(g.find_tensor("x")).shape, (Shape{2, 4, 8}));
  const std::vector<int> dims = batch_dims(m.graph, 8);
  EXPECT_EQ(dims[m.graph.find_tensor("flat")], 0);
  EXPECT_EQ(dims[m.graph.find_tensor("w")], -1);
  EXPECT_EQ(dims[m.graph.loss], -1);  // the mean over samples
}

}  // namespace
}  // namespace alpa
