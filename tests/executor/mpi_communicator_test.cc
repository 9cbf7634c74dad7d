// MPI communicator, run under mpirun with N ranks (ctest runs N=4 and N=2). Every rank checks every
// result against values worked out by hand from the rank numbers; a mismatch prints
// "host rank pid file:line" and aborts the whole job. Only rank 0 prints the pass line.
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "executor/comm/mpi_communicator.h"
#include "planner/common/error.h"

namespace alpa::exec {
namespace {

int g_world_rank = 0;

[[noreturn]] void fail(const char* file, int line, const std::string& what) {
  char host[256] = "?";
  gethostname(host, sizeof host);
  std::fprintf(stderr, "FAIL host %s rank %d pid %d %s:%d: %s\n", host, g_world_rank,
               static_cast<int>(getpid()), file, line, what.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

#define EXPECT(cond) \
  do {               \
    if (!(cond)) fail(__FILE__, __LINE__, #cond); \
  } while (0)
#define EXPECT_EQ_NUM(got, want)                                                        \
  do {                                                                                  \
    const auto g = (got);                                                               \
    const auto w = (want);                                                              \
    if (!(g == w))                                                                      \
      fail(__FILE__, __LINE__, std::string(#got) + " = " + std::to_string(g) + ", want " + \
                                   std::to_string(w));                                  \
  } while (0)

// Counter expectations (planner/cost/collective.cc collective_bytes_per_device, rounded to the
// nearest byte): all-reduce 2(n−1)/n·B, all-gather (n−1)/n·(n·B_local), reduce-scatter
// (n−1)/n·B_in, all-to-all (n−1)/n·B_local. E.g. n=4, 32 B all-reduced: 2·3/4·32 = 48 B;
// n=5: 2·4/5·32 = 51.2 → 51 B.
int64_t ring(int64_t bytes, int n, double factor = 1) {
  if (n <= 1) return 0;
  return std::llround(factor * (n - 1) / n * static_cast<double>(bytes));
}

template <typename T>
void check_all_reduce(Communicator& comm, DType dtype) {
  const int n = comm.size();
  const int r = comm.rank();
  constexpr int64_t kCount = 8;
  std::vector<T> data(kCount);
  for (int64_t i = 0; i < kCount; ++i) data[i] = static_cast<T>(r + 1 + 10 * i);
  const int64_t before = comm.bytes_sent(CollectiveKind::kAllReduce);
  comm.all_reduce_sum(data.data(), kCount, dtype);
  // Σ_r (r + 1 + 10i) = n(n+1)/2 + 10·i·n
  for (int64_t i = 0; i < kCount; ++i) EXPECT(data[i] == static_cast<T>(n * (n + 1) / 2 + 10 * i * n));
  const int64_t bytes = kCount * static_cast<int64_t>(sizeof(T));
  EXPECT_EQ_NUM(comm.bytes_sent(CollectiveKind::kAllReduce) - before, ring(bytes, n, 2));
  // The maximum: rank r holds r − 3i at i (the largest rank wins) and −r at the last (rank 0).
  for (int64_t i = 0; i < kCount; ++i) data[i] = static_cast<T>(i + 1 < kCount ? r - 3 * i : -r);
  comm.all_reduce_max(data.data(), kCount, dtype);
  for (int64_t i = 0; i + 1 < kCount; ++i) EXPECT(data[i] == static_cast<T>(n - 1 - 3 * i));
  EXPECT(data[kCount - 1] == static_cast<T>(0));
  EXPECT_EQ_NUM(comm.bytes_sent(CollectiveKind::kAllReduce) - before, 2 * ring(bytes, n, 2));
}

void check_all_gather(Communicator& comm) {
  const int n = comm.size();
  const int r = comm.rank();
  constexpr int64_t kCount = 4;
  std::vector<int32_t> send(kCount), recv(kCount * n, -1);
  for (int64_t i = 0; i < kCount; ++i) send[i] = 100 * r + static_cast<int32_t>(i);
  const int64_t before = comm.bytes_sent(CollectiveKind::kAllGather);
  comm.all_gather(send.data(), recv.data(), kCount, DType::kInt32);
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < kCount; ++i) EXPECT_EQ_NUM(recv[j * kCount + i], 100 * j + static_cast<int32_t>(i));
  // n=4: gathered 64 B, 3/4 of it = 48 B (= 3 blocks of 16 B received from and sent along the ring).
  EXPECT_EQ_NUM(comm.bytes_sent(CollectiveKind::kAllGather) - before, ring(kCount * n * 4, n));
}

void check_reduce_scatter(Communicator& comm) {
  const int n = comm.size();
  const int r = comm.rank();
  constexpr int64_t kCount = 3;
  std::vector<double> send(kCount * n), recv(kCount, -1);
  // Element i of block j on rank r: r + 1000·j + i. Rank r receives block r summed over ranks.
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < kCount; ++i) send[j * kCount + i] = r + 1000.0 * j + static_cast<double>(i);
  const int64_t before = comm.bytes_sent(CollectiveKind::kReduceScatter);
  comm.reduce_scatter_sum(send.data(), recv.data(), kCount, DType::kFloat64);
  for (int64_t i = 0; i < kCount; ++i)
    EXPECT(recv[i] == n * (n - 1) / 2.0 + n * (1000.0 * r + static_cast<double>(i)));
  EXPECT_EQ_NUM(comm.bytes_sent(CollectiveKind::kReduceScatter) - before, ring(kCount * n * 8, n));
}

void check_all_to_all(Communicator& comm) {
  const int n = comm.size();
  const int r = comm.rank();
  constexpr int64_t kCount = 2;
  std::vector<int64_t> send(kCount * n), recv(kCount * n, -1);
  // Block j of rank r carries (r, j, i) as r·100 + j·10 + i; rank r's block j comes from rank j.
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < kCount; ++i) send[j * kCount + i] = r * 100 + j * 10 + i;
  const int64_t before = comm.bytes_sent(CollectiveKind::kAllToAll);
  comm.all_to_all(send.data(), recv.data(), kCount, DType::kInt64);
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < kCount; ++i) EXPECT_EQ_NUM(recv[j * kCount + i], int64_t{j} * 100 + r * 10 + i);
  EXPECT_EQ_NUM(comm.bytes_sent(CollectiveKind::kAllToAll) - before, ring(kCount * n * 8, n));
}

// Bool and byte tensors (a causal mask sliced by a sharded node, TopK's choices) move through
// every path that carries data; the maximum of bools is their logical or.
void check_bytes_and_bools(Communicator& comm) {
  const int n = comm.size();
  const int r = comm.rank();
  constexpr int64_t kCount = 3;
  std::vector<uint8_t> mask(kCount), gathered(kCount * n, 7);
  for (int64_t i = 0; i < kCount; ++i) mask[i] = static_cast<uint8_t>((r + i) % 2);
  comm.all_gather(mask.data(), gathered.data(), kCount, DType::kBool);
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < kCount; ++i) EXPECT_EQ_NUM(int{gathered[j * kCount + i]}, (j + i) % 2);
  std::vector<uint8_t> any(1, r == n - 1 ? 1 : 0);
  comm.all_reduce_max(any.data(), 1, DType::kBool);
  EXPECT_EQ_NUM(int{any[0]}, 1);
  std::vector<int8_t> send(kCount * n), recv(kCount * n, 0);
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < kCount; ++i) send[j * kCount + i] = static_cast<int8_t>(-(r * 10 + j));
  comm.all_to_all(send.data(), recv.data(), kCount, DType::kInt8);
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < kCount; ++i) EXPECT_EQ_NUM(int{recv[j * kCount + i]}, -(j * 10 + r));
  std::vector<uint8_t> sums(2, static_cast<uint8_t>(r));
  comm.all_reduce_sum(sums.data(), 2, DType::kUInt8);
  EXPECT_EQ_NUM(int{sums[0]}, n * (n - 1) / 2);
}

