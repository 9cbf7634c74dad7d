// The inter-operator pass: the stage DP against exhaustive enumeration, the schedule model's
// invariants (paper item 10), layer construction, stage placement, determinism of whole plans
// across thread counts, and the hierarchical plan file.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>

#include "planner/cluster/cluster.h"
#include "planner/common/error.h"
#include "planner/graph/op_kind.h"
#include "planner/inter_op/layers.h"
#include "planner/inter_op/pipeline.h"
#include "planner/inter_op/stage_dp.h"
#include "planner/intra_op/search.h"
#include "planner/onnx/import.h"
#include "planner/plan/plan.h"
#include "tests/common/test_models.h"

namespace alpa {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

const Graph& model(const std::string& name, int64_t batch) { return testing::test_model(name, batch); }

// ---- stage DP against enumeration ------------------------------------------------------------

StageDpInput random_input(std::mt19937_64& rng) {
  StageDpInput in;
  in.layers = 1 + static_cast<int>(rng() % 6);
  const int64_t hosts = 1 + static_cast<int64_t>(rng() % 2);
  const int64_t per_host = int64_t{1} << (rng() % 3);  // 1, 2 or 4
  in.devices = hosts * per_host;
  for (int64_t k = 1; k < per_host; k *= 2) in.mesh_sizes.push_back(k);
  in.mesh_sizes.push_back(per_host);
  for (int64_t n = 2; n <= hosts; ++n) in.mesh_sizes.push_back(n * per_host);
  in.microbatches = int64_t{1} << (rng() % 4);
  in.schedule = rng() % 3 == 0 ? Schedule::kGPipe : Schedule::k1F1B;
  in.max_inflight = static_cast<int>(in.schedule == Schedule::kGPipe ? in.microbatches
                                                                      : std::min<int64_t>(std::min<int64_t>(in.layers, in.devices), in.microbatches));
  const int L = in.layers;
  const size_t M = in.mesh_sizes.size();
  in.cost.assign(static_cast<size_t>(L) * (L + 1) * M * (in.max_inflight + 1), kInf);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (int i = 0; i < L; ++i) {
    for (int j = i + 1; j <= L; ++j) {
      for (size_t m = 0; m < M; ++m) {
        // Work of the layers over the devices, with noise; memory allows up to a random count.
        const double base = (j - i) * u(rng) / static_cast<double>(in.mesh_sizes[m]) * (0.6 + 0.4 * u(rng));
        const int limit = static_cast<int>(rng() % (in.max_inflight + 2));  // 0: never fits
        for (int f = 1; f <= in.max_inflight; ++f) {
          if (f > limit) continue;
          // Quantised so equal latencies (ties) occur.
          const double c = std::round((base + 0.05 * f) * 16) / 16;
          in.cost[((static_cast<size_t>(i) * (L + 1) + j) * M + m) * (in.max_inflight + 1) + f] = c;
        }
      }
    }
  }
  return in;
}

TEST(StageDp, EqualsExhaustiveEnumerationOnRandomCases) {
  std::mt19937_64 rng(20261126);
  int feasible = 0;
  for (int c = 0; c < 300; ++c) {
    const StageDpInput in = random_input(rng);
    const StageDpResult dp = stage_dp(in, 2);
    const StageDpResult bf = stage_brute_force(in);
    ASSERT_EQ(dp.found, bf.found) << "case " << c;
    if (!bf.found) continue;
    ++feasible;
    EXPECT_NEAR(dp.objective, bf.objective, 1e-9 * bf.objective) << "case " << c << " L=" << in.layers << " N=" << in.devices
                                                                 << " B=" << in.microbatches;
    // The DP's stages are a real plan: contiguous, every device used, its objective recomputed.
    int next = 0;
    int64_t used = 0;
    double sum = 0, mx = 0;
    const int S = static_cast<int>(dp.stages.size());
    for (int s = 0; s < S; ++s) {
      const DpStage& st = dp.stages[s];
      EXPECT_EQ(st.first, next);
      next = st.end;
      used += in.mesh_sizes[st.mesh];
      EXPECT_EQ(st.inflight, inflight_of(in.schedule, s, S, in.microbatches));
      const double lat = in.at(st.first, st.end, st.mesh, st.inflight);
      ASSERT_TRUE(std::isfinite(lat));
      sum += lat;
      mx = std::max(mx, lat);
    }
    EXPECT_EQ(next, in.layers);
    EXPECT_EQ(used, in.devices);
    EXPECT_NEAR(sum + static_cast<double>(in.microbatches - 1) * mx, dp.objective, 1e-9 * dp.objective);
  }
  EXPECT_GT(feasible, 150);
}

TEST(StageDp, SameResultWithAnyThreadCount) {
  std::mt19937_64 rng(7);
  for (int c = 0; c < 40; ++c) {
    const StageDpInput in = random_input(rng);
    const StageDpResult a = stage_dp(in, 1), b = stage_dp(in, 2), d = stage_dp(in, 8);
    ASSERT_EQ(a.found, b.found);
    ASSERT_EQ(a.found, d.found);
    if (!a.found) continue;
    EXPECT_EQ(a.objective, b.objective);
    EXPECT_EQ(a.objective, d.objective);
    ASSERT_EQ(a.stages.size(), d.stages.size());
    for (size_t s = 0; s < a.stages.size(); ++s) {
      EXPECT_EQ(a.stages[s].end, d.stages[s].end);
      EXPECT_EQ(a.stages[s].mesh, d.stages[s].mesh);
    }
  }
}

// ---- schedule model (paper item 10) ----------------------------------------------------------

TEST(Schedule, OneFOneBClockTicksAndInflightBound) {
  for (int S = 1; S <= 6; ++S) {
    for (int64_t B = 1; B <= 9; ++B) {
      const ScheduleResult r = simulate_schedule(Schedule::k1F1B, std::vector<double>(S, 1.0), std::vector<double>(S, 1.0), B);
      EXPECT_DOUBLE_EQ(r.makespan_s, 2.0 * static_cast<double>(S + B - 1)) << "S=" << S << " B=" << B;
      for (int i = 0; i < S; ++i) {
        EXPECT_LE(r.max_inflight[i], S - i) << "stage " << i << " S=" << S << " B=" << B;
        EXPECT_EQ(r.max_inflight[i], std::min<int64_t>(S - i, B));
        EXPECT_EQ(r.max_inflight[i], inflight_of(Schedule::k1F1B, i, S, B));
        EXPECT_EQ(r.order[i].size(), static_cast<size_t>(2 * B));  // every microbatch forward and backward once
      }
    }
  }
}

TEST(Schedule, GPipeHoldsEveryMicrobatch) {
  for (int S = 1; S <= 4; ++S) {
    for (int64_t B = 1; B <= 6; ++B) {
      const ScheduleResult r = simulate_schedule(Schedule::kGPipe, std::vector<double>(S, 1.0), std::vector<double>(S, 1.0), B);
      EXPECT_DOUBLE_EQ(r.makespan_s, 2.0 * static_cast<double>(S + B - 1));
      for (int i = 0; i < S; ++i) EXPECT_EQ(r.max_inflight[i], B);
    }
  }
}

TEST(Schedule, UnequalStagesStayWithinTheDpFormula) {
  // The DP's objective Σ t + (B − 1) · max t (t = forward + backward) bounds the simulated 1F1B
  // makespan from above; the slowest stage's own work, B · max t, bounds it from below.
  const std::vector<double> fwd = {1, 3, 2}, bwd = {2, 6, 4};
  for (int64_t B : {1, 2, 4, 8, 16}) {
    const ScheduleResult r = simulate_schedule(Schedule::k1F1B, fwd, bwd, B);
    double sum = 0, mx = 0;
    for (size_t s = 0; s < fwd.size(); ++s) { sum += fwd[s] + bwd[s]; mx = std::max(mx, fwd[s] + bwd[s]); }
    EXPECT_LE(r.makespan_s, sum + static_cast<double>(B - 1) * mx + 1e-9) << "B=" << B;
    EXPECT_GE(r.makespan_s, static_cast<double>(B) * mx - 1e-9) << "B=" << B;
  }
}

// ---- layers ----------------------------------------------------------------------------------

TEST(Layers, ContiguousWithAHeavyOpEachAndResidualCuts) {
  const TrainingGraph tg = build_training_graph(model("gpt_test", 8), {});
  for (int L : {1, 2, 3, 4}) {
    LayerOptions lo;
    lo.layers = L;
    const Layers layers = build_layers(tg.graph, tg.num_forward_nodes, lo);
    ASSERT_EQ(layers.size(), static_cast<size_t>(L));
    EXPECT_EQ(layers.first[0], 0);
    EXPECT_EQ(layers.end.back(), static_cast<int64_t>(tg.num_forward_nodes));
    for (int l = 0; l < L; ++l) {
      if (l > 0) { EXPECT_EQ(layers.first[l], layers.end[l - 1]); }
      bool has_heavy = false;
      for (int64_t i = layers.first[l]; i < layers.end[l]; ++i) {
        EXPECT_EQ(layers.layer_of_node[i], l);
        has_heavy = has_heavy || is_heavy_op(tg.graph.node(static_cast<NodeId>(i)).kind);
      }
      EXPECT_TRUE(has_heavy) << "layer " << l << " of " << L;
    }
  }
  // Two layers of a two-block GPT cut at the residual stream: batch × seq × hidden floats.
  LayerOptions two;
  two.layers = 2;
  const Layers l2 = build_layers(tg.graph, tg.num_forward_nodes, two);
  const Graph& g = tg.graph;
  int64_t residual = -1;
  for (const Node& n : g.nodes()) {
    if (n.kind == OpKind::kAdd && !n.outputs.empty() && g.tensor(n.outputs[0]).shape.size() == 3) {
      residual = g.tensor(n.outputs[0]).bytes();
      break;
    }
  }
  EXPECT_EQ(l2.boundary_bytes[1], residual);
  EXPECT_EQ(repeated_block_count(tg.graph, tg.num_forward_nodes), 2);
}

TEST(Layers, TooManyLayersIsAUserError) {
  const TrainingGraph tg = build_training_graph(model("gpt_test", 8), {});
  LayerOptions lo;
  lo.layers = 10000;
  EXPECT_THROW(build_layers(tg.graph, tg.num_forward_nodes, lo), UserError);
}

// ---- placement -------------------------------------------------------------------------------

TEST(Placement, SubmeshesTileHostsWithoutStraddling) {
  const Cluster cl = load_cluster("builtin:p3.16xlarge:2");
  const std::vector<MeshShape> meshes = {{1, 4}, {1, 8}, {1, 2}, {1, 1}, {1, 1}};
  const auto ids = place_stages(meshes, cl);
  std::set<int64_t> used;
  for (size_t k = 0; k < meshes.size(); ++k) {
    ASSERT_EQ(static_cast<int64_t>(ids[k].size()), meshes[k].size());
    std::set<int64_t> hosts;
    for (int64_t d : ids[k]) {
      EXPECT_TRUE(used.insert(d).second) << "device " << d << " twice";
      hosts.insert(d / cl.devices_per_host);
    }
    EXPECT_EQ(hosts.size(), 1u) << "stage " << k << " straddles hosts";
  }
  EXPECT_EQ(used.size(), 16u);
}

// ---- whole searches --------------------------------------------------------------------------

PipelineRequest request(const Graph& g, const Cluster& cl, int threads) {
  PipelineRequest rq;
  rq.forward = &g;
  rq.model_name = "gpt_test.onnx";
  rq.global_batch = 8;
  rq.cluster = &cl;
  rq.cluster_label = "local:4";
  rq.threads = threads;
  return rq;
}

TEST(PipelineSearch, ByteIdenticalPlansWithOneTwoAndEightThreads) {
  const Graph& g = model("gpt_test", 8);
  const Cluster cl = load_cluster("builtin:p3.16xlarge:1");
  std::string first;
  for (int threads : {1, 2, 8}) {
    PipelineRequest rq = request(g, cl, threads);
    rq.microbatches = 4;
    rq.layers = 4;
    rq.memory_budget_bytes = 6 << 20;  // binding: stages and memory-bound shardings matter
    const PipelineResult r = search_pipeline(rq);
    ASSERT_TRUE(r.found) << r.diagnosis;
    const std::string json = plan_to_json(r.plan);
    if (first.empty()) first = json;
    EXPECT_EQ(json, first) << "threads " << threads;
  }
}

TEST(PipelineSearch, PlanIsConsistentAndRoundTrips) {
  const Graph& g = model("gpt_test", 8);
  const Cluster cl = load_cluster("builtin:p3.16xlarge:1");
  PipelineRequest rq = request(g, cl, 2);
  rq.layers = 4;
  rq.memory_budget_bytes = 6 << 20;
  const PipelineResult r = search_pipeline(rq);
  ASSERT_TRUE(r.found) << r.diagnosis;
  const Plan& p = r.plan;
  ASSERT_TRUE(p.pipeline.has_value());
  const PlanPipeline& pl = *p.pipeline;
  EXPECT_EQ(pl.layers.size(), 4u);
  std::set<int64_t> devices;
  int64_t next = 0;
  double slowest = 0, sum = 0, tail = 0;
  for (const PlanStage& st : pl.stages) {
    EXPECT_EQ(st.first_layer, next);
    next = st.end_layer;
    for (int64_t d : st.device_ids) EXPECT_TRUE(devices.insert(d).second);
    EXPECT_LE(st.memory.peak_bytes, p.memory_budget_bytes);
    EXPECT_EQ(st.logical_d0 * st.logical_d1, st.mesh_hosts * st.mesh_devices_per_host);
    slowest = std::max(slowest, st.microbatch_time_s);
    sum += st.microbatch_time_s;
    tail = std::max(tail, st.step_time_s);
  }
  EXPECT_EQ(next, 4);
  EXPECT_EQ(devices.size(), 8u);
  // The estimate's communication (the busiest stage's devices') has every kind.
  for (const char* kind : {"all_gather", "all_reduce", "all_to_all", "reduce_scatter"}) {
    EXPECT_EQ(p.estimate.communication_bytes.count(kind), 1u) << kind;
  }
  const double B = static_cast<double>(p.microbatches);
  EXPECT_NEAR(p.estimate.iteration_time_s, sum + (B - 1) * slowest + tail, 1e-12 * p.estimate.iteration_time_s);
  EXPECT_NEAR(pl.busy_time_s + pl.bubble_time_s + pl.step_tail_s, p.estimate.iteration_time_s, 1e-12 * p.estimate.iteration_time_s);
  // Every forward node appears in exactly one stage.
  std::set<std::string> nodes;
  for (const PlanStage& st : pl.stages) for (const auto& s : st.strategies) EXPECT_TRUE(nodes.insert(s.node).second) << s.node;
  // The file round-trips.
  const std::string json = plan_to_json(p);
  EXPECT_EQ(parse_plan(json, "plan.json"), p);
  EXPECT_EQ(plan_to_json(parse_plan(json, "plan.json")), json);
}

TEST(PipelineSearch, MegatronBaselineUsesItsConfiguration) {
  const Graph& g = model("gpt_test", 8);
  const Cluster cl = load_cluster("builtin:p3.16xlarge:1");
  PipelineRequest rq = request(g, cl, 2);
  rq.method = PipelineMethod::kMegatron;
  rq.tp = 2;
  rq.pp = 2;
  rq.dp = 2;
  const PipelineResult r = search_pipeline(rq);
  ASSERT_TRUE(r.found) << r.diagnosis;
  const PlanPipeline& pl = *r.plan.pipeline;
  ASSERT_EQ(pl.stages.size(), 2u);
  for (const PlanStage& st : pl.stages) {
    EXPECT_EQ(st.logical_d0, 2);
    EXPECT_EQ(st.logical_d1, 2);
    EXPECT_EQ(st.method, "megatron");
    EXPECT_EQ(st.end_layer - st.first_layer, 1);
  }
  // Every stage is tensor- and data-parallel: the estimate (the busiest stage's devices) counts
  // the activation all-reduces and gradient synchronisation.
  EXPECT_GT(r.plan.estimate.communication_bytes.at("all_reduce"), 0);
  // A wrong product of sizes is a user error.
  rq.dp = 3;
  EXPECT_THROW(search_pipeline(rq), UserError);
  // The grid's best is at least as good as this one configuration.
  PipelineRequest grid = request(g, cl, 2);
  grid.method = PipelineMethod::kMegatronGrid;
  const PipelineResult gr = search_pipeline(grid);
  ASSERT_TRUE(gr.found);
  EXPECT_LE(gr.plan.estimate.iteration_time_s, r.plan.estimate.iteration_time_s * (1 + 1e-12));
}

TEST(PipelineSearch, AutoIsNoWorseThanItsOwnSingleStagePlan) {
  // The whole cluster as one stage is in the DP's space: the hierarchical plan never loses to it.
  const Graph& g = model("gpt_test", 8);
  const Cluster cl = load_cluster("builtin:p3.16xlarge:1");
  PipelineRequest rq = request(g, cl, 2);
  rq.microbatches = 2;
  rq.layers = 2;
  const PipelineResult r = search_pipeline(rq);
  ASSERT_TRUE(r.found);
  for (const PipelineCandidate& c : r.candidates) {
    if (c.feasible) { EXPECT_LE(r.plan.estimate.iteration_time_s, c.iteration_time_s * (1 + 1e-12)); }
  }
  // The single-stage plan itself, searched on its own (the ILP over the whole cluster, every
  // view, the same microbatches): the hierarchical plan is no slower.
  SearchRequest one;
  one.forward = &g;
  one.model_name = rq.model_name;
  one.global_batch = rq.global_batch;
  one.microbatches = rq.microbatches;
  one.optimizer = rq.optimizer;
  one.precision = rq.precision;
  one.cluster = &cl;
  one.cluster_label = rq.cluster_label;
  const SearchResult single = search_shard_parallel(one);
  ASSERT_TRUE(single.found);
  EXPECT_LE(r.plan.estimate.iteration_time_s, single.plan.estimate.iteration_time_s * (1 + 1e-9))
      << "auto " << r.plan.estimate.iteration_time_s << " s, single stage " << single.plan.estimate.iteration_time_s << " s";
}

TEST(PipelineSearch, LowerBoundPruningNeverLosesTheOptimum) {
  // Once a plan is known, (layer range, submesh) pairs whose compute lower bound cannot beat it
  // are not costed. The best iteration time with and without that pruning is the same.
  struct Case { const char* model; int64_t batch; const char* cluster; int layers; int64_t budget; };
  const Case cases[] = {
      {"gpt_test", 8, "builtin:p3.16xlarge:1", 4, 0},
      {"gpt_test", 16, "builtin:p3.16xlarge:2", 4, 6 << 20},
      {"bert_test", 8, "builtin:dgx-a100:1", 3, 0},
      {"moe_test", 8, "builtin:p3.16xlarge:1", 0, 0},
  };
  int64_t skipped = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.model) + " on " + c.cluster);
    const Graph& g = model(c.model, c.batch);
    const Cluster cl = load_cluster(c.cluster);
    PipelineRequest rq = request(g, cl, 2);
    rq.global_batch = c.batch;
    rq.layers = c.layers;
    rq.memory_budget_bytes = c.budget;
    const PipelineResult pruned = search_pipeline(rq);
    rq.prune = false;
    const PipelineResult full = search_pipeline(rq);
    ASSERT_EQ(pruned.found, full.found);
    if (!full.found) continue;
    EXPECT_EQ(full.skipped, 0);
    EXPECT_NEAR(pruned.plan.estimate.iteration_time_s, full.plan.estimate.iteration_time_s,
                1e-12 * full.plan.estimate.iteration_time_s);
    EXPECT_LE(pruned.stage_solves, full.stage_solves);
    skipped += pruned.skipped;
  }
  EXPECT_GT(skipped, 0) << "the bound never pruned anything: the test does not exercise it";
}

