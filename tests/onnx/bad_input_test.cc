// Bad models never crash the importer: every failure is a UserError naming the file and the
// element. Run under AddressSanitizer + UBSan by scripts/test.sh.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "planner/common/error.h"
#include "planner/onnx/import.h"
#include "tests/onnx/model_builder.h"

namespace alpa {
namespace {

using testing::ModelBuilder;
using testing::mean_loss;
constexpr int32_t kF = onnx::TensorProto::FLOAT;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Imports `bytes`; returns "" on success or the UserError message. Any other exception fails.
std::string try_import(const std::string& bytes, ImportOptions options = {}) {
  try {
    import_onnx_bytes(bytes, "m.onnx", options);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(BadInput, UnsupportedOpsAreAllListedWithTheirFirstNode) {
  ModelBuilder b;
  b.input("x", kF, {2, 4});
  b.node("Hardmax", {"x"}, {"h"}, "first_hardmax");
  b.node("Hardmax", {"h"}, {"h2"}, "second_hardmax");
  b.node("Det", {"h2"}, {"d"}, "the_det");
  mean_loss(b, "d");
  b.output("loss");
  const std::string e = try_import(b.bytes());
  EXPECT_EQ(e, "m.onnx: graph: 2 unsupported operator types: Det (first at node 'the_det'), "
               "Hardmax (first at node 'first_hardmax')");
}

TEST(BadInput, ShapeMismatchNamesTheNode) {
  ModelBuilder b;
  b.input("x", kF, {4, 8}).weight("w", {5, 3});
  b.node("MatMul", {"x", "w"}, {"y"}, "proj");
  mean_loss(b, "y");
  b.output("loss");
  EXPECT_EQ(try_import(b.bytes()),
            "m.onnx: node 'proj' (MatMul): contraction dims differ: [4,8] x [5,3]");
}

TEST(BadInput, UndefinedInputIsReported) {
  ModelBuilder b;
  b.input("x", kF, {4, 8});
  b.node("Relu", {"nowhere"}, {"y"}, "r");
  mean_loss(b, "y");
  b.output("loss");
  EXPECT_EQ(try_import(b.bytes()), "m.onnx: node 'r' (Relu): input 'nowhere' is not defined before use");
}

TEST(BadInput, RaggedInitializerDataIsReported) {
  ModelBuilder b;
  b.input("x", kF, {2, 4}).weight("w", {4, 4});
  b.model().mutable_graph()->mutable_initializer(0)->add_float_data(1.0f);
  b.node("MatMul", {"x", "w"}, {"y"});
  mean_loss(b, "y");
  b.output("loss");
  EXPECT_EQ(try_import(b.bytes()),
            "m.onnx: initializer 'w': holds 17 values but its shape [4,4] needs 16");
}

TEST(BadInput, EmptyAndGarbageBytes) {
  EXPECT_NE(try_import("").find("m.onnx: file: is not a valid ONNX model"), std::string::npos);
  EXPECT_NE(try_import("this is not a protobuf\n").find("m.onnx: file:"), std::string::npos);
}

TEST(BadInput, MalformedBatchDimFlag) {
  EXPECT_THROW(parse_batch_dim("input_ids"), UserError);
  EXPECT_THROW(parse_batch_dim("input_ids:x"), UserError);
  EXPECT_EQ(parse_batch_dim("input_ids:1").axis, 1);
}

// Every truncation and a few thousand seeded byte corruptions of a real PyTorch export either
// import or raise a UserError — never a crash, a sanitizer report or an internal error.
TEST(BadInput, TruncatedAndCorruptedRealModels) {
  const std::string bytes = read_file(std::string(ALPA_TEST_MODELS_DIR) + "/gpt_test.onnx");
  ASSERT_GT(bytes.size(), 1000u) << "run the generate_test_models fixture first";
  ImportOptions options;
  options.batch = 2;
  ASSERT_EQ(try_import(bytes, options), "");
  int errors = 0;
  for (size_t cut = 0; cut < bytes.size(); cut += std::max<size_t>(1, bytes.size() / 300)) {
    if (!try_import(bytes.substr(0, cut), options).empty()) ++errors;
  }
  EXPECT_GT(errors, 250);
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 400; ++trial) {
    std::string corrupted = bytes;
    for (int k = 0; k < 4; ++k) {
      corrupted[rng() % corrupted.size()] = static_cast<char>(rng() & 0xFF);
    }
    try_import(corrupted, options);
  }
}

}  // namespace
}  // namespace alpa
