// The stage DP of the paper: cut L layers into contiguous stages, give each a submesh so that
// the submeshes use every device, minimising Σ stage latency + (B − 1) · max stage latency, with
// t_max (the max) enumerated over the candidate latencies; and an exhaustive enumerator the
// tests compare it with. Also the pipeline schedule model (1F1B, GPipe).
#pragma once

#include <cstdint>
#include <vector>

namespace alpa {

enum class Schedule : uint8_t { k1F1B, kGPipe };
const char* schedule_name(Schedule s);

// Stage latencies as the DP sees them: cost(i, j, m, inflight) for layers [i, j) on mesh kind m
// holding `inflight` microbatches' activations (+inf when it does not fit or does not exist).
struct StageDpInput {
  int layers = 0;
  int64_t devices = 0;
  std::vector<int64_t> mesh_sizes;  // devices per mesh kind
  int64_t microbatches = 1;
  Schedule schedule = Schedule::k1F1B;
  int max_stages = 0;               // 0: no limit beyond layers and devices
  // [((i * (L + 1) + j) * M + m) * (S + 1) + inflight], S = max inflight stored
  std::vector<double> cost;
  int max_inflight = 1;
  double at(int i, int j, int m, int64_t inflight) const;
};

struct DpStage {
  int first = 0, end = 0;  // layers [first, end)
  int mesh = 0;            // mesh kind
  int64_t inflight = 1;    // microbatches whose activations it holds at once
  double latency_s = 0;
};

struct StageDpResult {
  bool found = false;
  double objective = 0;  // Σ latency + (B − 1) · max latency
  double t_max = 0;
  std::vector<DpStage> stages;
  int64_t t_max_tried = 0;
};

// Microbatches a stage holds at once: S − s under 1F1B for stage s of S, all B under GPipe.
int64_t inflight_of(Schedule schedule, int stage, int stages, int64_t microbatches);

StageDpResult stage_dp(const StageDpInput& input, int threads = 1);
StageDpResult stage_brute_force(const StageDpInput& input);

// Schedule model: per-stage forward and backward latency of one microbatch; the iteration's
// makespan (before the step's tail), the clock ticks with unit latencies, and the most
// microbatches each stage holds.
struct ScheduleResult {
  double makespan_s = 0;
  std::vector<int64_t> max_inflight;  // per stage
  // Per stage, the order of work: +k forward of microbatch k, -k-1 backward of microbatch k.
  std::vector<std::vector<int64_t>> order;
  std::vector<std::vector<double>> start_s;  // per stage, per entry of order
};
ScheduleResult simulate_schedule(Schedule schedule, const std::vector<double>& forward_s,
                                 const std::vector<double>& backward_s, int64_t microbatches);

}  // namespace alpa
