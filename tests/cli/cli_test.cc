// The alpa-plan binary on good and bad inputs: exit codes, the one-line error, JSON output.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Result {
  int exit_code = -1;
  std::string out, err;
};

Result run_binary(const std::string& binary, const std::string& args) {
  const std::string err_file = ::testing::TempDir() + "/alpa_cli_stderr.txt";
  const std::string cmd = binary + " " + args + " 2>" + err_file;
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

Result run(const std::string& args) { return run_binary(ALPA_PLAN_BINARY, args); }
Result run_train(const std::string& args) { return run_binary(ALPA_RUN_BINARY, args); }

std::string model(const std::string& name) { return std::string(ALPA_TEST_MODELS_DIR) + "/" + name; }

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

void expect_user_error(const Result& r, const std::string& fragment,
                       const std::string& prog = "alpa-plan") {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind(prog + ": error: ", 0), 0u) << r.err;
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

// ---- alpa-run: bad training data ------------------------------------------------------------

// Writes a .npy with the given descr and shape (zero data) into `dir`.
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               size_t elem_bytes) {
  std::string dims;
  size_t n = 1;
  for (int64_t d : shape) {
    dims += std::to_string(d) + ",";
    n *= static_cast<size_t>(d);
  }
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  header += std::string(63 - (10 + header.size()) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(header.size() & 0xFF));
  out.put(static_cast<char>(header.size() >> 8));
  out << header << std::string(n * elem_bytes, '\0');
}

class TrainData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/alpa_run_data";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  std::string args() const {
    return "--model " + model("gpt_test.onnx") + " --batch 2 --steps 1 --data " + dir_;
  }
  std::string dir_;
};

TEST_F(TrainData, MissingFile) {
  write_npy(dir_ + "/input_ids.npy", "<i8", {4, 16}, 8);
  expect_user_error(run_train(args()), "labels.npy: input 'labels': data file is missing", "alpa-run");
}

TEST_F(TrainData, WrongDtype) {
  write_npy(dir_ + "/input_ids.npy", "<f4", {4, 16}, 4);
  write_npy(dir_ + "/labels.npy", "<i8", {4, 16}, 8);
  expect_user_error(run_train(args()), "input_ids.npy: dtype: float32 but input 'input_ids' is int64", "alpa-run");
}

TEST_F(TrainData, WrongShapeAndTooFewDims) {
  write_npy(dir_ + "/input_ids.npy", "<i8", {4, 15}, 8);
  write_npy(dir_ + "/labels.npy", "<i8", {4, 16}, 8);
  expect_user_error(run_train(args()), "input_ids.npy: shape: [4,15] does not match input 'input_ids' [2,16]", "alpa-run");
  write_npy(dir_ + "/input_ids.npy", "<i8", {64}, 8);
  expect_user_error(run_train(args()), "input_ids.npy: shape: [64] must have 2 dims", "alpa-run");
}

TEST_F(TrainData, NotNpy) {
  std::ofstream(dir_ + "/input_ids.npy") << "hello";
  write_npy(dir_ + "/labels.npy", "<i8", {4, 16}, 8);
  expect_user_error(run_train(args()), "input_ids.npy: header: is not a NumPy .npy file", "alpa-run");
}

TEST(TrainRun, SyntheticDataWritesMetricsAndParams) {
  const std::string dir = ::testing::TempDir() + "/alpa_run_out";
  std::filesystem::remove_all(dir);
  const Result r = run_train("--model " + model("gpt_test.onnx") + " --batch 2 --steps 3 --metrics " + dir +
                             ".jsonl --save-params " + dir + " --optimizer adam --lr 0.001");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream metrics(dir + ".jsonl");
  std::string line;
  int steps = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["step"], ++steps);
    for (const char* key : {"loss", "step_ms", "samples_per_s", "peak_bytes"}) EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(steps, 3);
  EXPECT_TRUE(std::filesystem::exists(dir + "/wte.weight.npy"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/blocks.0.attn.mask.npy"));  // buffers too
  EXPECT_EQ(run_train("--model " + model("gpt_test.onnx") + " --batch 2 --optimizer rmsprop").exit_code, 2);
  EXPECT_EQ(run_train("--model " + model("gpt_test.onnx") + " --batch 2 --microbatches 3").exit_code, 2);
  expect_user_error(run_train("--model " + model("gpt_test.onnx") + " --batch 2 --precision fp16"),
                    "--precision: fp16: the CPU backend runs fp32 only", "alpa-run");
  expect_user_error(run_train("--model " + model("gpt_test.onnx") + " --batch 2 --steps 1 --dump-tensors '('"),
                    "--dump-tensors: (: not a regular expression", "alpa-run");
  // --dump-tensors writes each matching tensor as it is made, per step and microbatch.
  const std::string dump = ::testing::TempDir() + "alpa_cli_dump";
  std::filesystem::remove_all(dump);
  ASSERT_EQ(run_train("--model " + model("gpt_test.onnx") + " --batch 2 --steps 2 --microbatches 2 --dump-tensors '.*ln_f.*output_0'"
                      " --dump-dir " + dump).exit_code, 0);
  for (const char* f : {"s1_m0", "s1_m1", "s2_m0", "s2_m1"}) {
    EXPECT_TRUE(std::filesystem::exists(dump + "/rank0/" + f + "__ln_f_LayerNormalization_output_0.npy")) << f;
  }
}

}  // namespace
