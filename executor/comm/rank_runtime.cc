#include "executor/comm/rank_runtime.h"

#include <algorithm>
#include <type_traits>

#include "planner/common/error.h"

namespace alpa::exec {

RankComms make_rank_comms(const LogicalMesh& view) {
  RankComms c;
  c.world = make_mpi_world_communicator();
  ALPA_CHECK(c.world->size() == view.size(), "make_rank_comms: world size differs from the mesh");
  const int r = c.world->rank();
  const int d1 = static_cast<int>(view.d1);
  c.control = c.world->split(0, r);
  c.axis[0] = c.world->split(r % d1, r / d1);  // same i1, ordered by i0
  c.axis[1] = c.world->split(r / d1, r % d1);  // same i0, ordered by i1
  return c;
}

void run_reshard(const ReshardResult& reshard, void* data, int64_t numel, DType dtype, RankComms& comms) {
  for (const CollectiveStep& step : reshard.steps) {
    ALPA_CHECK(step.kind == Collective::kAllReduce,
               "run_reshard: " + std::string(collective_name(step.kind)) + " is not performed by this version");
    comms.axis[step.axis]->all_reduce_sum(data, numel, dtype);
  }
  ALPA_CHECK(!reshard.local_slice, "run_reshard: local slices are not performed by this version");
}

void sum_over_axes(AxisMask axes, void* data, int64_t count, DType dtype, RankComms& comms) {
  for (int ax : {1, 0}) {
    if ((axes & (1u << ax)) && comms.axis[ax]->size() > 1) comms.axis[ax]->all_reduce_sum(data, count, dtype);
  }
}

namespace {

void scale_in_place(void* data, int64_t n, DType dtype, double factor) {
  if (dtype == DType::kFloat32) {
    float* p = static_cast<float*>(data);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(p[i] * factor);
  } else {
    ALPA_CHECK(dtype == DType::kFloat64, "scaling a tensor that is not floating");
    double* p = static_cast<double*>(data);
    for (int64_t i = 0; i < n; ++i) p[i] *= factor;
  }
}

}  // namespace

BatchParallel batch_parallel_hooks(const RankLowering& lowering, const TrainingGraph& tg, RankComms& comms) {
  BatchParallel p;
  p.batch_ways = lowering.batch_ways;
  p.batch_block = lowering.batch_block;
  if (lowering.batch_ways > 1) {
    const AxisMask axes = lowering.batch_axes;
    p.sum_over_batch = [axes, &comms](void* data, int64_t count, DType dtype) {
      sum_over_axes(axes, data, count, dtype, comms);
    };
  }
  // Partial outputs (the loss) and gradient contributions reduced in place where they are
  // produced; param-like contributions accumulate over the microbatches (zero left behind) and
  // are reduced with the last one.
  struct Reduction {
    const ReshardResult* reshard = nullptr;
    bool per_step = false;
    double scale = 1;
    std::vector<double> acc;  // accumulated contributions (K > 1, per step), in double
  };
  auto reductions = std::make_shared<std::map<TensorId, Reduction>>();
  const Graph& g = tg.graph;
  p.watch.assign(g.num_tensors(), false);
  for (const RankLowering::GradReduction& r : lowering.grad_reductions) {
    const TensorId id = g.find_tensor(r.tensor);
    ALPA_CHECK(id != kNoId, "the rank's training graph has no gradient '" + r.tensor + "'");
    p.watch[static_cast<size_t>(id)] = true;
    (*reductions)[id] = Reduction{&r.reshard, r.per_step, r.scale, {}};
  }
  for (const RankLowering::OutputReduction& r : lowering.output_reductions) {
    const TensorId id = g.find_tensor(r.tensor);
    ALPA_CHECK(id != kNoId, "the rank's training graph has no tensor '" + r.tensor + "'");
    p.watch[static_cast<size_t>(id)] = true;
    (*reductions)[id] = Reduction{&r.reshard, false, r.scale, {}};
  }
  p.on_output = [reductions, &g, &comms](TensorId t, void* data, size_t m, size_t K) {
    Reduction& r = reductions->at(t);
    const Tensor& ten = g.tensor(t);
    const int64_t n = ten.numel();
    if (!r.per_step || K == 1) {
      run_reshard(*r.reshard, data, n, ten.dtype, comms);
      if (r.scale != 1.0) scale_in_place(data, n, ten.dtype, r.scale);
      return;
    }
    ALPA_CHECK(ten.dtype == DType::kFloat32 || ten.dtype == DType::kFloat64, "gradient '" + ten.name + "' is not floating");
    if (r.acc.empty()) r.acc.assign(static_cast<size_t>(n), 0.0);
    auto visit = [&](auto* v) {
      if (m + 1 < K) {
        for (int64_t i = 0; i < n; ++i) r.acc[static_cast<size_t>(i)] += static_cast<double>(v[i]);
        std::fill(v, v + n, 0);
      } else {
        for (int64_t i = 0; i < n; ++i) v[i] = static_cast<std::remove_pointer_t<decltype(v)>>(r.acc[static_cast<size_t>(i)] + v[i]);
        r.acc.clear();
        run_reshard(*r.reshard, data, n, ten.dtype, comms);
      }
    };
    if (ten.dtype == DType::kFloat32) visit(static_cast<float*>(data));
    else visit(static_cast<double*>(data));
  };
  return p;
}

std::map<std::string, int64_t> planned_traffic(const RankComms& comms) {
  std::map<std::string, int64_t> out;
  for (CollectiveKind k : {CollectiveKind::kAllReduce, CollectiveKind::kAllGather, CollectiveKind::kReduceScatter,
                           CollectiveKind::kAllToAll}) {
    int64_t total = 0;
    for (const auto& c : comms.axis) total += c->bytes_sent(k);
    out[std::string(collective_name(k))] = total;
  }
  return out;
}

bool any_rank(RankComms& comms, bool flag) {
  int64_t v = flag ? 1 : 0;
  comms.control->all_reduce_sum(&v, 1, DType::kInt64);
  return v > 0;
}

}  // namespace alpa::exec