void check_collectives(Communicator& comm) {
  check_all_reduce<float>(comm, DType::kFloat32);
  check_all_reduce<double>(comm, DType::kFloat64);
  check_all_reduce<int64_t>(comm, DType::kInt64);
  check_all_reduce<int32_t>(comm, DType::kInt32);
  check_all_gather(comm);
  check_reduce_scatter(comm);
  check_all_to_all(comm);
}

// Ring: rank r sends r·7+i to r+1 and receives from r−1. Even ranks send first, odd ranks receive
// first, so the blocking calls cannot all wait on each other.
void check_send_recv_ring(MpiCommunicator& comm) {
  const int n = comm.size();
  const int r = comm.rank();
  if (n == 1) return;
  constexpr int64_t kCount = 5;
  std::vector<float> out(kCount), in(kCount, -1);
  for (int64_t i = 0; i < kCount; ++i) out[i] = static_cast<float>(r * 7 + i);
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  const int64_t before = comm.bytes_sent(CollectiveKind::kSendRecv);
  if (r % 2 == 0) {
    comm.send(out.data(), kCount, DType::kFloat32, next, 42);
    comm.recv(in.data(), kCount, DType::kFloat32, prev, 42);
  } else {
    comm.recv(in.data(), kCount, DType::kFloat32, prev, 42);
    comm.send(out.data(), kCount, DType::kFloat32, next, 42);
  }
  for (int64_t i = 0; i < kCount; ++i) EXPECT(in[i] == static_cast<float>(prev * 7 + i));
  EXPECT_EQ_NUM(comm.bytes_sent(CollectiveKind::kSendRecv) - before, kCount * 4);
  // A bool mask point to point.
  std::vector<uint8_t> flags(kCount), got(kCount, 9);
  for (int64_t i = 0; i < kCount; ++i) flags[i] = static_cast<uint8_t>((r + i) % 2);
  if (r % 2 == 0) {
    comm.send(flags.data(), kCount, DType::kBool, next, 43);
    comm.recv(got.data(), kCount, DType::kBool, prev, 43);
  } else {
    comm.recv(got.data(), kCount, DType::kBool, prev, 43);
    comm.send(flags.data(), kCount, DType::kBool, next, 43);
  }
  for (int64_t i = 0; i < kCount; ++i) EXPECT_EQ_NUM(int{got[i]}, (prev + i) % 2);
}

