// Mixed precision in the cost model, worked out by hand on the two-layer MLP of test_graphs.h,
// data-parallel (Method::kData) on a 1x2 mesh with Adam:
//
//   x[M, H] → mm0 (w0[H, H]) → h0 → relu0 → r0 → mm1 (w1[H, H]) → h1 → mean → loss
//   M = 8, H = 16, P = 2·H·H = 512 parameters.
//
// Memory per device (every parameter replicated):
//   fp32: weight 4 + gradient 4 + Adam m, v 8           = 16 bytes per parameter
//   fp16: fp32 master 4 + half gradient 2 + Adam m, v 8 = 14 in parameter/gradient/state,
//         + the half weights (2 per parameter, outputs of the master casts)  = 16 in all.
//         The half weight is an activation: activation_bytes holds it only where the backward
//         reads it (half/w1, for mm1's input gradient); half/w0 is not saved (x needs no
//         gradient), so it appears only in the simulated peak.
//
// Compute per device: a matmul is max(flops / (peak_dtype · achievable.matmul),
// bytes / (bandwidth · achievable.memory_bandwidth)), forward plus its backward matmuls, times
// the device's share of the batch (1/2). mm1 runs 3 matmuls of 2·M·H·H flops (forward, dX, dW);
// mm0 runs 2 (its input x is data: no dX). fp16 matmuls use the fp16 peak, fp32 the fp32 peak.
// An element-wise op costs the bytes it reads and writes over the bandwidth, at 2 bytes per
// element in fp16 and 4 in fp32.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "planner/intra_op/search.h"
#include "tests/intra_op/test_graphs.h"

