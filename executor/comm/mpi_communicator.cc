#include "executor/comm/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cmath>
#include <deque>
#include <string>
#include <vector>

#include "planner/common/error.h"

namespace alpa::exec {

struct MpiCommunicator::Handle {
  MPI_Comm comm = MPI_COMM_NULL;
  std::vector<MPI_Request> pending;           // isend requests
  std::deque<std::vector<char>> pending_data;  // and their copies of the data
};

namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

// Turns an MPI return code into alpa::InternalError carrying the caller's file:line.
#define ALPA_MPI_CHECK(call)                                                            \
  do {                                                                                  \
    const int alpa_mpi_rc = (call);                                                     \
    ALPA_CHECK(alpa_mpi_rc == MPI_SUCCESS, std::string(#call) + ": " + mpi_error_text(alpa_mpi_rc)); \
  } while (0)

// Bool moves as one byte holding 0 or 1: it is gathered, scattered and sent like uint8, and
// its maximum over ranks is the logical or. Half precision has no MPI type here (the CPU
// backend runs fp32).
MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return MPI_FLOAT;
    case DType::kFloat64: return MPI_DOUBLE;
    case DType::kInt64: return MPI_INT64_T;
    case DType::kInt32: return MPI_INT32_T;
    case DType::kInt8: return MPI_INT8_T;
    case DType::kUInt8: return MPI_UINT8_T;
    case DType::kBool: return MPI_UINT8_T;
    default: break;
  }
  ALPA_CHECK(false, "MPI communicator: no MPI type for dtype " + std::string(dtype_name(dtype)) +
                        " (CPU runs use float32/float64/int64/int32/int8/uint8/bool)");
  return MPI_DATATYPE_NULL;
}

// A sum of bools is not a bool: partial sums never come out as bool, so asking is a broken
// invariant rather than something to round.
MPI_Datatype mpi_sum_type(DType dtype) {
  ALPA_CHECK(dtype != DType::kBool, "MPI communicator: a sum over ranks of bool tensors is undefined");
  return mpi_type(dtype);
}

int mpi_count(int64_t count) {
  ALPA_CHECK(count >= 0 && count <= INT_MAX,
             "MPI communicator: element count " + std::to_string(count) + " does not fit an int");
  return static_cast<int>(count);
}

// Messages longer than this are sent in pieces (all-reduce, send/recv) so int counts suffice.
constexpr int64_t kMaxChunk = INT_MAX;

// Same expression as planner/cost/collective.cc collective_bytes_per_device, rounded to bytes.
int64_t ring_bytes(double factor, int n, int64_t bytes) {
  if (n <= 1) return 0;
  const double dn = static_cast<double>(n);
  return std::llround(factor * (dn - 1) / dn * static_cast<double>(bytes));
}

}  // namespace

