// Collectives between the devices of a mesh. MPI (CPU ranks) and NCCL (GPUs) implement this;
// SingleProcessCommunicator is the one-device case. Every implementation counts the bytes each
// collective kind moves, so runs can be checked against the plan's prediction.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>

#include "planner/graph/dtype.h"

namespace alpa::exec {

enum class CollectiveKind : uint8_t { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kSendRecv };
inline constexpr int kNumCollectiveKinds = 5;
std::string_view collective_name(CollectiveKind kind);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: every rank ends with the sum over ranks of `count` elements.
  virtual void all_reduce_sum(void* data, int64_t count, DType dtype) = 0;
  // In place: the elementwise maximum over ranks (counted as an all-reduce).
  virtual void all_reduce_max(void* data, int64_t count, DType dtype) = 0;
  // `send` holds count elements per rank; `recv` receives size()·count, rank-major.
  virtual void all_gather(const void* send, void* recv, int64_t count, DType dtype) = 0;
  // `send` holds size()·count elements; rank r receives the sum of block r.
  virtual void reduce_scatter_sum(const void* send, void* recv, int64_t count, DType dtype) = 0;
  // Block j of `send` (count elements) goes to rank j; block j of `recv` comes from rank j.
  virtual void all_to_all(const void* send, void* recv, int64_t count, DType dtype) = 0;

  // Bytes this rank sent, per collective kind (payload as the collective's algorithm moves it).
  int64_t bytes_sent(CollectiveKind kind) const { return bytes_[static_cast<size_t>(kind)]; }

 protected:
  void count(CollectiveKind kind, int64_t bytes) { bytes_[static_cast<size_t>(kind)] += bytes; }

 private:
  std::array<int64_t, kNumCollectiveKinds> bytes_{};
};

// One device: every collective is the identity (sums over one rank), and nothing is sent.
std::unique_ptr<Communicator> make_single_process_communicator();

}  // namespace alpa::exec