namespace alpa {
namespace {

constexpr int64_t kM = 8, kH = 16;
constexpr int64_t kP = 2 * kH * kH;          // parameters
constexpr double kMatmulFlops = 2.0 * kM * kH * kH;  // one M×H×H matmul
constexpr double kPeakFp32 = 10e12, kPeakFp16 = 80e12, kMatmulFraction = 0.5;
constexpr double kBandwidth = 1e9, kBandwidthFraction = 0.8;

// One host, two devices; `bandwidth` and `flops_scale` let a test make one term dominate.
Cluster two_devices(double bandwidth, double flops_scale = 1) {
  Cluster c;
  c.name = "precision";
  c.hosts = 1;
  c.devices_per_host = 2;
  c.device.kind = "test";
  c.device.memory_bytes = int64_t{1} << 40;
  c.device.peak_flops_fp32 = kPeakFp32 * flops_scale;
  c.device.peak_flops_fp16 = kPeakFp16 * flops_scale;
  c.device.peak_flops_bf16 = kPeakFp16 * flops_scale;
  c.device.memory_bandwidth_bytes_per_s = bandwidth;
  c.intra_host = {100e9, 1e-6};
  c.inter_host = {10e9, 1e-5};
  c.achievable = {kMatmulFraction, kBandwidthFraction, 1.0};
  return c;
}

struct Planned {
  TrainingGraph tg;
  Cluster cluster;
  StrategyGraph sg;
  std::vector<int> choice;
  ChosenSpecs cs;
};

// Data-parallel plan of the MLP on a 1x2 mesh (the preset leaves one strategy per group).
std::unique_ptr<Planned> plan(DType compute, const Cluster& cluster) {
  auto p = std::make_unique<Planned>();
  OptimizerConfig opt;
  opt.kind = OptimizerKind::kAdam;
  PrecisionConfig precision;
  precision.compute = compute;
  p->tg = build_training_graph(testing::mlp(kM, kH, 2), opt, precision);
  p->cluster = cluster;
  StrategyGraphOptions so;
  so.method = Method::kData;
  p->sg = build_strategy_graph(p->tg, p->cluster, {1, 2}, {1, 2}, so);
  for (const Group& g : p->sg.groups) EXPECT_EQ(g.num_strategies(), 1u) << g.name;
  p->choice.assign(p->sg.groups.size(), 0);
  p->cs = chosen_specs(p->sg, p->choice);
  return p;
}

const NodeStrategy& strategy_of(const Planned& p, const std::string& node) {
  const NodeId id = p.tg.graph.find_node(node);
  EXPECT_NE(id, kNoId) << node;
  return *p.cs.node.at(static_cast<size_t>(id));
}

int64_t tensor_bytes(const Planned& p, const std::string& name) {
  const TensorId id = p.tg.graph.find_tensor(name);
  EXPECT_NE(id, kNoId) << name;
  return p.tg.graph.tensor(id).bytes();
}

void expect_rel(double actual, double expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, 1e-12 * expected) << what;
}

TEST(PrecisionCost, Fp32MemoryIsSixteenBytesPerParameter) {
  const auto p = plan(DType::kFloat32, two_devices(kBandwidth));
  const PlanMemory m = simulate_memory(p->sg, p->choice);
  EXPECT_EQ(m.parameter_bytes, 4 * kP);
  EXPECT_EQ(m.gradient_bytes, 4 * kP);
  EXPECT_EQ(m.optimizer_state_bytes, 8 * kP);
  EXPECT_EQ(m.parameter_bytes + m.gradient_bytes + m.optimizer_state_bytes, 16 * kP);
  // Saved activations, batch split in two: x (for mm0's dW) and r0 (for mm1's dW and ReluGrad).
  EXPECT_EQ(m.activation_bytes, 2 * (kM / 2) * kH * 4);
  EXPECT_EQ(estimate_choice(p->sg, p->choice, kM).memory, m);
}

TEST(PrecisionCost, Fp16MemoryIsSixteenBytesPerParameterWithTheHalfWeights) {
  const auto p = plan(DType::kFloat16, two_devices(kBandwidth));
  const PlanMemory m = simulate_memory(p->sg, p->choice);
  EXPECT_EQ(m.parameter_bytes, 4 * kP);      // fp32 masters
  EXPECT_EQ(m.gradient_bytes, 2 * kP);       // half gradients (no fp32 copy)
  EXPECT_EQ(m.optimizer_state_bytes, 8 * kP);  // fp32 Adam m and v
  // The half weights: one fp16 copy of each parameter, replicated.
  const int64_t half_w0 = tensor_bytes(*p, "half/w0"), half_w1 = tensor_bytes(*p, "half/w1");
  EXPECT_EQ(half_w0, 2 * kH * kH);
  EXPECT_EQ(half_w1, 2 * kH * kH);
  EXPECT_EQ(m.parameter_bytes + m.gradient_bytes + m.optimizer_state_bytes + half_w0 + half_w1, 16 * kP);
  // Where they land: half/w1 among the saved activations (with x and r0 in fp16, batch split
  // in two); half/w0 is read by the forward only.
  const int64_t x_and_r0 = 2 * (kM / 2) * kH * 2;
  EXPECT_EQ(m.activation_bytes, x_and_r0 + half_w1);
  // The ILP's linear model counts the same: each parameter group's master, gradient and state,
  // its cast's saved output, and the saved activations.
  EXPECT_EQ(evaluate_memory(p->sg, p->choice), 14 * kP + half_w1 + x_and_r0);
  // The transient half/w0 is in the peak only: it lives beside the masters and the state (not
  // beside the gradients, which the backward makes after mm0 has freed it).
  EXPECT_GE(m.peak_bytes, m.parameter_bytes + m.optimizer_state_bytes + half_w0);
}

// Matmuls compute-bound (bandwidth so high that bytes cost nothing measurable).
void expect_matmul_times(DType compute, double peak) {
  const auto p = plan(compute, two_devices(1e30));
  const double one = kMatmulFlops / (peak * kMatmulFraction);
  const double mm1 = 3 * one / 2, mm0 = 2 * one / 2;  // per device: half the batch
  expect_rel(strategy_of(*p, "mm1").compute_s, mm1, "mm1");
  expect_rel(strategy_of(*p, "mm0").compute_s, mm0, "mm0");
  // Everything else is memory-bound, hence free here: the step's compute is the two matmuls.
  expect_rel(estimate_choice(p->sg, p->choice, kM).compute_time_s, mm0 + mm1, "compute_time_s");
}

TEST(PrecisionCost, Fp32MatmulUsesTheFp32Peak) { expect_matmul_times(DType::kFloat32, kPeakFp32); }
TEST(PrecisionCost, Fp16MatmulUsesTheFp16Peak) { expect_matmul_times(DType::kFloat16, kPeakFp16); }

// Element-wise ops: bytes over the achievable bandwidth (flops made free).
void expect_elementwise_times(DType compute, int64_t elem) {
  const auto p = plan(compute, two_devices(kBandwidth, 1e30));
  const double bw = kBandwidth * kBandwidthFraction;
  // relu0: forward reads h0, writes r0; ReluGrad reads dy and r0, writes dx: 5 tensors of
  // M×H elements, half of them per device.
  const double relu = 5.0 * kM * kH * elem / bw / 2;
  expect_rel(strategy_of(*p, "relu0").compute_s, relu, "relu0");
  if (compute != DType::kFloat32) {
    // The master cast reads the fp32 weight and writes its half copy, on every device.
    const double cast = static_cast<double>(kH * kH * (4 + elem)) / bw;
    expect_rel(strategy_of(*p, "cast/w0").compute_s, cast, "cast/w0");
  }
}

TEST(PrecisionCost, Fp32ElementwiseMovesFourBytesPerElement) {
  expect_elementwise_times(DType::kFloat32, 4);
}
TEST(PrecisionCost, Fp16ElementwiseMovesTwoBytesPerElement) {
  expect_elementwise_times(DType::kFloat16, 2);
}

// The optimizer update runs on the fp32 masters in both precisions: the same time.
TEST(PrecisionCost, AdamUpdateIsFp32InBothPrecisions) {
  const auto p32 = plan(DType::kFloat32, two_devices(kBandwidth, 1e30));
  const auto p16 = plan(DType::kFloat16, two_devices(kBandwidth, 1e30));
  const double bw = kBandwidth * kBandwidthFraction;
  auto update_time = [](const Planned& p) {
    return p.cs.param.at(static_cast<size_t>(p.tg.graph.find_tensor("w0")))->compute_s;
  };
  // AdamUpdate reads w, grad, m, v and writes w, m, v (replicated: the whole tensor per device).
  expect_rel(update_time(*p32), static_cast<double>(kH * kH) * (4 * 4 + 3 * 4) / bw, "fp32 update");
  expect_rel(update_time(*p16), static_cast<double>(kH * kH) * (3 * 4 + 2 + 3 * 4) / bw, "fp16 update");
}

}  // namespace
}  // namespace alpa
