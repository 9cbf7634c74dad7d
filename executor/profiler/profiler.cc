#include "executor/profiler/profiler.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <utility>

#include "executor/backend/kernels.h"
#include "executor/runtime/data.h"
#include "executor/runtime/trainer.h"
#include "planner/common/error.h"
#include "planner/graph/op_cost.h"
#include "planner/graph/rebatch.h"

namespace alpa::exec {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  ALPA_CHECK(!v.empty(), "median of nothing");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The per-device batches a data-parallel split over a group of these ranks gives.
std::vector<int64_t> per_device_batches(int64_t batch, int world) {
  std::vector<int64_t> out;
  for (int g = 1; g <= world; ++g) {
    if (world % g == 0 && batch % g == 0) out.push_back(batch / g);
  }
  return out;
}

// One kernel measurement: a node of a training graph, its size and the seconds it took.
struct Sample {
  OpKind op = OpKind::kMatMul;
  DType dtype = DType::kFloat32;
  double x = 0;
  double seconds = 0;
};

// Trains the model at `local_batch` for warm-up plus timed steps and returns each node's median
// time, the slowest rank's (all ranks run the same graph at once).
std::vector<Sample> time_training_graph(const ProfiledModel& m, int64_t local_batch, const ProfileOptions& o,
                                        Communicator& world) {
  const Graph forward = rebatch(*m.forward, m.batch, local_batch);
  const TrainingGraph tg = build_training_graph(forward, o.optimizer);
  const Graph& g = tg.graph;
  auto kernels = make_cpu_kernels();
  Trainer trainer(tg, *kernels, 7);
  std::vector<std::vector<double>> times(g.num_nodes());
  bool timing = false;
  trainer.set_node_timer([&](NodeId k, double seconds) {
    if (timing) times[static_cast<size_t>(k)].push_back(seconds);
  });
  auto data = synthetic_data(forward, 7);
  for (int step = 0; step < o.warmup_steps + o.timed_steps; ++step) {
    timing = step >= o.warmup_steps;
    const auto batch = data->batch(step);
    std::vector<const void*> inputs;
    for (const auto& b : batch) inputs.push_back(b.data());
    trainer.step(inputs, step);
  }
  std::vector<double> med(g.num_nodes(), 0);
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    if (!times[k].empty()) med[k] = median(times[k]);
  }
  world.all_reduce_max(med.data(), static_cast<int64_t>(med.size()), DType::kFloat64);
  std::vector<Sample> out;
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    const double x = kernel_size(count_node(g, n));
    if (x > 0 && med[k] > 0) out.push_back({n.kind, kernel_dtype(g, n), x, med[k]});
  }
  return out;
}

// Per (op, dtype): one point per distinct size, the mean of the nodes of that size (nodes of one
// size differ: a broadcast operand reads less than a full one; the mean keeps their sum).
std::vector<KernelTable> kernel_tables(const std::vector<Sample>& samples) {
  std::map<std::pair<int, int>, std::map<double, std::vector<double>>> by_kernel;
  for (const Sample& s : samples) {
    by_kernel[{static_cast<int>(s.op), static_cast<int>(s.dtype)}][s.x].push_back(s.seconds);
  }
  std::vector<KernelTable> out;
  for (const auto& [key, sizes] : by_kernel) {
    KernelTable t;
    t.op = static_cast<OpKind>(key.first);
    t.dtype = static_cast<DType>(key.second);
    for (const auto& [x, seconds] : sizes) {
      double sum = 0;
      for (double s : seconds) sum += s;
      t.points.push_back({x, sum / static_cast<double>(seconds.size())});
    }
    out.push_back(std::move(t));
  }
  return out;
}

// Seconds of one collective call on `comm` over a buffer of `bytes` (collective.h's convention:
// the reduced buffer, the gathered output, the scattered input, the local all-to-all buffer):
// the median of the repeats, the slowest rank's.
double time_collective(Collective kind, Communicator& comm, int64_t bytes, int repeats, Communicator& world) {
  const int64_t n = comm.size();
  const int64_t count = bytes / 4;  // float32 elements
  std::vector<float> a(static_cast<size_t>(count), 1.0f), b(static_cast<size_t>(count), 0.0f);
  auto once = [&] {
    switch (kind) {
      case Collective::kAllReduce: comm.all_reduce_sum(a.data(), count, DType::kFloat32); break;
      case Collective::kAllGather: comm.all_gather(a.data(), b.data(), count / n, DType::kFloat32); break;
      case Collective::kReduceScatter: comm.reduce_scatter_sum(a.data(), b.data(), count / n, DType::kFloat32); break;
      case Collective::kAllToAll: comm.all_to_all(a.data(), b.data(), count / n, DType::kFloat32); break;
    }
  };
  once();  // warm-up (and the groups start together)
  std::vector<double> seconds;
  for (int r = 0; r < repeats; ++r) {
    std::fill(a.begin(), a.end(), 1.0f);
    const auto start = Clock::now();
    once();
    seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  double med = median(seconds);
  world.all_reduce_max(&med, 1, DType::kFloat64);
  return std::max(med, 1e-9);
}

std::vector<CollectiveTable> collective_tables(Communicator& world, const ProfileOptions& o, int64_t& done, int64_t total) {
  std::vector<CollectiveTable> out;
  const int w = world.size();
  for (int g = 2; g <= w; ++g) {
    if (w % g != 0) continue;
    std::unique_ptr<Communicator> group = o.split(world.rank() / g, world.rank());
    for (Collective kind : {Collective::kAllReduce, Collective::kAllGather, Collective::kReduceScatter, Collective::kAllToAll}) {
      CollectiveTable t;
      t.kind = kind;
      t.group_size = g;
      t.crosses_hosts = false;
      for (int64_t bytes = 1024; bytes <= o.max_message_bytes; bytes *= 2) {
        const int64_t used = bytes / (4 * g) * 4 * g;  // whole float32 blocks per rank
        if (used <= 0) continue;
        t.points.push_back({static_cast<double>(used), time_collective(kind, *group, used, o.collective_repeats, world)});
      }
      out.push_back(std::move(t));
      if (o.progress) o.progress("collectives", ++done, total);
    }
  }
  return out;
}

}  // namespace

Profile measure_profile(const std::vector<ProfiledModel>& models, Communicator& world, const ProfileOptions& o,
                        const std::string& cluster_name, const std::string& device_kind) {
  ALPA_CHECK(world.size() == 1 || o.split, "measure_profile: several ranks need a split function");
  int64_t total = 0, done = 0;
  for (const ProfiledModel& m : models) total += static_cast<int64_t>(per_device_batches(m.batch, world.size()).size());
  int64_t groups = 0;
  for (int g = 2; g <= world.size(); ++g) groups += world.size() % g == 0 ? 4 : 0;
  total += groups;
  std::vector<Sample> samples;
  for (const ProfiledModel& m : models) {
    for (int64_t b : per_device_batches(m.batch, world.size())) {
      const std::vector<Sample> s = time_training_graph(m, b, o, world);
      samples.insert(samples.end(), s.begin(), s.end());
      if (o.progress) o.progress(m.name + " at batch " + std::to_string(b), ++done, total);
    }
  }
  Profile p;
  p.cluster = cluster_name;
  p.device_kind = device_kind;
  p.kernels = kernel_tables(samples);
  p.collectives = collective_tables(world, o, done, total);
  return p;
}

}  // namespace alpa::exec
