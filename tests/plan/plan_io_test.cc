#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <vector>

#include "planner/common/error.h"
#include "planner/plan/plan.h"

namespace alpa {
namespace {

// The plan of tests/plan/example_plan.json (the golden file, reviewed by hand; a ctest validates
// it against schemas/plan.schema.json, and WrittenTextReadByAnotherParser reads the writer's
// output with nlohmann/json instead of our reader).
Plan example_plan() {
  Plan p;
  p.model = "gpt_test.onnx";
  p.cluster = "p3.16xlarge:1";
  p.graph_fingerprint = "graph:5f2d9c0e4b7a1836";
  p.cluster_fingerprint = "cluster:a41c07e3d95b2f60";
  p.global_batch = 8;
  p.microbatches = 2;
  p.optimizer = "adam";
  p.precision = "fp16";
  p.method = "shard";
  p.memory_budget_bytes = int64_t{15} << 30;
  p.mesh_hosts = 1;
  p.mesh_devices_per_host = 4;
  p.logical_d0 = 2;
  p.logical_d1 = 2;
  p.device_ids = {0, 1, 2, 3};
  p.strategies = {{"/h.0/attn/c_attn/MatMul", "S0xS1"},
                  {"/h.0/attn/Softmax", "S0R"},
                  {"/h.0/mlp/c_fc/MatMul", "S0xS1"},
                  {"/lm_head/MatMul", "RxS1"}};
  p.tensors = {{"wte", "S1R"},
               {"h.0.attn.c_attn.weight", "RS1"},
               {"h.0.attn.c_attn.weight.adam_m", "RS1"},
               {"/h.0/attn/c_attn/MatMul_output_0", "S0RS1"},
               {"loss", ""}};
  p.overrides = {{"wte.grad", "S01R"}};
  p.estimate.iteration_time_s = 0.0125;
  p.estimate.throughput_samples_per_s = 640;
  p.estimate.compute_time_s = 0.0091;
  p.estimate.communication_time_s = 0.0034;
  p.estimate.communication_bytes = {{"all_reduce", 1.5e9},
                                    {"all_gather", 12582912},
                                    {"reduce_scatter", 0},
                                    {"all_to_all", 0}};
  p.estimate.memory = {.parameter_bytes = 62208000,
                       .gradient_bytes = 62208000,
                       .optimizer_state_bytes = 124416000,
                       .activation_bytes = 301989888,
                       .peak_bytes = 587202560};
  p.solver = {.nodes_before_merging = 96,
              .nodes_after_merging = 41,
              .ilps_solved = 1,
              .largest_ilp_variables = 388,
              .largest_ilp_constraints = 1207,
              .proven_optimal = true};
  return p;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const std::string kExamplePath = std::string(ALPA_SOURCE_DIR) + "/tests/plan/example_plan.json";

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(PlanIo, GoldenFile) {
  const std::string text = plan_to_json(example_plan());
  EXPECT_EQ(text, read_text(kExamplePath)) << "written:\n" << text;
  EXPECT_EQ(parse_plan(read_text(kExamplePath), "example_plan.json"), example_plan());
}

// The writer's text read by a JSON parser we did not write (nlohmann/json, keeping key order):
// every field holds the plan's value, exactly, in the plan's order.
TEST(PlanIo, WrittenTextReadByAnotherParser) {
  Plan p = example_plan();
  std::swap(p.strategies.front(), p.strategies.back());  // file order is the plan's, not sorted
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(plan_to_json(p));
  EXPECT_EQ(j["format"], "alpa-plan/1");
  EXPECT_EQ(j["model"], p.model);
  EXPECT_EQ(j["cluster"], p.cluster);
  EXPECT_EQ(j["graph_fingerprint"], p.graph_fingerprint);
  EXPECT_EQ(j["cluster_fingerprint"], p.cluster_fingerprint);
  EXPECT_EQ(j["global_batch"], p.global_batch);
  EXPECT_EQ(j["microbatches"], p.microbatches);
  EXPECT_EQ(j["optimizer"], p.optimizer);
  EXPECT_EQ(j["precision"], p.precision);
  EXPECT_EQ(j["method"], p.method);
  EXPECT_EQ(j["memory_budget_bytes"].get<int64_t>(), p.memory_budget_bytes);
  EXPECT_EQ(j["mesh"]["hosts"], p.mesh_hosts);
  EXPECT_EQ(j["mesh"]["devices_per_host"], p.mesh_devices_per_host);
  EXPECT_EQ(j["logical_mesh"], nlohmann::ordered_json::array({p.logical_d0, p.logical_d1}));
  EXPECT_EQ(j["device_ids"].get<std::vector<int64_t>>(), p.device_ids);
  auto pairs = [](const nlohmann::ordered_json& object) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [key, value] : object.items()) out.emplace_back(key, value.get<std::string>());
    return out;
  };
  std::vector<std::pair<std::string, std::string>> strategies, tensors, overrides;
  for (const auto& s : p.strategies) strategies.emplace_back(s.node, s.strategy);
  for (const auto& t : p.tensors) tensors.emplace_back(t.tensor, t.spec);
  for (const auto& t : p.overrides) overrides.emplace_back(t.tensor, t.spec);
  EXPECT_EQ(pairs(j["strategies"]), strategies);
  EXPECT_EQ(pairs(j["tensors"]), tensors);
  EXPECT_EQ(pairs(j["overrides"]), overrides);
  const auto& e = j["estimate"];
  EXPECT_EQ(e["iteration_time_s"].get<double>(), p.estimate.iteration_time_s);
  EXPECT_EQ(e["throughput_samples_per_s"].get<double>(), p.estimate.throughput_samples_per_s);
  EXPECT_EQ(e["compute_time_s"].get<double>(), p.estimate.compute_time_s);
  EXPECT_EQ(e["communication_time_s"].get<double>(), p.estimate.communication_time_s);
  std::map<std::string, double> bytes;
  for (const auto& [kind, v] : e["communication_bytes"].items()) bytes[kind] = v.get<double>();
  EXPECT_EQ(bytes, p.estimate.communication_bytes);
  EXPECT_EQ(e["memory"]["parameter_bytes"], p.estimate.memory.parameter_bytes);
  EXPECT_EQ(e["memory"]["gradient_bytes"], p.estimate.memory.gradient_bytes);
  EXPECT_EQ(e["memory"]["optimizer_state_bytes"], p.estimate.memory.optimizer_state_bytes);
  EXPECT_EQ(e["memory"]["activation_bytes"], p.estimate.memory.activation_bytes);
  EXPECT_EQ(e["memory"]["peak_bytes"], p.estimate.memory.peak_bytes);
  EXPECT_EQ(j["solver"]["nodes_before_merging"], p.solver.nodes_before_merging);
  EXPECT_EQ(j["solver"]["largest_ilp_constraints"], p.solver.largest_ilp_constraints);
  EXPECT_EQ(j["solver"]["proven_optimal"], p.solver.proven_optimal);
}

TEST(PlanIo, RoundTripKeepsOrderAndIsByteIdentical) {
  Plan p = example_plan();
  // Order of the vectors is the file order, not sorted.
  std::swap(p.strategies.front(), p.strategies.back());
  std::swap(p.tensors[0], p.tensors[3]);
  const std::string text = plan_to_json(p);
  const Plan back = parse_plan(text, "plan.json");
  EXPECT_EQ(back, p);
  EXPECT_EQ(back.strategies.front().node, "/lm_head/MatMul");
  EXPECT_EQ(plan_to_json(back), text);
  EXPECT_NE(plan_to_json(example_plan()), text);

  // Empty sections, a zero budget, proven_optimal false.
  Plan bare = example_plan();
  bare.strategies.clear();
  bare.tensors.clear();
  bare.overrides.clear();
  bare.estimate.communication_bytes.clear();
  bare.memory_budget_bytes = 0;
  bare.solver.proven_optimal = false;
  const std::string bare_text = plan_to_json(bare);
  EXPECT_NE(bare_text.find("\n  \"overrides\": {},\n"), std::string::npos) << bare_text;
  EXPECT_EQ(parse_plan(bare_text, "plan.json"), bare);
}

// 45 fixed lines plus one per strategy, tensor, override and collective kind.
TEST(PlanIo, OneEntryPerLine) {
  const Plan p = example_plan();
  const std::string text = plan_to_json(p);
  ASSERT_EQ(text.back(), '\n');
  const auto lines = lines_of(text);
  EXPECT_EQ(lines.size(), 45 + p.strategies.size() + p.tensors.size() + p.overrides.size() +
                              p.estimate.communication_bytes.size());
  auto has_line = [&](const std::string& line) {
    return std::count(lines.begin(), lines.end(), line) == 1;
  };
  EXPECT_TRUE(has_line("    \"/h.0/attn/c_attn/MatMul\": \"S0xS1\","));
  EXPECT_TRUE(has_line("    \"/lm_head/MatMul\": \"RxS1\""));
  EXPECT_TRUE(has_line("    \"loss\": \"\""));
  EXPECT_TRUE(has_line("  \"device_ids\": [0, 1, 2, 3],"));
  EXPECT_TRUE(has_line("  \"logical_mesh\": [2, 2],"));
  EXPECT_TRUE(has_line("      \"all_reduce\": 1.5e9,"));
  EXPECT_TRUE(has_line("      \"peak_bytes\": 587202560"));
  // The text is JSON, with the top-level keys in the documented order.
  const auto j = nlohmann::ordered_json::parse(text);
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "format", "model", "cluster", "graph_fingerprint", "cluster_fingerprint",
                      "global_batch", "microbatches", "optimizer", "precision", "method",
                      "memory_budget_bytes", "mesh", "logical_mesh", "device_ids", "strategies",
                      "tensors", "overrides", "estimate", "solver"}));
  // communication_bytes keys sorted whatever the insertion order.
  std::vector<std::string> kinds;
  for (const auto& [kind, bytes] : j["estimate"]["communication_bytes"].items()) kinds.push_back(kind);
  EXPECT_EQ(kinds, (std::vector<std::string>{"all_gather", "all_reduce", "all_to_all", "reduce_scatter"}));
}