void init_mpi(int* argc, char*** argv) {
  int provided = MPI_THREAD_SINGLE;
  ALPA_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  ALPA_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI does not provide MPI_THREAD_FUNNELED");
  ALPA_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

void finalize_mpi() { ALPA_MPI_CHECK(MPI_Finalize()); }

void abort_mpi(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; if it did, do not run destructors mid-collective
}

MpiCommunicator::MpiCommunicator(std::unique_ptr<Handle> handle) : handle_(std::move(handle)) {
  ALPA_CHECK(handle_ && handle_->comm != MPI_COMM_NULL, "MpiCommunicator: null communicator");
  ALPA_MPI_CHECK(MPI_Comm_set_errhandler(handle_->comm, MPI_ERRORS_RETURN));
  ALPA_MPI_CHECK(MPI_Comm_rank(handle_->comm, &rank_));
  ALPA_MPI_CHECK(MPI_Comm_size(handle_->comm, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After MPI_Finalize the communicator is gone with the rest of MPI's state.
  if (!finalized && !handle_->pending.empty()) {
    MPI_Waitall(static_cast<int>(handle_->pending.size()), handle_->pending.data(), MPI_STATUSES_IGNORE);
  }
  if (!finalized && handle_->comm != MPI_COMM_NULL) MPI_Comm_free(&handle_->comm);
}

namespace {

// In-place all-reduce with `op`, in chunks MPI's int counts can address.
void all_reduce_in_place(void* data, int64_t count, DType dtype, MPI_Op op, MPI_Comm comm) {
  const MPI_Datatype type = mpi_type(dtype);
  const int64_t elem = dtype_bytes(dtype);
  auto* bytes = static_cast<char*>(data);
  for (int64_t done = 0; done < count; done += kMaxChunk) {
    const int64_t n = std::min(kMaxChunk, count - done);
    ALPA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, bytes + done * elem, static_cast<int>(n), type, op, comm));
  }
}

}  // namespace

void MpiCommunicator::all_reduce_max(void* data, int64_t count, DType dtype) {
  all_reduce_in_place(data, count, dtype, MPI_MAX, handle_->comm);
  this->count(CollectiveKind::kAllReduce, ring_bytes(2, size_, count * dtype_bytes(dtype)));
}

void MpiCommunicator::all_reduce_sum(void* data, int64_t count, DType dtype) {
  mpi_sum_type(dtype);
  all_reduce_in_place(data, count, dtype, MPI_SUM, handle_->comm);
  this->count(CollectiveKind::kAllReduce, ring_bytes(2, size_, count * dtype_bytes(dtype)));
}

void MpiCommunicator::all_gather(const void* send, void* recv, int64_t count, DType dtype) {
  const MPI_Datatype type = mpi_type(dtype);
  const int n = mpi_count(count);
  mpi_count(count * size_);  // the gathered buffer's size must fit too
  ALPA_MPI_CHECK(MPI_Allgather(send, n, type, recv, n, type, handle_->comm));
  this->count(CollectiveKind::kAllGather, ring_bytes(1, size_, count * size_ * dtype_bytes(dtype)));
}

void MpiCommunicator::reduce_scatter_sum(const void* send, void* recv, int64_t count, DType dtype) {
  const MPI_Datatype type = mpi_sum_type(dtype);
  const int n = mpi_count(count);
  mpi_count(count * size_);
  ALPA_MPI_CHECK(MPI_Reduce_scatter_block(send, recv, n, type, MPI_SUM, handle_->comm));
  this->count(CollectiveKind::kReduceScatter, ring_bytes(1, size_, count * size_ * dtype_bytes(dtype)));
}

void MpiCommunicator::all_to_all(const void* send, void* recv, int64_t count, DType dtype) {
  const MPI_Datatype type = mpi_type(dtype);
  const int n = mpi_count(count);
  mpi_count(count * size_);
  ALPA_MPI_CHECK(MPI_Alltoall(send, n, type, recv, n, type, handle_->comm));
  this->count(CollectiveKind::kAllToAll, ring_bytes(1, size_, count * size_ * dtype_bytes(dtype)));
}

void MpiCommunicator::send(const void* data, int64_t count, DType dtype, int dst, int tag) {
  const MPI_Datatype type = mpi_type(dtype);
  const int64_t elem = dtype_bytes(dtype);
  const auto* bytes = static_cast<const char*>(data);
  int64_t done = 0;
  do {  // at least one message, so a zero-length send still matches a zero-length recv
    const int64_t n = std::min(kMaxChunk, count - done);
    ALPA_MPI_CHECK(MPI_Send(bytes + done * elem, static_cast<int>(n), type, dst, tag, handle_->comm));
    done += n;
  } while (done < count);
  this->count(CollectiveKind::kSendRecv, count * elem);
}

void MpiCommunicator::recv(void* data, int64_t count, DType dtype, int src, int tag) {
  const MPI_Datatype type = mpi_type(dtype);
  const int64_t elem = dtype_bytes(dtype);
  auto* bytes = static_cast<char*>(data);
  int64_t done = 0;
  do {
    const int64_t n = std::min(kMaxChunk, count - done);
    MPI_Status status;
    ALPA_MPI_CHECK(MPI_Recv(bytes + done * elem, static_cast<int>(n), type, src, tag, handle_->comm,
                            &status));
    int got = 0;
    ALPA_MPI_CHECK(MPI_Get_count(&status, type, &got));
    ALPA_CHECK(got == n, "MpiCommunicator::recv: expected " + std::to_string(n) +
                             " elements from rank " + std::to_string(src) + ", got " +
                             std::to_string(got));
    done += n;
  } while (done < count);
}

void MpiCommunicator::isend(const void* data, int64_t count, DType dtype, int dst, int tag) {
  const MPI_Datatype type = mpi_type(dtype);
  const int64_t bytes = count * dtype_bytes(dtype);
  const auto* p = static_cast<const char*>(data);
  handle_->pending_data.emplace_back(p, p + bytes);
  MPI_Request request;
  ALPA_MPI_CHECK(MPI_Isend(handle_->pending_data.back().data(), mpi_count(count), type, dst, tag, handle_->comm, &request));
  handle_->pending.push_back(request);
  this->count(CollectiveKind::kSendRecv, bytes);
}

void MpiCommunicator::wait_sends() {
  if (handle_->pending.empty()) return;
  ALPA_MPI_CHECK(MPI_Waitall(static_cast<int>(handle_->pending.size()), handle_->pending.data(), MPI_STATUSES_IGNORE));
  handle_->pending.clear();
  handle_->pending_data.clear();
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, int key) const {
  auto handle = std::make_unique<Handle>();
  ALPA_MPI_CHECK(MPI_Comm_split(handle_->comm, color, key, &handle->comm));
  return std::make_unique<MpiCommunicator>(std::move(handle));
}

std::unique_ptr<MpiCommunicator> make_mpi_world_communicator() {
  int initialized = 0;
  ALPA_MPI_CHECK(MPI_Initialized(&initialized));
  ALPA_CHECK(initialized, "make_mpi_world_communicator: call init_mpi first");
  auto handle = std::make_unique<MpiCommunicator::Handle>();
  ALPA_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &handle->comm));
  return std::make_unique<MpiCommunicator>(std::move(handle));
}

}  // namespace alpa::exec
