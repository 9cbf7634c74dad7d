#include "executor/comm/rank_runtime.h"

#include <algorithm>
#include <cstring>
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

RankComms make_pipeline_comms(int stage, int index, const LogicalMesh& view) {
  RankComms c;
  c.world = make_mpi_world_communicator();
  const int r = c.world->rank();
  const int d1 = static_cast<int>(view.d1);
  c.control = c.world->split(0, r);
  std::unique_ptr<MpiCommunicator> in_stage = c.world->split(stage, index);
  ALPA_CHECK(in_stage->size() == view.size(), "make_pipeline_comms: the stage's ranks differ from its mesh");
  c.axis[0] = in_stage->split(index % d1, index / d1);
  c.axis[1] = in_stage->split(index / d1, index % d1);
  c.pipe = c.world->split(0, r);
  return c;
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

// A local buffer and its layout while a resharding's steps run (see planner/spmd/reshard.h).
struct Local {
  std::vector<uint8_t> data;
  Shape shape;
  std::vector<std::vector<int>> axes;  // per dim: the mesh axes splitting it, major first
  int64_t elem = 4;

  int64_t outer(size_t d) const { return product(shape, 0, d); }
  int64_t inner(size_t d) const { return product(shape, d + 1, shape.size()) * elem; }  // bytes
  static int64_t product(const Shape& s, size_t a, size_t b) {
    int64_t p = 1;
    for (size_t i = a; i < b; ++i) p *= s[i];
    return p;
  }
  // Dim d resized to `size` rows: keeps the first min(old, size) rows, zero-pads the rest.
  void resize_dim(size_t d, int64_t size) {
    if (shape[d] == size) return;
    const int64_t out = outer(d), in = inner(d), keep = std::min(shape[d], size);
    std::vector<uint8_t> next(static_cast<size_t>(out * size * in), 0);
    for (int64_t o = 0; o < out; ++o) {
      std::memcpy(next.data() + o * size * in, data.data() + o * shape[d] * in, static_cast<size_t>(keep * in));
    }
    data.swap(next);
    shape[d] = size;
  }
  // Keeps rows [first, first + count) of dim d.
  void slice_dim(size_t d, int64_t first, int64_t count) {
    const int64_t out = outer(d), in = inner(d);
    std::vector<uint8_t> next(static_cast<size_t>(out * count * in));
    for (int64_t o = 0; o < out; ++o) {
      std::memcpy(next.data() + o * count * in, data.data() + (o * shape[d] + first) * in, static_cast<size_t>(count * in));
    }
    data.swap(next);
    shape[d] = count;
  }
};

// Padded size of dim d where dst first splits it (ceil(G / W) · W for dst's W ways).
int64_t padded(const ShardingSpec& dst, size_t d, const Shape& global, const LogicalMesh& view) {
  const int64_t w = dst.ways(d, view);
  return (global[d] + w - 1) / w * w;
}

}  // namespace

