// The alpa-plan binary on good and bad inputs: exit codes, the one-line error, JSON output.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Result {
  int exit_code = -1;
  std::string out, err;
};

Result run(const std::string& args) {
  const std::string err_file = ::testing::TempDir() + "/alpa_cli_stderr.txt";
  const std::string cmd = std::string(ALPA_PLAN_BINARY) + " " + args + " 2>" + err_file;
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  return r;
}

std::string model(const std::string& name) { return std::string(ALPA_TEST_MODELS_DIR) + "/" + name; }

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

void expect_user_error(const Result& r, const std::string& fragment) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("alpa-plan: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(fragment), std::string::npos) << "stderr: " << r.err;
}

TEST(Cli, TruncatedFile) {
  expect_user_error(run("inspect " + model("truncated.onnx") + " --batch 2"),
                    "truncated.onnx: file: is not a valid ONNX model");
}

TEST(Cli, NotOnnx) {
  expect_user_error(run("inspect " + model("not_onnx.onnx")), "not_onnx.onnx: file: is not");
}

TEST(Cli, MissingFile) {
  expect_user_error(run("inspect /nonexistent/model.onnx"), "/nonexistent/model.onnx: file: cannot be opened");
}

TEST(Cli, UnsupportedOpsListed) {
  const Result r = run("inspect " + model("unsupported.onnx"));
  expect_user_error(r, "unsupported.onnx: graph: 2 unsupported operator types: ");
  EXPECT_NE(r.err.find("Det (first at node '"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Hardmax (first at node '"), std::string::npos) << r.err;
}

TEST(Cli, UnboundDynamicDim) {
  expect_user_error(run("inspect " + model("dynamic_unbound.onnx") + " --batch 4"),
                    "dynamic_unbound.onnx: input '");
  const Result r = run("inspect " + model("dynamic_unbound.onnx") + " --batch 4");
  EXPECT_NE(r.err.find("'seq' is dynamic and --batch does not bind it"), std::string::npos) << r.err;
}

TEST(Cli, ShapeMismatch) {
  const Result r = run("inspect " + model("shape_mismatch.onnx"));
  expect_user_error(r, "shape_mismatch.onnx: node '");
  EXPECT_NE(r.err.find("(MatMul): contraction dims differ: [4,8] x [5,3]"), std::string::npos) << r.err;
}

TEST(Cli, SymbolicBatchNeedsFlag) {
  expect_user_error(run("inspect " + model("gpt_test.onnx")), "is symbolic; pass --batch N");
}

TEST(Cli, StaticBatchReshapeCannotTakeAnotherBatch) {
  const Result ok = run("inspect " + model("gpt_test_static.onnx"));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  const Result r = run("inspect " + model("gpt_test_static.onnx") + " --batch 3");
  expect_user_error(r, "(Reshape): ");
  EXPECT_NE(r.err.find("cannot take --batch 3"), std::string::npos) << r.err;
}

TEST(Cli, BadFlags) {
  EXPECT_EQ(run("inspect " + model("gpt_test.onnx") + " --batch -3").exit_code, 2);
  EXPECT_EQ(run("inspect " + model("gpt_test.onnx") + " --batch 2 --batch-dim nope").exit_code, 2);
  expect_user_error(run("inspect " + model("gpt_test.onnx") + " --batch 2 --batch-dim nope:0"),
                    "--batch-dim: no graph input is named 'nope'");
  expect_user_error(run("inspect " + model("gpt_test.onnx") + " --batch 2 --frozen '('"),
                    "--trainable/--frozen: regular expression:");
  EXPECT_EQ(run("frobnicate").exit_code, 2);
}

TEST(Cli, InspectJson) {
  const Result r = run("inspect " + model("gpt_test.onnx") + " --batch 4 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "alpa-inspect/1");
  EXPECT_EQ(j["model"]["batch"], 4);
  EXPECT_GT(j["parameters"]["count"].get<int64_t>(), 0);
  EXPECT_GT(j["flops"]["per_token"]["training_flops"].get<double>(), 0);
  EXPECT_TRUE(j["repeated_block"].is_object());
}

}  // namespace