TEST(PipelineSearch, AutoMatchesTheShardParallelPlanUnderTightMemory) {
  // The one-stage sharding the intra-op search finds (every view, exact knapsack) is in auto's
  // space: under budgets where only recomputation or memory-bound shardings fit, auto must reach
  // it too (within the greedy knapsack's slack), not settle for a recomputing option.
  const Graph& g = model("gpt_test", 8);
  const Cluster cl = load_cluster("builtin:p3.16xlarge:1");
  int compared = 0;
  for (int64_t budget : {int64_t{3} << 20, int64_t{4} << 20, int64_t{6} << 20, int64_t{10} << 20}) {
    SCOPED_TRACE("budget " + std::to_string(budget));
    SearchRequest sq;
    sq.forward = &g;
    sq.model_name = "gpt_test.onnx";
    sq.global_batch = 8;
    sq.microbatches = 2;
    sq.cluster = &cl;
    sq.cluster_label = "p3.16xlarge:1";
    sq.memory_budget_bytes = budget;
    sq.precision.compute = DType::kFloat16;  // alpa-plan's defaults on a V100 cluster
    sq.optimizer.kind = OptimizerKind::kAdam;
    sq.threads = 2;
    const SearchResult shard = search_shard_parallel(sq);
    PipelineRequest rq = request(g, cl, 2);
    rq.microbatches = 2;
    rq.memory_budget_bytes = budget;
    rq.precision.compute = DType::kFloat16;
    rq.optimizer.kind = OptimizerKind::kAdam;
    const PipelineResult r = search_pipeline(rq);
    if (!shard.found) continue;
    ASSERT_TRUE(r.found) << r.diagnosis;
    EXPECT_LE(r.plan.estimate.iteration_time_s, shard.plan.estimate.iteration_time_s * 1.01);
    ++compared;
  }
  EXPECT_GE(compared, 2);
}

}  // namespace
}  // namespace alpa