void perform_reshard(const RankLowering::ReshardStep& step, const LogicalMesh& view, const int64_t coord[2],
                     const void* in, void* out, RankComms& comms) {
  Local cur;
  cur.elem = dtype_bytes(step.dtype);
  cur.shape = step.src.local_shape(step.global, view);
  cur.data.assign(static_cast<const uint8_t*>(in),
                  static_cast<const uint8_t*>(in) + num_elements(cur.shape) * cur.elem);
  for (size_t d = 0; d < cur.shape.size(); ++d) cur.axes.push_back(mesh_axes(step.src.dims[d], view));
  for (const CollectiveStep& s : step.reshard.steps) {
    MpiCommunicator& comm = *comms.axis[s.axis];
    const int64_t n = comm.size();
    switch (s.kind) {
      case Collective::kAllReduce:
        comm.all_reduce_sum(cur.data.data(), num_elements(cur.shape), step.dtype);
        break;
      case Collective::kReduceScatter: {
        const size_t d = static_cast<size_t>(s.dim);
        if (cur.axes[d].empty()) cur.resize_dim(d, padded(step.dst, d, step.global, view));
        const int64_t L = cur.shape[d];
        ALPA_CHECK(L % n == 0, "reduce-scatter of a dim its axis does not divide");
        const int64_t outr = cur.outer(d), inr = cur.inner(d), rows = L / n;
        std::vector<uint8_t> send(cur.data.size());
        for (int64_t j = 0; j < n; ++j) {  // rank-major blocks
          for (int64_t o = 0; o < outr; ++o) {
            std::memcpy(send.data() + (j * outr + o) * rows * inr, cur.data.data() + (o * L + j * rows) * inr,
                        static_cast<size_t>(rows * inr));
          }
        }
        std::vector<uint8_t> recv(cur.data.size() / static_cast<size_t>(n));
        comm.reduce_scatter_sum(send.data(), recv.data(), num_elements(cur.shape) / n, step.dtype);
        cur.data.swap(recv);
        cur.shape[d] = rows;
        cur.axes[d].push_back(s.axis);
        break;
      }
      case Collective::kAllGather: {
        const size_t d = static_cast<size_t>(s.dim);
        ALPA_CHECK(!cur.axes[d].empty() && cur.axes[d].back() == s.axis, "all-gather of an axis that is not the dim's minor one");
        const int64_t L = cur.shape[d], outr = cur.outer(d), inr = cur.inner(d);
        std::vector<uint8_t> recv(cur.data.size() * static_cast<size_t>(n));
        comm.all_gather(cur.data.data(), recv.data(), num_elements(cur.shape), step.dtype);
        std::vector<uint8_t> next(recv.size());
        for (int64_t j = 0; j < n; ++j) {
          for (int64_t o = 0; o < outr; ++o) {
            std::memcpy(next.data() + (o * L * n + j * L) * inr, recv.data() + (j * outr + o) * L * inr,
                        static_cast<size_t>(L * inr));
          }
        }
        cur.data.swap(next);
        cur.shape[d] = L * n;
        cur.axes[d].pop_back();
        if (cur.axes[d].empty() && cur.shape[d] > step.global[d]) cur.resize_dim(d, step.global[d]);  // trim
        break;
      }
      case Collective::kAllToAll: {
        // Axis s.axis moves from dim ds (its minor axis now) to dim dd: block j of dd goes to
        // rank j, whose part of ds comes back in rank order.
        const size_t dd = static_cast<size_t>(s.dim), ds = static_cast<size_t>(s.dim2);
        ALPA_CHECK(!cur.axes[ds].empty() && cur.axes[ds].back() == s.axis, "all-to-all from a dim the axis does not split last");
        if (cur.axes[dd].empty()) cur.resize_dim(dd, padded(step.dst, dd, step.global, view));
        const int64_t L = cur.shape[dd];
        ALPA_CHECK(L % n == 0, "all-to-all onto a dim its axis does not divide");
        const int64_t outr = cur.outer(dd), inr = cur.inner(dd), rows = L / n;
        std::vector<uint8_t> send(cur.data.size());
        for (int64_t j = 0; j < n; ++j) {
          for (int64_t o = 0; o < outr; ++o) {
            std::memcpy(send.data() + (j * outr + o) * rows * inr, cur.data.data() + (o * L + j * rows) * inr,
                        static_cast<size_t>(rows * inr));
          }
        }
        std::vector<uint8_t> recv(cur.data.size());
        comm.all_to_all(send.data(), recv.data(), num_elements(cur.shape) / n, step.dtype);
        // Block j: rank j's ds part at this rank's dd rows; concatenate the blocks along ds.
        Shape block = cur.shape;
        block[dd] = rows;
        const int64_t block_bytes = num_elements(block) * cur.elem;
        const int64_t bo = Local::product(block, 0, ds), bds = block[ds];
        const int64_t bi = Local::product(block, ds + 1, block.size()) * cur.elem;
        std::vector<uint8_t> next(cur.data.size());
        for (int64_t j = 0; j < n; ++j) {
          for (int64_t o = 0; o < bo; ++o) {
            std::memcpy(next.data() + (o * bds * n + j * bds) * bi, recv.data() + j * block_bytes + o * bds * bi,
                        static_cast<size_t>(bds * bi));
          }
        }
        cur.data.swap(next);
        cur.shape = block;
        cur.shape[ds] = bds * n;
        cur.axes[ds].pop_back();
        cur.axes[dd].push_back(s.axis);
        if (cur.axes[ds].empty() && cur.shape[ds] > step.global[ds]) cur.resize_dim(ds, step.global[ds]);  // trim
        break;
      }
    }
  }
  // The local slice to dst: per dim, the block of the axes dst adds beyond the kept ones.
  for (size_t d = 0; d < cur.shape.size(); ++d) {
    const std::vector<int> want = mesh_axes(step.dst.dims[d], view);
    if (cur.axes[d] == want) continue;
    ALPA_CHECK(cur.axes[d].size() < want.size() && std::equal(cur.axes[d].begin(), cur.axes[d].end(), want.begin()),
               "resharding left a dim split in a way the destination does not extend");
    if (cur.axes[d].empty()) cur.resize_dim(d, padded(step.dst, d, step.global, view));
    int64_t block = 0, count = 1;
    for (size_t k = cur.axes[d].size(); k < want.size(); ++k) {
      const int a = want[k];
      const int64_t size = a == 0 ? view.d0 : view.d1;
      block = block * size + coord[a];
      count *= size;
    }
    const int64_t rows = cur.shape[d] / count;
    cur.slice_dim(d, block * rows, rows);
    cur.axes[d] = want;
  }
  ALPA_CHECK(cur.shape == step.dst.local_shape(step.global, view), "resharding ended in another local shape");
  std::memcpy(out, cur.data.data(), cur.data.size());
}