TEST(PlanIo, ShortestNumbers) {
  EXPECT_EQ(format_number(0.1), "0.1");
  EXPECT_EQ(format_number(1e-7), "1e-7");
  EXPECT_EQ(format_number(123456789.125), "123456789.125");
  EXPECT_EQ(format_number(1e300), "1e300");
  EXPECT_EQ(format_number(3.0), "3");
  EXPECT_EQ(format_number(-0.0), "0");
  EXPECT_EQ(format_number(-2.5), "-2.5");
  EXPECT_EQ(format_number(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(format_number(5e-324), "5e-324");
  EXPECT_EQ(format_number(std::numeric_limits<double>::max()), "1.7976931348623157e308");
  EXPECT_THROW(format_number(std::numeric_limits<double>::infinity()), InternalError);
  EXPECT_THROW(format_number(std::nan("")), InternalError);

  // Random bit patterns: the text reads back exactly (strtod and nlohmann) and is no longer
  // than the shortest %.Ng that reads back.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const uint64_t bits = rng();
    double x;
    std::memcpy(&x, &bits, sizeof x);
    if (!std::isfinite(x)) continue;
    const std::string text = format_number(x);
    ASSERT_EQ(std::strtod(text.c_str(), nullptr), x) << text;
    ASSERT_EQ(nlohmann::json::parse(text).get<double>(), x) << text;
    char shortest[40];
    for (int digits = 1; digits <= 17; ++digits) {
      std::snprintf(shortest, sizeof shortest, "%.*g", digits, x);
      if (std::strtod(shortest, nullptr) == x) break;
    }
    ASSERT_LE(text.size(), std::strlen(shortest)) << text << " vs " << shortest;
  }

  Plan p = example_plan();
  p.estimate.iteration_time_s = 1e-7;
  p.estimate.communication_bytes["all_gather"] = 123456789.125;
  EXPECT_EQ(parse_plan(plan_to_json(p), "plan.json"), p);
  p.estimate.compute_time_s = std::nan("");
  EXPECT_THROW(plan_to_json(p), InternalError);
}

TEST(PlanIo, EscapesNames) {
  Plan p = example_plan();
  p.strategies = {{"quote\"back\\slash", "S0xS1"},
                  {"new\nline\ttab\x01", "S0R"},
                  {"caf\xc3\xa9 \xe2\x88\x82", "R"}};
  const std::string text = plan_to_json(p);
  EXPECT_NE(text.find(R"("quote\"back\\slash": "S0xS1")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("new\u000aline\u0009tab\u0001": "S0R")"), std::string::npos) << text;
  EXPECT_NE(text.find("\"caf\xc3\xa9 \xe2\x88\x82\": \"R\""), std::string::npos) << text;
  EXPECT_EQ(parse_plan(text, "plan.json"), p);

  p.strategies = {{"emoji \xf0\x9f\x98\x80", "R"}};
  EXPECT_EQ(parse_plan(plan_to_json(p), "plan.json"), p);
  // Not UTF-8 (the importer must not let such names through): a byte that never starts a
  // character, an overlong form, a surrogate, a truncated sequence.
  for (const char* bad : {"bad\xff", "\xc0\x80", "\xed\xa0\x80", "x\xe2\x88"}) {
    p.strategies = {{bad, "R"}};
    EXPECT_THROW(plan_to_json(p), InternalError) << bad;
  }
}

TEST(PlanIo, DuplicateNamesAreInternalErrors) {
  Plan p = example_plan();
  p.strategies.push_back(p.strategies.front());
  EXPECT_THROW(plan_to_json(p), InternalError);
  p = example_plan();
  p.overrides.push_back(p.overrides.front());
  EXPECT_THROW(plan_to_json(p), InternalError);
}

// --- Reading errors: each names the file and the JSON path. ---------------------------------

std::string error_of(const std::string& text) {
  try {
    parse_plan(text, "plan.json");
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

// The golden text with `from` (which must occur exactly once) replaced by `to`.
std::string edited(const std::string& from, const std::string& to) {
  std::string text = plan_to_json(example_plan());
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  EXPECT_EQ(text.find(from, at + 1), std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

TEST(PlanIoErrors, SyntaxAndFormat) {
  EXPECT_EQ(error_of("{").rfind("plan.json: line 1, column 2: invalid JSON: ", 0), 0u) << error_of("{");
  EXPECT_EQ(error_of("").rfind("plan.json: line 1, column 1: invalid JSON: ", 0), 0u) << error_of("");
  EXPECT_EQ(error_of("[]"), "plan.json: /: expected an object");
  EXPECT_EQ(error_of(edited("\"alpa-plan/1\"", "\"alpa-plan/9\"")),
            "plan.json: /format: unsupported format \"alpa-plan/9\" (expected alpa-plan/1)");
  EXPECT_EQ(error_of(edited("  \"format\": \"alpa-plan/1\",\n", "")), "plan.json: /format: is missing");
  EXPECT_EQ(error_of(edited("\"iteration_time_s\": 0.0125", "\"iteration_time_s\": 1e400")).rfind(
                "plan.json: /: invalid JSON: ", 0),
            0u);
}

TEST(PlanIoErrors, MissingAndUnknownKeys) {
  EXPECT_EQ(error_of(edited("  \"microbatches\": 2,\n", "")), "plan.json: /microbatches: is missing");
  EXPECT_EQ(error_of(edited("    \"ilps_solved\": 1,\n", "")), "plan.json: /solver/ilps_solved: is missing");
  EXPECT_EQ(error_of(edited("\"overrides\": {\n    \"wte.grad\": \"S01R\"\n  },\n", "")),
            "plan.json: /overrides: is missing");
  EXPECT_EQ(error_of(edited("\"model\":", "\"modle\":")).rfind(
                "plan.json: /modle: unknown key (expected one of: format, model, cluster, ", 0),
            0u);
  EXPECT_EQ(error_of(edited("\"peak_bytes\":", "\"peak\":")),
            "plan.json: /estimate/memory/peak: unknown key (expected one of: parameter_bytes, "
            "gradient_bytes, optimizer_state_bytes, activation_bytes, peak_bytes)");
}

TEST(PlanIoErrors, WrongTypesAndRanges) {
  EXPECT_EQ(error_of(edited("\"/h.0/attn/Softmax\": \"S0R\"", "\"/h.0/attn/Softmax\": 3")),
            "plan.json: /strategies/\"/h.0/attn/Softmax\": expected a string");
  EXPECT_EQ(error_of(edited("\"/h.0/attn/Softmax\": \"S0R\"", "\"/h.0/attn/Softmax\": \"\"")),
            "plan.json: /strategies/\"/h.0/attn/Softmax\": must not be empty");
  EXPECT_EQ(error_of(edited("\"/h.0/attn/Softmax\": \"S0R\"", "\"\": \"S0R\"")),
            "plan.json: /strategies/\"\": a name must not be empty");
  EXPECT_EQ(error_of(edited("\"strategies\": {", "\"strategies\": [], \"x\": {")),
            "plan.json: /x: unknown key (expected one of: format, model, cluster, graph_fingerprint, "
            "cluster_fingerprint, global_batch, microbatches, optimizer, precision, method, "
            "memory_budget_bytes, mesh, pipeline, logical_mesh, device_ids, strategies, tensors, overrides, "
            "estimate, solver)");
  EXPECT_EQ(error_of(edited("\"global_batch\": 8", "\"global_batch\": 8.5")),
            "plan.json: /global_batch: expected an integer");
  EXPECT_EQ(error_of(edited("\"global_batch\": 8", "\"global_batch\": \"8\"")),
            "plan.json: /global_batch: expected an integer");
  EXPECT_EQ(error_of(edited("\"global_batch\": 8", "\"global_batch\": 18446744073709551615")),
            "plan.json: /global_batch: integer too large");
  EXPECT_EQ(error_of(edited("\"global_batch\": 8", "\"global_batch\": 0")),
            "plan.json: /global_batch: expected an integer >= 1, got 0");
  EXPECT_EQ(error_of(edited("\"ilps_solved\": 1", "\"ilps_solved\": -1")),
            "plan.json: /solver/ilps_solved: expected an integer >= 0, got -1");
  EXPECT_EQ(error_of(edited("\"activation_bytes\": 301989888", "\"activation_bytes\": -8")),
            "plan.json: /estimate/memory/activation_bytes: expected an integer >= 0, got -8");
  EXPECT_EQ(error_of(edited("\"iteration_time_s\": 0.0125", "\"iteration_time_s\": -0.5")),
            "plan.json: /estimate/iteration_time_s: expected a number >= 0, got -0.5");
  EXPECT_EQ(error_of(edited("\"all_to_all\": 0", "\"all_to_all\": null")),
            "plan.json: /estimate/communication_bytes/\"all_to_all\": expected a number");
  EXPECT_EQ(error_of(edited("\"proven_optimal\": true", "\"proven_optimal\": 1")),
            "plan.json: /solver/proven_optimal: expected true or false");
  EXPECT_EQ(error_of(edited("\"solver\": {", "\"solver\": [], \"solver2\": {")).rfind(
                "plan.json: /solver2: unknown key", 0),
            0u);
  EXPECT_EQ(error_of(edited("\"mesh\": {\"hosts\": 1, \"devices_per_host\": 4}", "\"mesh\": 4")),
            "plan.json: /mesh: expected an object");
  EXPECT_EQ(error_of(edited("\"optimizer\": \"adam\"", "\"optimizer\": \"adma\"")),
            "plan.json: /optimizer: unknown value \"adma\" (expected one of: sgd, sgd-momentum, adam, adamw)");
  EXPECT_EQ(error_of(edited("\"method\": \"shard\"", "\"method\": \"pipeline\"")),
            "plan.json: /method: unknown value \"pipeline\" (expected one of: shard, data, zero2, zero3, auto, megatron, pp-dp)");
}

TEST(PlanIoErrors, MeshAndDevices) {
  EXPECT_EQ(error_of(edited("[2, 2]", "[4]")),
            "plan.json: /logical_mesh: expected [d0, d1], two positive integers");
  EXPECT_EQ(error_of(edited("[2, 2]", "{}")), "plan.json: /logical_mesh: expected an array");
  EXPECT_EQ(error_of(edited("[2, 2]", "[2, 0]")),
            "plan.json: /logical_mesh/1: expected an integer >= 1, got 0");
  EXPECT_EQ(error_of(edited("[2, 2]", "[4, 2]")),
            "plan.json: /logical_mesh: 4 x 2 does not have the mesh's 1 x 4 devices");
  EXPECT_EQ(error_of(edited("[2, 2]", "[4611686018427387904, 4]")),
            "plan.json: /logical_mesh: 4611686018427387904 x 4 does not have the mesh's 1 x 4 devices");
  EXPECT_EQ(error_of(edited("[0, 1, 2, 3]", "[0, 1, 2]")),
            "plan.json: /device_ids: has 3 entries, expected d0 * d1 = 4");
  EXPECT_EQ(error_of(edited("[0, 1, 2, 3]", "[0, 1, 1, 3]")),
            "plan.json: /device_ids/2: device 1 is listed twice");
  EXPECT_EQ(error_of(edited("[0, 1, 2, 3]", "[0, 1, -2, 3]")),
            "plan.json: /device_ids/2: expected an integer >= 0, got -2");
}

TEST(PlanIoErrors, SpecSyntax) {
  for (const char* bad : {"S0S0", "S01S1", "S1S01", "S2R", "Rx", "s0", "S"}) {
    EXPECT_EQ(error_of(edited("\"wte\": \"S1R\"", std::string("\"wte\": \"") + bad + "\"")),
              std::string("plan.json: /tensors/\"wte\": \"") + bad +
                  "\" is not a sharding spec (R, S0, S1 or S01 per dim, each mesh axis at most once)");
  }
  EXPECT_EQ(error_of(edited("\"wte.grad\": \"S01R\"", "\"wte.grad\": \"RS0S0\"")).rfind(
                "plan.json: /overrides/\"wte.grad\": \"RS0S0\" is not a sharding spec", 0),
            0u);
  for (const char* good : {"", "R", "S0S1", "S1S0", "S01", "RRS01R", "S0RS1"})
    EXPECT_EQ(error_of(edited("\"wte\": \"S1R\"", std::string("\"wte\": \"") + good + "\"")), "(no error)");
}

TEST(PlanIoErrors, DuplicateKeys) {
  EXPECT_EQ(error_of(edited("\"/h.0/attn/Softmax\": \"S0R\"",
                            "\"/h.0/attn/Softmax\": \"S0R\", \"/h.0/attn/Softmax\": \"R\"")),
            "plan.json: /strategies/\"/h.0/attn/Softmax\": key appears twice");
  EXPECT_EQ(error_of(edited("\"wte\": \"S1R\"", "\"wte\": \"S1R\", \"wte\": \"S1R\"")),
            "plan.json: /tensors/\"wte\": key appears twice");
  EXPECT_EQ(error_of(edited("\"all_to_all\": 0", "\"all_to_all\": 0, \"all_to_all\": 1")),
            "plan.json: /estimate/communication_bytes/\"all_to_all\": key appears twice");
  EXPECT_EQ(error_of(edited("\"hosts\": 1", "\"hosts\": 1, \"hosts\": 1")),
            "plan.json: /mesh/hosts: key appears twice");
  EXPECT_EQ(error_of(edited("\"model\": ", "\"model\": \"a\", \"model\": ")),
            "plan.json: /model: key appears twice");
  // Inside an array (not a plan shape, but the path still points at it).
  EXPECT_EQ(error_of(edited("[0, 1, 2, 3]", "[0, {\"a\": 1, \"a\": 2}]")),
            "plan.json: /device_ids/1/a: key appears twice");
}

}  // namespace
}  // namespace alpa
