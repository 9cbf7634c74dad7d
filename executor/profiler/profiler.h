// `alpa-plan profile`: measures, on the devices a plan will run on, what the cost model prices —
// each kernel as alpa-run's trainer runs it (its outputs' allocation included) and each
// collective kind over the groups a mesh of these devices forms — and returns them as a Profile
// (planner/cost/profile.h), the tables `search --profile` prices plans from. It runs the
// executor's own kernels and communicator, every rank at once (ranks share cores, caches and
// memory bandwidth as they will in the run).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "executor/backend/communicator.h"
#include "planner/autodiff/training_graph.h"
#include "planner/cost/profile.h"

namespace alpa::exec {

struct ProfiledModel {
  std::string name;
  const Graph* forward = nullptr;  // imported at `batch`
  int64_t batch = 0;
};

struct ProfileOptions {
  OptimizerConfig optimizer;
  int warmup_steps = 1;
  int timed_steps = 3;             // each node's median over these
  int64_t max_message_bytes = int64_t{64} << 20;  // collectives: 1 KiB doubling up to this
  int collective_repeats = 5;
  // Splits the world communicator into groups (ranks passing equal `color`); the mesh axes
  // of these devices are such groups.
  std::function<std::unique_ptr<Communicator>(int color, int key)> split;
  // Progress ("what", done, total), on rank 0 only.
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

// Collective; every rank returns the same profile (kernel times: the slowest rank's median).
// Kernel tables: per (op, dtype), the nodes of each model's training graph at every per-device
// batch a data-parallel split over a group of these ranks gives (batch / g for each group size g
// dividing both); x is the node's FLOPs, or the bytes it reads and writes where it counts none
// (kernel_time's convention). Collective tables: every kind over every group size dividing the
// world (one host).
Profile measure_profile(const std::vector<ProfiledModel>& models, Communicator& world, const ProfileOptions& options,
                        const std::string& cluster_name, const std::string& device_kind);

}  // namespace alpa::exec
