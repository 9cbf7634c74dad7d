// Models exported by PyTorch (scripts/models/make_test_models.py) import, and the parameter
// and buffer counts equal PyTorch's own: sum(p.numel() for p in model.parameters()).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "planner/graph/rebatch.h"
#include "planner/inspect/inspect.h"

namespace alpa {
namespace {

struct Case {
  std::string name;
};

nlohmann::json sidecar(const std::string& name) {
  std::ifstream in(std::string(ALPA_TEST_MODELS_DIR) + "/" + name + ".json");
  EXPECT_TRUE(in.good()) << name << ".json missing";
  return nlohmann::json::parse(in);
}

ImportedModel import_model(const std::string& name, const nlohmann::json& meta) {
  ImportOptions options;
  options.batch = meta.at("batch").get<int64_t>();
  return import_onnx_file(std::string(ALPA_TEST_MODELS_DIR) + "/" + name + ".onnx", options);
}

class PyTorchModel : public ::testing::TestWithParam<std::string> {};

TEST_P(PyTorchModel, CountsMatchPyTorch) {
  const std::string name = GetParam();
  const nlohmann::json meta = sidecar(name);
  const ImportedModel model = import_model(name, meta);
  const InspectReport r = inspect_model(model);
  EXPECT_EQ(r.parameter_count, meta.at("param_count").get<int64_t>()) << name;
  if (meta.contains("buffer_count")) {
    EXPECT_EQ(r.buffer_count, meta.at("buffer_count").get<int64_t>()) << name;
  }
  EXPECT_GT(r.forward_flops, 0);
  EXPECT_EQ(model.graph.tensor(model.graph.loss).shape, Shape{});
  // Every floating initializer is either a parameter or a buffer; no shape chain survives.
  for (const Node& n : model.graph.nodes()) {
    EXPECT_NE(op_info(n.kind).family, OpFamily::kSource) << n.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, PyTorchModel,
                         ::testing::Values("gpt_test", "gpt_test_static", "bert_test", "moe_test",
                                           "wresnet_test", "gpt_test_shapeonly",
                                           "bert_test_shapeonly", "moe_test_shapeonly",
                                           "wresnet_test_shapeonly"));

TEST(PyTorchModels, GptTiedEmbeddingAndMaskBuffer) {
  const ImportedModel m = import_model("gpt_test", sidecar("gpt_test"));
  const Graph& g = m.graph;
  int masks = 0;
  for (TensorId t : g.tensors_with_role(TensorRole::kBuffer)) {
    if (g.tensor(t).shape.size() == 4) ++masks;  // the [1,1,S,S] causal masks
  }
  EXPECT_GE(masks, 1);
  // The tied embedding is one parameter read by both the Gather and the output projection.
  const TensorId wte = g.find_tensor("wte.weight");
  ASSERT_NE(wte, kNoId);
  EXPECT_EQ(g.tensor(wte).role, TensorRole::kParameter);
  EXPECT_GE(g.tensor(wte).consumers.size(), 2u);
  const InspectReport r = inspect_model(m);
  ASSERT_TRUE(r.repeated.has_value());
  EXPECT_EQ(r.repeated->repeats, sidecar("gpt_test")["config"]["layers"].get<int64_t>());
}

TEST(PyTorchModels, WideResNetBatchNormStatisticsAreBuffers) {
  const ImportedModel m = import_model("wresnet_test", sidecar("wresnet_test"));
  const Graph& g = m.graph;
  int bn = 0;
  for (const Node& n : g.nodes()) {
    if (n.kind != OpKind::kBatchNormalization) continue;
    ++bn;
    EXPECT_EQ(g.tensor(n.inputs[1]).role, TensorRole::kParameter) << n.name;
    EXPECT_EQ(g.tensor(n.inputs[3]).role, TensorRole::kBuffer) << n.name;
    EXPECT_EQ(g.tensor(n.inputs[4]).role, TensorRole::kBuffer) << n.name;
  }
  EXPECT_GT(bn, 4);
}

TEST(PyTorchModels, BertLabelsAndMoeRouting) {
  const ImportedModel bert = import_model("bert_test", sidecar("bert_test"));
  EXPECT_EQ(bert.graph.tensor(bert.graph.find_tensor("labels")).role, TensorRole::kLabel);
  const ImportedModel moe = import_model("moe_test", sidecar("moe_test"));
  std::map<OpKind, int> ops;
  for (const Node& n : moe.graph.nodes()) ++ops[n.kind];
  EXPECT_GE(ops[OpKind::kTopK], 1);
  EXPECT_GE(ops[OpKind::kCumSum], 1);
  EXPECT_GE(ops[OpKind::kOneHot], 1);
  EXPECT_GE(ops[OpKind::kEinsum], 3);
}

TEST(PyTorchModels, BatchRebindsTheGlobalBatch) {
  const nlohmann::json meta = sidecar("gpt_test");
  ImportOptions options;
  options.batch = 2 * meta.at("batch").get<int64_t>();
  const ImportedModel m = import_onnx_file(std::string(ALPA_TEST_MODELS_DIR) + "/gpt_test.onnx", options);
  const InspectReport small = inspect_model(import_model("gpt_test", meta));
  const InspectReport big = inspect_model(m);
  EXPECT_EQ(big.parameter_count, small.parameter_count);
  // Everything but batch-independent work (the causal-mask comparison) doubles.
  EXPECT_NEAR(big.forward_flops / small.forward_flops, 2.0, 1e-3);
}

}  // namespace
}  // namespace alpa

namespace alpa {
namespace {

// Splitting the batch in the IR (rebatch) gives exactly the graph PyTorch's own shape
// computations give when the model is imported at the smaller batch.
TEST(PyTorchModels, RebatchEqualsImportAtTheSmallerBatch) {
  for (const std::string name : {"gpt_test", "bert_test", "moe_test", "wresnet_test", "gpt_test_static"}) {
    const nlohmann::json meta = sidecar(name);
    const int64_t batch = meta.at("batch").get<int64_t>();
    const ImportedModel full = import_model(name, meta);
    const Graph split = rebatch(full.graph, batch, batch / 2);
    if (name == "gpt_test_static") continue;  // no smaller import to compare with
    ImportOptions options;
    options.batch = batch / 2;
    const ImportedModel small =
        import_onnx_file(std::string(ALPA_TEST_MODELS_DIR) + "/" + name + ".onnx", options);
    ASSERT_EQ(split.num_nodes(), small.graph.num_nodes()) << name;
    for (size_t k = 0; k < split.num_nodes(); ++k) {
      const Node& a = split.node(static_cast<NodeId>(k));
      const Node& b = small.graph.node(static_cast<NodeId>(k));
      ASSERT_EQ(a.name, b.name);
      for (size_t o = 0; o < a.outputs.size(); ++o) {
        EXPECT_EQ(split.tensor(a.outputs[o]).shape, small.graph.tensor(b.outputs[o]).shape)
            << name << " " << a.name;
      }
    }
  }
}

}  // namespace
}  // namespace alpa
