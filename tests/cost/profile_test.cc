#include "planner/cost/profile.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "planner/common/error.h"

namespace alpa {
namespace {

const std::string kExamplePath = std::string(ALPA_SOURCE_DIR) + "/profiles/timings/example-profile.json";

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A valid profile with the given kernels and collectives arrays (JSON text).
std::string doc(const std::string& kernels, const std::string& collectives = "[]") {
  return R"({"format": "alpa-profile/1", "cluster": "t", "device_kind": "d", "kernels": )" + kernels +
         R"(, "collectives": )" + collectives + "}";
}

std::string kernel(const std::string& op, const std::string& dtype, const std::string& points) {
  return R"({"op": ")" + op + R"(", "dtype": ")" + dtype + R"(", "points": )" + points + "}";
}

std::string error_of(const std::string& text) {
  try {
    parse_profile(text, "p.json");
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Profile, ExampleParses) {
  const Profile p = load_profile_file(kExamplePath);
  EXPECT_EQ(p.cluster, "example");
  EXPECT_EQ(p.device_kind, "V100-SXM2-16GB");
  ASSERT_EQ(p.kernels.size(), 3u);
  EXPECT_EQ(p.kernels[0].op, OpKind::kMatMul);
  EXPECT_EQ(p.kernels[0].dtype, DType::kFloat16);
  EXPECT_EQ(p.kernels[0].points.size(), 4u);
  EXPECT_EQ(p.kernels[2].op, OpKind::kAdamUpdate);  // internal op names are accepted
  ASSERT_EQ(p.collectives.size(), 3u);
  EXPECT_EQ(p.collectives[1].kind, Collective::kAllReduce);
  EXPECT_EQ(p.collectives[1].group_size, 16);
  EXPECT_TRUE(p.collectives[1].crosses_hosts);
  EXPECT_EQ(p.collectives[2].kind, Collective::kAllGather);
  EXPECT_EQ(parse_profile(read_text(kExamplePath), "again"), p);
}

TEST(Profile, KernelInterpolation) {
  const Profile p = load_profile_file(kExamplePath);
  // MatMul float16: (1e9, 2e-5), (1e10, 1.2e-4), (1e11, 1e-3), (1e12, 9.5e-3).
  auto t = [&](double flops) { return *kernel_time(p, OpKind::kMatMul, DType::kFloat16, flops); };
  EXPECT_DOUBLE_EQ(t(1e9), 2e-5);
  EXPECT_DOUBLE_EQ(t(1e11), 1e-3);
  EXPECT_DOUBLE_EQ(t(1e12), 9.5e-3);
  // Halfway between 1e9 and 1e10: 2e-5 + 0.5 * (1.2e-4 - 2e-5) = 7e-5.
  EXPECT_NEAR(t(5.5e9), 7e-5, 1e-15);
  // Below the first point, proportional: 5e8 / 1e9 * 2e-5 = 1e-5.
  EXPECT_NEAR(t(5e8), 1e-5, 1e-15);
  EXPECT_EQ(t(0), 0);
  // Beyond the last point, through the last two: 9.5e-3 + (8.5e-3 / 9e11) * 1e12 = 0.0189444...
  EXPECT_NEAR(t(2e12), 9.5e-3 + 8.5e-3 * 10.0 / 9.0, 1e-12);
  // alpa.AdamUpdate float32: (1e6, 1.5e-5), (1e8, 6e-4); at 5.05e7 (halfway): 3.075e-4.
  EXPECT_NEAR(*kernel_time(p, OpKind::kAdamUpdate, DType::kFloat32, 5.05e7), 3.075e-4, 1e-15);
}

TEST(Profile, CollectiveInterpolation) {
  const Profile p = load_profile_file(kExamplePath);
  const double mib = 1 << 20;
  // all_reduce, 8 devices in a host: (1 MiB, 6e-5), (16 MiB, 2.6e-4), (256 MiB, 3.4e-3).
  // At 8 MiB: 6e-5 + 2e-4 * 7/15 = 1.5333e-4.
  EXPECT_NEAR(*collective_time(p, Collective::kAllReduce, 8, false, 8 * mib), 6e-5 + 2e-4 * 7.0 / 15.0, 1e-15);
  EXPECT_NEAR(*collective_time(p, Collective::kAllReduce, 8, false, 0.5 * mib), 3e-5, 1e-15);
  // all_reduce, 16 devices across hosts: (1 MiB, 9e-4), (256 MiB, 0.19). At 512 MiB:
  // 0.19 + (0.1891 / 255 MiB) * 256 MiB = 0.19 + 0.1891 * 256/255.
  EXPECT_NEAR(*collective_time(p, Collective::kAllReduce, 16, true, 512 * mib), 0.19 + 0.1891 * 256.0 / 255.0, 1e-12);
  // all_gather, 4 devices: at its first point exactly.
  EXPECT_DOUBLE_EQ(*collective_time(p, Collective::kAllGather, 4, false, mib), 3e-5);
}

TEST(Profile, MissingTablesGiveNullopt) {
  const Profile p = load_profile_file(kExamplePath);
  EXPECT_FALSE(kernel_time(p, OpKind::kMatMul, DType::kBFloat16, 1e9));
  EXPECT_FALSE(kernel_time(p, OpKind::kRelu, DType::kFloat32, 1e9));
  EXPECT_FALSE(collective_time(p, Collective::kAllReduce, 8, true, 1e6));  // host crossing differs
  EXPECT_FALSE(collective_time(p, Collective::kAllReduce, 4, false, 1e6));  // group size differs
  EXPECT_FALSE(collective_time(p, Collective::kReduceScatter, 8, false, 1e6));
  EXPECT_FALSE(kernel_time(Profile{}, OpKind::kMatMul, DType::kFloat32, 1e9));
}

TEST(Profile, TableEnds) {
  // One point: proportional everywhere. 3 / 2 * 4 = 6.
  Profile one = parse_profile(doc("[" + kernel("Gemm", "float32", "[[2, 4]]") + "]"), "x");
  EXPECT_DOUBLE_EQ(*kernel_time(one, OpKind::kGemm, DType::kFloat32, 3), 6);
  EXPECT_DOUBLE_EQ(*kernel_time(one, OpKind::kGemm, DType::kFloat32, 1), 2);
  // Falling last segment (noisy measurements): beyond the end the time holds at the last value.
  Profile fall = parse_profile(doc("[" + kernel("Gemm", "float32", "[[1, 2], [2, 1]]") + "]"), "x");
  EXPECT_DOUBLE_EQ(*kernel_time(fall, OpKind::kGemm, DType::kFloat32, 1.5), 1.5);
  EXPECT_DOUBLE_EQ(*kernel_time(fall, OpKind::kGemm, DType::kFloat32, 10), 1);
}

TEST(Profile, ErrorsNameFileAndPath) {
  const std::string ok_points = "[[1, 1], [2, 2]]";
  const std::string mm = kernel("MatMul", "float32", ok_points);
  auto coll = [&](const std::string& fields) { return doc("[]", "[{" + fields + "}]"); };
  const std::string ar = R"("kind": "all_reduce", "crosses_hosts": false, "points": [[1, 1]], )";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"format\": ", "p.json: file: is not valid JSON"},
      {"[1, 2]", "p.json: file: must be an object"},
      {"{\"format\": \"alpa-profile/1\", \"x\": 1e400}", "p.json: file: is not valid JSON"},
      {R"({"cluster": "t", "device_kind": "d", "kernels": [], "collectives": []})", "p.json: format: is missing"},
      {R"({"format": "alpa-cluster/1", "cluster": "t", "device_kind": "d", "kernels": [], "collectives": []})",
       "p.json: format: must be \"alpa-profile/1\""},
      {R"({"format": "alpa-profile/1", "cluster": 3, "device_kind": "d", "kernels": [], "collectives": []})",
       "p.json: cluster: must be a string"},
      {R"({"format": "alpa-profile/1", "cluster": "t", "kernels": [], "collectives": []})", "p.json: device_kind: is missing"},
      {R"({"format": "alpa-profile/1", "cluster": "t", "device_kind": "d", "kernels": [], "collectives": [], "notes": ""})",
       "p.json: notes: is not a known key"},
      {doc("{}"), "p.json: kernels: must be an array"},
      {doc("[]", "null"), "p.json: collectives: must be an array"},
      {doc("[3]"), "p.json: kernels[0]: must be an object"},
      {doc("[" + mm + ", " + kernel("Softmax", "float16", ok_points) + ", {\"op\": \"Relu\"}]"), "p.json: kernels[2].dtype: is missing"},
      {doc(R"([{"op": "Relu", "dtype": "float32", "points": [[1, 1]], "speed": 2}])"), "p.json: kernels[0].speed: is not a known key"},
      {doc("[" + kernel("FooBar", "float32", ok_points) + "]"), "p.json: kernels[0].op: unknown op 'FooBar'"},
      {doc("[" + kernel("alpa.Nope", "float32", ok_points) + "]"), "p.json: kernels[0].op: unknown op 'alpa.Nope'"},
      {doc("[" + kernel("MatMul", "int64", ok_points) + "]"), "p.json: kernels[0].dtype: unknown dtype 'int64'"},
      {doc("[" + kernel("MatMul", "float32", "{}") + "]"), "p.json: kernels[0].points: must be an array"},
      {doc("[" + kernel("MatMul", "float32", "[]") + "]"), "p.json: kernels[0].points: must hold at least one"},
      {doc("[" + kernel("MatMul", "float32", "[[1, 1], [1, 2]]") + "]"),
       "p.json: kernels[0].points[1]: size must be strictly increasing"},
      {doc("[" + kernel("MatMul", "float32", "[[2, 1], [1, 2]]") + "]"),
       "p.json: kernels[0].points[1]: size must be strictly increasing"},
      {doc("[" + kernel("MatMul", "float32", "[[1, 0]]") + "]"), "p.json: kernels[0].points[0]: seconds must be positive"},
      {doc("[" + kernel("MatMul", "float32", "[[-1, 1]]") + "]"), "p.json: kernels[0].points[0]: size must be positive"},
      {doc("[" + kernel("MatMul", "float32", "[[1, 1, 1]]") + "]"), "p.json: kernels[0].points[0]: must be a [size, seconds] pair"},
      {doc("[" + kernel("MatMul", "float32", "[[1, \"1\"]]") + "]"), "p.json: kernels[0].points[0]: must be a [size, seconds] pair"},
      {doc("[" + kernel("MatMul", "float32", "[5]") + "]"), "p.json: kernels[0].points[0]: must be a [size, seconds] pair"},
      {doc("[" + mm + ", " + mm + "]"), "p.json: kernels[1]: repeats the table for MatMul float32"},
      {coll(ar + R"("group_size": 1)"), "p.json: collectives[0].group_size: must be at least 2"},
      {coll(ar + R"("group_size": 2.5)"), "p.json: collectives[0].group_size: must be an integer"},
      {coll(ar + R"("group_size": 18446744073709551615)"), "p.json: collectives[0].group_size: is too large"},
      {coll(R"("kind": "all_reduce", "crosses_hosts": false, "points": [[1, 1]])"),
       "p.json: collectives[0].group_size: is missing"},
      {coll(R"("kind": "broadcast", "group_size": 2, "crosses_hosts": false, "points": [[1, 1]])"),
       "p.json: collectives[0].kind: unknown collective 'broadcast'"},
      {coll(R"("kind": "all_gather", "group_size": 2, "crosses_hosts": "yes", "points": [[1, 1]])"),
       "p.json: collectives[0].crosses_hosts: must be true or false"},
      {coll(R"("kind": "all_gather", "group_size": 2, "crosses_hosts": true, "points": [[2, 1], [2, 3]])"),
       "p.json: collectives[0].points[1]: bytes must be strictly increasing"},
      {doc("[]", R"([{"kind": "all_to_all", "group_size": 4, "crosses_hosts": true, "points": [[1, 1]]},
                     {"kind": "all_to_all", "group_size": 4, "crosses_hosts": true, "points": [[2, 1]]}])"),
       "p.json: collectives[1]: repeats the table for all_to_all over 4 devices across hosts"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string got = error_of(text);
    EXPECT_EQ(got.rfind(expected, 0), 0u) << "input: " << text << "\n got: " << got << "\n expected prefix: " << expected;
  }
  // Bad JSON says where.
  EXPECT_NE(error_of("{\n  \"format\": ,\n}").find("line 2, column"), std::string::npos) << error_of("{\n  \"format\": ,\n}");
  // Internal and ONNX names both resolve; a near miss of an internal name does not.
  EXPECT_EQ(parse_profile(doc("[" + kernel("alpa.ReluGrad", "bfloat16", ok_points) + "]"), "x").kernels[0].op,
            OpKind::kReluGrad);
  EXPECT_NE(error_of(doc("[" + kernel("ReluGrad", "float32", ok_points) + "]")), "(no error)");
}

// What alpa-plan profile writes reads back equal: every op kind (ONNX and internal names), the
// measurement notes, numbers exactly; and the writer's text is the schema's (profile_schema_*).
TEST(Profile, WrittenProfileReadsBackEqual) {
  Profile p;
  p.cluster = "local";
  p.device_kind = "cpu";
  p.measured = {{"ranks", "2"}, {"blas_threads", "1"}};
  for (int i = 0; i < kNumOpKinds; ++i) {
    const auto op = static_cast<OpKind>(i);
    p.kernels.push_back({op, DType::kFloat32, {{1000, 1.5e-6}, {2048.5, 3.0000000000000004e-6}}});
  }
  p.collectives.push_back({Collective::kAllToAll, 2, false, {{1024, 1e-6}}});
  p.collectives.push_back({Collective::kReduceScatter, 4, true, {{1024, 1e-6}, {4096, 0.1}}});
  const std::string text = profile_to_json(p);
  EXPECT_EQ(parse_profile(text, "p.json"), p) << text;
  EXPECT_EQ(profile_to_json(parse_profile(text, "p.json")), text);
  Profile bare;
  bare.cluster = "c";
  bare.device_kind = "d";
  EXPECT_EQ(parse_profile(profile_to_json(bare), "p.json"), bare);
}

TEST(Profile, MeasuredNotesAreStrings) {
  const std::string head = R"({"format": "alpa-profile/1", "cluster": "t", "device_kind": "d", "kernels": [], "collectives": [], )";
  EXPECT_EQ(error_of(head + R"("measured": [1]})"), "p.json: measured: must be an object of strings");
  EXPECT_EQ(error_of(head + R"("measured": {"ranks": 2}})"), "p.json: measured.ranks: must be a string");
  EXPECT_EQ(parse_profile(head + R"("measured": {"ranks": "2"}})", "p.json").measured.at("ranks"), "2");
}

// A kernel's size: its FLOPs, or where it counts none (a copy) the bytes it moves.
TEST(Profile, KernelSizeIsFlopsElseBytes) {
  EXPECT_EQ(kernel_size(OpCount{.flops = 10, .bytes_read = 4, .bytes_written = 4}), 10);
  EXPECT_EQ(kernel_size(OpCount{.flops = 0, .bytes_read = 4, .bytes_written = 8}), 12);
  EXPECT_EQ(kernel_size(OpCount{}), 0);
}

TEST(Profile, MissingFileNamesThePath) {
  try {
    load_profile_file("/nonexistent/profile.json");
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/nonexistent/profile.json: file: cannot be opened", 0), 0u) << e.what();
  }
}

// Truncations and random byte edits of the example either parse or raise UserError; nothing
// else escapes and nothing crashes.
TEST(Profile, MangledInputNeverCrashes) {
  const std::string text = read_text(kExamplePath);
  ASSERT_FALSE(text.empty());
  auto survives = [](const std::string& mangled) {
    try {
      const Profile p = parse_profile(mangled, "m.json");
      for (const KernelTable& k : p.kernels) (void)kernel_time(p, k.op, k.dtype, 1e9);
    } catch (const UserError&) {
    }
  };
  for (size_t n = 0; n < text.size(); ++n) survives(text.substr(0, n));
  std::mt19937 rng(20240611);
  const std::string alphabet = "{}[]\",:-+.eE0123456789 truefalsnul\\\n\x01\xff";
  for (int trial = 0; trial < 3000; ++trial) {
    std::string m = text;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % m.size();
      switch (rng() % 3) {
        case 0: m[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: m.erase(at, 1 + rng() % 8); break;
        default: m.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
      }
      if (m.empty()) m = "{";
    }
    survives(m);
  }
}

}  // namespace
}  // namespace alpa
