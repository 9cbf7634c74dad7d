// The paper's largest models, written shape-only: they import quickly, and inspect's counts
// agree with published formulas we did not write (Megatron-LM's FLOPs per token).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "planner/inspect/inspect.h"

namespace alpa {
namespace {

std::string generate(const std::string& family, const std::string& size) {
  const std::string out = std::string(ALPA_TEST_MODELS_DIR) + "/" + family + "_" + size + ".onnx";
  if (!std::filesystem::exists(out)) {
    const std::string cmd = "/usr/bin/python3 " + std::string(ALPA_SOURCE_DIR) +
                            "/scripts/models/generate.py " + family + " " + size + " -o " + out +
                            " > /dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  return out;
}

// GPT-3 39B (l = 48, h = 8192, s = 1024, V = 51200, batch 1024).
TEST(PaperModels, Gpt39BMatchesMegatronFlopsPerToken) {
  const ImportedModel m = import_onnx_file(generate("gpt", "39B"), {});
  const InspectReport r = inspect_model(m);
  const double l = 48, h = 8192, s = 1024, V = 51200;
  EXPECT_TRUE(m.shape_only);
  EXPECT_EQ(r.batch, 1024);
  EXPECT_EQ(r.tokens_per_sample, 1024);
  EXPECT_NEAR(static_cast<double>(r.parameter_count) / 39e9, 1.0, 0.02);
  const double tokens = static_cast<double>(r.batch) * s;
  // Megatron-LM (Narayanan et al. 2021): 72·l·h²·(1 + s/6h + V/12lh) FLOPs per token without
  // recomputation, 96·l·h²·(1 + s/6h + V/16lh) with full recomputation.
  const double megatron = 72 * l * h * h * (1 + s / (6 * h) + V / (12 * l * h));
  const double megatron_remat = 96 * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
  EXPECT_NEAR(r.training_flops / tokens / megatron, 1.0, 0.01);
  EXPECT_NEAR(r.training_with_recompute_flops / tokens / megatron_remat, 1.0, 0.01);
  ASSERT_TRUE(r.repeated.has_value());
  EXPECT_EQ(r.repeated->repeats, 48);
}

TEST(PaperModels, LargestMoeAndWideResNetImport) {
  for (const auto& [family, size] : {std::pair{"moe", "70B"}, std::pair{"wresnet", "13B"}}) {
    const std::string path = generate(family, size);
    const ImportedModel m = import_onnx_file(path, {});
    std::ifstream meta_in(path.substr(0, path.size() - 5) + ".json");
    ASSERT_TRUE(meta_in.good());
    std::string text((std::istreambuf_iterator<char>(meta_in)), {});
    const auto pos = text.find("\"param_count\"");
    ASSERT_NE(pos, std::string::npos);
    const int64_t expected = std::stoll(text.substr(text.find(':', pos) + 1));
    EXPECT_EQ(inspect_model(m).parameter_count, expected) << family << " " << size;
  }
}

}  // namespace
}  // namespace alpa
