#include "executor/backend/communicator.h"

#include <cstring>

namespace alpa::exec {

std::string_view collective_name(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kAllReduce: return "all_reduce";
    case CollectiveKind::kAllGather: return "all_gather";
    case CollectiveKind::kReduceScatter: return "reduce_scatter";
    case CollectiveKind::kAllToAll: return "all_to_all";
    case CollectiveKind::kSendRecv: return "send_recv";
  }
  return "unknown";
}

namespace {

class SingleProcessCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(void*, int64_t, DType) override {}
  void all_reduce_max(void*, int64_t, DType) override {}
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override {
    if (send != recv) std::memmove(recv, send, static_cast<size_t>(count * dtype_bytes(dtype)));
  }
  void reduce_scatter_sum(const void* send, void* recv, int64_t count, DType dtype) override {
    if (send != recv) std::memmove(recv, send, static_cast<size_t>(count * dtype_bytes(dtype)));
  }
  void all_to_all(const void* send, void* recv, int64_t count, DType dtype) override {
    if (send != recv) std::memmove(recv, send, static_cast<size_t>(count * dtype_bytes(dtype)));
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_process_communicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

}  // namespace alpa::exec