template <typename F>
bool throws_internal_error(F&& f) {
  try {
    f();
  } catch (const InternalError&) {
    return true;
  }
  return false;
}

void check_errors(MpiCommunicator& comm) {
  // Half precision has no MPI sum here: a broken invariant, not a silent wrong answer.
  std::vector<uint16_t> half(4, 0);
  EXPECT(throws_internal_error([&] { comm.all_reduce_sum(half.data(), 4, DType::kFloat16); }));
  EXPECT(throws_internal_error([&] { comm.all_reduce_sum(half.data(), 4, DType::kBFloat16); }));
  // Nor has a sum of bools a meaning.
  EXPECT(throws_internal_error([&] { comm.all_reduce_sum(half.data(), 2, DType::kBool); }));
  // Element counts beyond int are refused before MPI sees them.
  EXPECT(throws_internal_error(
      [&] { comm.all_gather(half.data(), half.data(), int64_t{1} << 33, DType::kFloat32); }));
  // MPI_ERRORS_RETURN: an invalid destination rank comes back as InternalError, not an abort.
  float x = 0;
  EXPECT(throws_internal_error([&] { comm.send(&x, 1, DType::kFloat32, comm.size() + 5, 0); }));
  EXPECT_EQ_NUM(comm.bytes_sent(CollectiveKind::kSendRecv), int64_t{0});
}

