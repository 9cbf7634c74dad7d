// Pipeline programs: the stage split of a real plan (GPT with a tied embedding, planned by
// alpa-plan into 4 and 2 stages) against the plan's own transfers, and the emitted instruction
// lists executed by an event simulation: every message matched, the clock count of the schedule,
// and the microbatches each stage holds (paper item 10: stage i of S holds at most S − i under
// 1F1B).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "planner/common/error.h"
#include "planner/inter_op/pipeline.h"
#include "planner/intra_op/search.h"
#include "planner/onnx/import.h"
#include "planner/spmd/pipeline_program.h"

namespace alpa {
namespace {

std::string models() { return ALPA_TEST_MODELS_DIR; }

Plan make_plan(const std::string& model, const std::string& args, const std::string& out) {
  const std::string cmd = std::string(ALPA_PLAN_BINARY) + " search " + models() + "/" + model + " " + args + " -o " + out +
                          " > /dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  std::stringstream s;
  s << in.rdbuf();
  return parse_plan(s.str(), out);
}

// Executes every stage's list: compute takes one tick, a receive waits for its send, sends and
// updates take none. Returns the makespan; fills the most microbatches each stage holds.
int64_t simulate(const PipelineSplit& split, const std::vector<std::vector<PipeInstruction>>& lists,
                 std::vector<int64_t>* held) {
  const int S = split.stages;
  std::vector<size_t> pos(static_cast<size_t>(S), 0);
  std::vector<int64_t> clock(static_cast<size_t>(S), 0), live(static_cast<size_t>(S), 0);
  held->assign(static_cast<size_t>(S), 0);
  std::map<std::pair<int, int64_t>, int64_t> sent;  // (boundary, microbatch) → time
  std::map<std::pair<int, int64_t>, int> received;
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < S; ++s) {
      auto& p = pos[static_cast<size_t>(s)];
      while (p < lists[static_cast<size_t>(s)].size()) {
        const PipeInstruction& in = lists[static_cast<size_t>(s)][p];
        int64_t& now = clock[static_cast<size_t>(s)];
        if (in.op == PipeOp::kRecvActivation || in.op == PipeOp::kRecvGradient) {
          auto it = sent.find({in.index, in.microbatch});
          if (it == sent.end()) break;
          now = std::max(now, it->second);
          ++received[{in.index, in.microbatch}];
        } else if (in.op == PipeOp::kSendActivation || in.op == PipeOp::kSendGradient) {
          EXPECT_TRUE(sent.emplace(std::make_pair(in.index, in.microbatch), now).second) << "sent twice";
        } else if (in.op == PipeOp::kForward) {
          now += 1;
          held->at(static_cast<size_t>(s)) = std::max(held->at(static_cast<size_t>(s)), ++live[static_cast<size_t>(s)]);
        } else if (in.op == PipeOp::kBackward) {
          now += 1;
          --live[static_cast<size_t>(s)];
        }
        ++p;
        progress = true;
      }
    }
  }
  for (int s = 0; s < S; ++s) EXPECT_EQ(pos[static_cast<size_t>(s)], lists[static_cast<size_t>(s)].size()) << "stage " << s << " deadlocked";
  for (const auto& [key, n] : received) EXPECT_EQ(n, 1);
  EXPECT_EQ(received.size(), sent.size()) << "every message is received once";
  int64_t end = 0;
  for (int64_t c : clock) end = std::max(end, c);
  return end;
}

struct Fixture {
  ImportedModel model;
  TrainingGraph tg;
  Plan plan;
};

Fixture gpt_plan(const std::string& args, const std::string& out) {
  Fixture f;
  f.plan = make_plan("gpt_test.onnx", "--batch 8 --optimizer sgd --precision fp32 " + args, out);
  ImportOptions io;
  io.batch = f.plan.global_batch;
  f.model = import_onnx_file(models() + "/gpt_test.onnx", io);
  f.tg = plan_training_graph(f.plan, out, f.model.graph);
  return f;
}

TEST(PipelineProgram, GptFourStagesSplitMatchesThePlansTransfers) {
  Fixture f = gpt_plan("--cluster local:4 --method megatron --tp 1 --pp 4 --dp 1 --layers 4 --microbatches 4",
                       "/tmp/pipeline_program_test_pp4.json");
  ASSERT_TRUE(f.plan.pipeline.has_value());
  const PipelineSplit split = split_pipeline(f.tg, f.plan, "plan");
  ASSERT_EQ(split.stages, 4);
  const Graph& g = f.tg.graph;
  // Every node runs somewhere; every forward and backward node in exactly one stage.
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    const auto& st = split.node_stages[k];
    ASSERT_FALSE(st.empty()) << g.node(static_cast<NodeId>(k)).name;
    if (op_info(g.node(static_cast<NodeId>(k)).kind).family != OpFamily::kOptimizer && st.size() > 1) {
      EXPECT_NE(g.node(static_cast<NodeId>(k)).name.find("/grad_sum/"), std::string::npos) << g.node(static_cast<NodeId>(k)).name;
    }
  }
  // The forward boundaries are the plan's transfers.
  std::set<std::tuple<std::string, int, int>> ours, plans;
  for (const auto& b : split.boundaries) {
    if (!b.backward) ours.insert({g.tensor(b.tensor).name, b.from, b.to});
    EXPECT_EQ(b.backward, b.from > b.to) << g.tensor(b.tensor).name;
  }
  for (const auto& t : f.plan.pipeline->transfers) plans.insert({t.tensor, static_cast<int>(t.from_stage), static_cast<int>(t.to_stage)});
  EXPECT_EQ(ours, plans);
  // Every forward boundary carries one gradient back (each is read by one stage here).
  size_t backward = 0;
  for (const auto& b : split.boundaries) backward += b.backward ? 1 : 0;
  EXPECT_EQ(backward, ours.size());
  // The tied embedding: held by the first and last stage.
  ASSERT_EQ(split.shared.size(), 1u);
  EXPECT_EQ(g.tensor(f.tg.parameters[split.shared[0].slot].param).name, "wte.weight");
  EXPECT_EQ(split.shared[0].stages, (std::vector<int>{0, 3}));
  // Each stage's program: its shared-gradient sum is its own part.
  for (int s : {0, 3}) {
    const StageProgram p = stage_program(f.tg, split, s);
    int identities = 0;
    for (size_t k = 0; k < p.tg.graph.num_nodes(); ++k) {
      identities += p.active[k] && p.tg.graph.node(static_cast<NodeId>(k)).kind == OpKind::kIdentity &&
                    g.node(static_cast<NodeId>(k)).kind == OpKind::kAdd;
    }
    EXPECT_EQ(identities, 1) << "stage " << s;
  }
}