namespace {

void run_steps(const RankLowering::ReshardStep& step, const RankLowering& low, const void* in, void* out,
               RankComms& comms) {
  perform_reshard(step, low.view, low.coord, in, out, comms);
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
  p.sum_over_axes = [&comms](int64_t axes, void* data, int64_t count, DType dtype) {
    sum_over_axes(static_cast<AxisMask>(axes), data, count, dtype, comms);
  };
  // A vocab-parallel cross-entropy's statistics: over the axes its classes are split on.
  p.reduce_over_classes = [&comms](const Node& node, void* data, int64_t count, DType dtype, bool max) {
    const int64_t axes = node.attrs.get_int("class_axes");
    for (int ax : {1, 0}) {
      if (!(axes & (1 << ax)) || comms.axis[ax]->size() == 1) continue;
      if (max) comms.axis[ax]->all_reduce_max(data, count, dtype);
      else comms.axis[ax]->all_reduce_sum(data, count, dtype);
    }
  };
  const Graph& g = tg.graph;
  // Partial outputs (the loss, means over the split batch): all-reduced in place after their node.
  auto outputs = std::make_shared<std::map<TensorId, const RankLowering::OutputReduction*>>();
  p.watch.assign(g.num_tensors(), false);
  for (const RankLowering::OutputReduction& r : lowering.output_reductions) {
    const TensorId id = g.find_tensor(r.tensor);
    ALPA_CHECK(id != kNoId, "the rank's training graph has no tensor '" + r.tensor + "'");
    p.watch[static_cast<size_t>(id)] = true;
    (*outputs)[id] = &r;
  }
  p.on_output = [outputs, &g, &comms](TensorId t, void* data, size_t, size_t) {
    const RankLowering::OutputReduction& r = *outputs->at(t);
    const Tensor& ten = g.tensor(t);
    for (const CollectiveStep& s : r.reshard.steps) {
      ALPA_CHECK(s.kind == Collective::kAllReduce, "a partial output reduced by other than an all-reduce");
      comms.axis[s.axis]->all_reduce_sum(data, ten.numel(), ten.dtype);
    }
    if (r.scale != 1.0) scale_in_place(data, ten.numel(), ten.dtype, r.scale);
  };
  // Reshard nodes. A param-like gradient (per_step) accumulates over the microbatches in double,
  // leaves zeros behind, and is reduced with the last microbatch.
  auto acc = std::make_shared<std::map<int64_t, std::vector<double>>>();
  p.reshard = [&lowering, &comms, acc](const Node& node, const void* in, void* out, size_t m, size_t K) {
    const int64_t index = node.attrs.get_int("reshard");
    const RankLowering::ReshardStep& step = lowering.reshards.at(static_cast<size_t>(index));
    const int64_t n_in = num_elements(step.src.local_shape(step.global, lowering.view));
    const int64_t n_out = num_elements(step.dst.local_shape(step.global, lowering.view));
    if (!step.per_step || K == 1) {
      run_steps(step, lowering, in, out, comms);
      if (step.scale != 1.0) scale_in_place(out, n_out, step.dtype, step.scale);
      return;
    }
    ALPA_CHECK(step.dtype == DType::kFloat32 || step.dtype == DType::kFloat64, "gradient '" + step.tensor + "' is not floating");
    std::vector<double>& a = (*acc)[index];
    if (a.empty()) a.assign(static_cast<size_t>(n_in), 0.0);
    auto visit = [&](auto tag) {
      using T = decltype(tag);
      const T* v = static_cast<const T*>(in);
      if (m + 1 < K) {
        for (int64_t i = 0; i < n_in; ++i) a[static_cast<size_t>(i)] += static_cast<double>(v[i]);
        std::fill(static_cast<T*>(out), static_cast<T*>(out) + n_out, T(0));
        return;
      }
      std::vector<T> total(static_cast<size_t>(n_in));
      for (int64_t i = 0; i < n_in; ++i) total[static_cast<size_t>(i)] = static_cast<T>(a[static_cast<size_t>(i)] + v[i]);
      a.clear();
      run_steps(step, lowering, total.data(), out, comms);
      if (step.scale != 1.0) scale_in_place(out, n_out, step.dtype, step.scale);
    };
    if (step.dtype == DType::kFloat32) visit(float{});
    else visit(double{});
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