void check_size_one(MpiCommunicator& world) {
  // Each rank alone: collectives are identities and count no bytes.
  auto self = split(world, world.rank(), 0);
  EXPECT_EQ_NUM(self->size(), 1);
  EXPECT_EQ_NUM(self->rank(), 0);
  check_collectives(*self);
  for (int k = 0; k < kNumCollectiveKinds; ++k)
    EXPECT_EQ_NUM(self->bytes_sent(static_cast<CollectiveKind>(k)), int64_t{0});
}

void check_splits(MpiCommunicator& world) {
  const int n = world.size();
  const int r = world.rank();
  // Reversed order: key −r puts world rank n−1 first.
  auto reversed = split(world, 0, -r);
  EXPECT_EQ_NUM(reversed->size(), n);
  EXPECT_EQ_NUM(reversed->rank(), n - 1 - r);
  check_collectives(*reversed);
  check_send_recv_ring(*reversed);

  if (n == 4) {
    // 2×2 logical mesh, world rank = 2·row + col. Rows vary the column (mesh axis 1), columns vary
    // the row (mesh axis 0).
    const int row = r / 2, col = r % 2;
    auto row_group = split(world, row, col);
    auto col_group = split(world, col, row);
    EXPECT_EQ_NUM(row_group->size(), 2);
    EXPECT_EQ_NUM(row_group->rank(), col);
    EXPECT_EQ_NUM(col_group->size(), 2);
    EXPECT_EQ_NUM(col_group->rank(), row);
    check_collectives(*row_group);
    check_collectives(*col_group);
    check_send_recv_ring(*row_group);

    // The groups are really the mesh rows: summing world ranks over a row gives 2·(2·row)+1.
    int64_t v = r;
    row_group->all_reduce_sum(&v, 1, DType::kInt64);
    EXPECT_EQ_NUM(v, int64_t{4 * row + 1});
    v = r;
    col_group->all_reduce_sum(&v, 1, DType::kInt64);
    EXPECT_EQ_NUM(v, int64_t{2 + 2 * col});
    // 2 ranks, 8 B all-reduced: 2·(1/2)·8 = 8 B counted on each group, on top of check_collectives.
  } else {
    // Even and odd world ranks.
    auto parity = split(world, r % 2, r);
    EXPECT_EQ_NUM(parity->size(), (n + 1 - r % 2) / 2);
    EXPECT_EQ_NUM(parity->rank(), r / 2);
    check_collectives(*parity);
  }
}

int run(int* argc, char*** argv) {
  init_mpi(argc, argv);
  {
    auto world = make_mpi_world_communicator();
    g_world_rank = world->rank();
    check_errors(*world);
    check_collectives(*world);
    check_send_recv_ring(*world);
    check_size_one(*world);
    check_splits(*world);
    // Totals on the world communicator after one round of everything (n = world size):
    // all-reduce (sum, then max) of 32, 64, 64 and 32 B, each counted 2(n−1)/n·B (rounded one
    // by one).
    const int n = world->size();
    EXPECT_EQ_NUM(world->bytes_sent(CollectiveKind::kAllReduce),
                  2 * (2 * ring(32, n, 2) + 2 * ring(64, n, 2)));
    check_bytes_and_bools(*world);
    check_bytes_and_bools(*split(*world, world->rank(), 0));
    if (world->rank() == 0)
      std::printf("mpi_communicator_test: %d ranks, all checks passed\n", n);
  }  // communicators freed before MPI_Finalize
  finalize_mpi();
  return 0;
}

}  // namespace
}  // namespace alpa::exec

int main(int argc, char** argv) {
  try {
    return alpa::exec::run(&argc, &argv);
  } catch (const std::exception& e) {
    alpa::exec::fail(__FILE__, __LINE__, std::string("uncaught exception: ") + e.what());
  }
}