TEST(PipelineProgram, InstructionListsKeepTheScheduleInvariants) {
  Fixture f = gpt_plan("--cluster local:4 --method megatron --tp 1 --pp 4 --dp 1 --layers 4 --microbatches 4",
                       "/tmp/pipeline_program_test_pp4b.json");
  const PipelineSplit split = split_pipeline(f.tg, f.plan, "plan");
  const int S = split.stages;
  for (int64_t B : {1, 2, 4, 7}) {
    for (Schedule sched : {Schedule::k1F1B, Schedule::kGPipe}) {
      std::vector<std::vector<PipeInstruction>> lists;
      for (int s = 0; s < S; ++s) {
        lists.push_back(stage_instructions(split, s, sched, B));
        int64_t fw = 0, bw = 0;
        for (const auto& in : lists.back()) {
          fw += in.op == PipeOp::kForward;
          bw += in.op == PipeOp::kBackward;
        }
        EXPECT_EQ(fw, B);
        EXPECT_EQ(bw, B);
        EXPECT_EQ(lists.back().back().op, PipeOp::kUpdate);
      }
      std::vector<int64_t> held;
      const int64_t ticks = simulate(split, lists, &held);
      // Unit forward and backward: both schedules take 2(B + S − 1) clock ticks.
      EXPECT_EQ(ticks, 2 * (B + S - 1)) << schedule_name(sched) << " B=" << B;
      for (int s = 0; s < S; ++s) {
        const int64_t bound = sched == Schedule::k1F1B ? std::min<int64_t>(S - s, B) : B;
        EXPECT_EQ(held[static_cast<size_t>(s)], bound) << schedule_name(sched) << " stage " << s << " B=" << B;
        EXPECT_EQ(held[static_cast<size_t>(s)], inflight_of(sched, s, S, B));
      }
    }
  }
}

// `alpa-plan search --trace`: the predicted timeline has one track per stage, each with its B
// forwards and B backwards in schedule order, never overlapping, and ends within the plan's
// iteration time (the pipeline's busy + bubble + tail).
TEST(PipelineProgram, PredictedTraceFollowsTheSchedule) {
  Fixture f = gpt_plan("--cluster local:4 --method megatron --tp 1 --pp 4 --dp 1 --layers 4 --microbatches 4",
                       "/tmp/pipeline_program_test_pp4c.json");
  const nlohmann::json trace = nlohmann::json::parse(predicted_trace_json(f.plan));
  std::map<int, std::vector<std::pair<double, double>>> spans;
  std::map<int, int> work;
  int tracks = 0;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "M") { ++tracks; continue; }
    const int tid = e["tid"];
    spans[tid].emplace_back(e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>());
    const std::string name = e["name"];
    work[tid] += name.rfind("forward", 0) == 0 || name.rfind("backward", 0) == 0;
  }
  EXPECT_EQ(tracks, 4);
  double end = 0;
  for (auto& [tid, v] : spans) {
    EXPECT_EQ(work[tid], 8) << "stage " << tid;
    std::sort(v.begin(), v.end());
    for (size_t k = 1; k < v.size(); ++k) EXPECT_LE(v[k - 1].second, v[k].first + 2e-3) << "stage " << tid;  // 1 ns printed
    end = std::max(end, v.back().second);
  }
  const double iteration_us = f.plan.estimate.iteration_time_s * 1e6;
  EXPECT_GT(end, f.plan.pipeline->busy_time_s * 1e6);
  EXPECT_LE(end, iteration_us * 1.001);
}

TEST(PipelineProgram, LayersThatSkipNodesAreRefused) {
  Fixture f = gpt_plan("--cluster local:2 --method megatron --tp 1 --pp 2 --dp 1 --microbatches 2",
                       "/tmp/pipeline_program_test_pp2.json");
  Plan bad = f.plan;
  bad.pipeline->layers[1].first_node = bad.pipeline->layers[0].first_node;
  try {
    split_pipeline(f.tg, bad, "plan.json");
    FAIL() << "accepted overlapping layers";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("plan.json: /pipeline/layers/1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace alpa
