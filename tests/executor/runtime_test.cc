#include <gtest/gtest.h>

#include <vector>

#include "executor/backend/communicator.h"
#include "executor/runtime/memory_pool.h"

namespace alpa::exec {
namespace {

TEST(MemoryPool, TracksHighWaterMark) {
  MemoryPool pool;
  void* a = pool.allocate(1000);
  void* b = pool.allocate(500);
  EXPECT_EQ(pool.bytes_in_use(), 1500);
  pool.release(a);
  EXPECT_EQ(pool.bytes_in_use(), 500);
  EXPECT_EQ(pool.peak_bytes(), 1500);
  pool.reset_peak();
  EXPECT_EQ(pool.peak_bytes(), 500);
  EXPECT_EQ(static_cast<unsigned char*>(b)[499], 0);  // zero-filled
  pool.release(b);
}

TEST(Communicator, SingleProcessCollectivesAreIdentities) {
  auto comm = make_single_process_communicator();
  EXPECT_EQ(comm->size(), 1);
  std::vector<float> x = {1, 2, 3}, y(3);
  comm->all_reduce_sum(x.data(), 3, DType::kFloat32);
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
  comm->all_gather(x.data(), y.data(), 3, DType::kFloat32);
  EXPECT_EQ(y, x);
  EXPECT_EQ(comm->bytes_sent(CollectiveKind::kAllReduce), 0);
  EXPECT_EQ(collective_name(CollectiveKind::kReduceScatter), "reduce_scatter");
}

}  // namespace
}  // namespace alpa::exec
