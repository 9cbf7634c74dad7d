// The rank runtime's resharding against brute force, under mpirun with 4 ranks (ctest). For each
// logical view of the 4 devices (1x4, 2x2, 4x1) and many random (shape, source spec, partial
// axes, destination spec), every rank builds its block of the source layout from a known global
// tensor (a partial sum: the value on the ranks at coordinate 0 of each partial axis, zero on the
// others), performs the planner's resharding (planner/spmd/reshard) with perform_reshard, and
// compares its result with the destination block sliced from the global tensor directly,
// padding included. The bytes the communicator counts must equal the plan's per-device bytes.
// A mismatch prints the case and aborts the job; rank 0 prints the pass line.
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "executor/comm/rank_runtime.h"
#include "planner/cluster/mesh.h"
#include "planner/common/error.h"
#include "planner/common/format.h"

namespace alpa::exec {
namespace {

[[noreturn]] void fail(int rank, const std::string& what) {
  std::fprintf(stderr, "FAIL rank %d: %s\n", rank, what.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

std::vector<int> axes(DimSharding s, const LogicalMesh& v) {
  std::vector<int> out;
  if ((s == DimSharding::kS0 || s == DimSharding::kS01) && v.d0 > 1) out.push_back(0);
  if ((s == DimSharding::kS1 || s == DimSharding::kS01) && v.d1 > 1) out.push_back(1);
  return out;
}

// This rank's block of `global` (C order, `shape`) under `spec`: padded rows are zero; with
// `holds` false the whole block is zero (a partial sum held elsewhere).
std::vector<double> block_of(const std::vector<double>& global, const Shape& shape, const ShardingSpec& spec,
                             const LogicalMesh& v, const int64_t coord[2], bool holds) {
  const Shape local = spec.local_shape(shape, v);
  std::vector<int64_t> start(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    int64_t b = 0;
    for (int a : axes(spec.dims[d], v)) b = b * (a == 0 ? v.d0 : v.d1) + coord[a];
    start[d] = b * local[d];
  }
  std::vector<double> out(static_cast<size_t>(num_elements(local)), 0.0);
  if (!holds) return out;
  for (int64_t i = 0; i < num_elements(local); ++i) {
    int64_t rest = i, g = 0, stride = 1;
    bool inside = true;
    std::vector<int64_t> idx(shape.size());
    for (size_t d = shape.size(); d-- > 0;) {
      idx[d] = rest % local[d] + start[d];
      rest /= local[d];
      if (idx[d] >= shape[d]) inside = false;
    }
    if (!inside) continue;
    for (size_t d = shape.size(); d-- > 0;) {
      g += idx[d] * stride;
      stride *= shape[d];
    }
    out[static_cast<size_t>(i)] = global[static_cast<size_t>(g)];
  }
  return out;
}

ShardingSpec random_spec(std::mt19937& rng, size_t rank) {
  ShardingSpec s = ShardingSpec::replicated(rank);
  bool used0 = false, used1 = false;
  for (size_t d = 0; d < rank; ++d) {
    const int pick = static_cast<int>(rng() % 5);  // R twice as likely
    DimSharding k = DimSharding::kR;
    if (pick == 1 && !used0) k = DimSharding::kS0;
    if (pick == 2 && !used1) k = DimSharding::kS1;
    if (pick == 3 && !used0 && !used1) k = DimSharding::kS01;
    used0 = used0 || k == DimSharding::kS0 || k == DimSharding::kS01;
    used1 = used1 || k == DimSharding::kS1 || k == DimSharding::kS01;
    s.dims[d] = k;
  }
  return s;
}

int64_t sent(const RankComms& c) {
  int64_t total = 0;
  for (const auto& comm : c.axis) {
    for (CollectiveKind k : {CollectiveKind::kAllReduce, CollectiveKind::kAllGather, CollectiveKind::kReduceScatter,
                             CollectiveKind::kAllToAll}) {
      total += comm->bytes_sent(k);
    }
  }
  return total;
}

int run() {
  int rank = 0, world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world != 4) fail(rank, "run with 4 ranks");
  Cluster cluster = load_cluster("local:4");
  std::mt19937 rng(12345);  // the same cases on every rank
  int64_t cases = 0, with_steps = 0;
  for (const LogicalMesh& view : logical_views({1, 4})) {
    RankComms comms = make_rank_comms(view);
    const MeshCosts costs = mesh_costs(cluster, {1, 4}, view);
    const int64_t coord[2] = {rank / view.d1, rank % view.d1};
    for (int trial = 0; trial < 300; ++trial) {
      const size_t r = 1 + rng() % 3;
      Shape shape(r);
      for (auto& d : shape) d = 1 + static_cast<int64_t>(rng() % 9);
      const ShardingSpec src = random_spec(rng, r), dst = random_spec(rng, r);
      AxisMask partial = 0;
      for (int a : {0, 1}) {
        bool used = false;
        for (DimSharding k : src.dims) {
          for (int x : axes(k, view)) used = used || x == a;
        }
        if (!used && (a == 0 ? view.d0 : view.d1) > 1 && rng() % 3 == 0) partial |= static_cast<AxisMask>(1u << a);
      }
      std::vector<double> global(static_cast<size_t>(num_elements(shape)));
      for (size_t i = 0; i < global.size(); ++i) global[i] = static_cast<double>(i + 1);
      bool holds = true;
      for (int a : {0, 1}) {
        if ((partial & (1u << a)) && coord[a] != 0) holds = false;
      }
      RankLowering::ReshardStep step;
      step.src = src;
      step.dst = dst;
      step.src_partial = partial;
      step.global = shape;
      step.dtype = DType::kFloat64;
      step.reshard = reshard(src, partial, dst, shape, DType::kFloat64, costs);
      const std::vector<double> in = block_of(global, shape, src, view, coord, holds);
      const std::vector<double> want = block_of(global, shape, dst, view, coord, true);
      std::vector<double> got(want.size(), -1.0);
      const int64_t before = sent(comms);
      perform_reshard(step, view, coord, in.data(), got.data(), comms);
      const std::string what = std::to_string(view.d0) + "x" + std::to_string(view.d1) + " " + format_dims(shape) + " " +
                               src.to_string() + " partial " + std::to_string(partial) + " -> " + dst.to_string() + ": " +
                               describe(step.reshard);
      for (size_t i = 0; i < want.size(); ++i) {
        if (got[i] != want[i]) {
          fail(rank, what + ": element " + std::to_string(i) + " is " + std::to_string(got[i]) + ", want " +
                         std::to_string(want[i]));
        }
      }
      const double bytes = step.reshard.bytes_per_device;
      if (static_cast<double>(sent(comms) - before) != bytes) {
        fail(rank, what + ": sent " + std::to_string(sent(comms) - before) + " B, the plan says " + std::to_string(bytes));
      }
      ++cases;
      with_steps += step.reshard.steps.empty() ? 0 : 1;
    }
  }
  if (rank == 0) {
    std::printf("reshard_exec_test: %lld random reshardings on 1x4, 2x2 and 4x1 (%lld with collectives) match brute force\n",
                static_cast<long long>(cases), static_cast<long long>(with_steps));
  }
  return 0;
}

}  // namespace
}  // namespace alpa::exec

int main(int argc, char** argv) {
  alpa::exec::init_mpi(&argc, &argv);
  int rc = 0;
  try {
    rc = alpa::exec::run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  alpa::exec::finalize_mpi();
  return rc;
}
