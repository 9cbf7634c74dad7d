// Communicator over MPI, one rank per CPU device. mpi.h stays out of this header: the MPI_Comm
// lives behind an opaque handle, so code that only uses the Communicator interface needs no MPI
// include paths.
//
// Byte counters follow the ring-algorithm convention of planner/cost/collective.cc
// (collective_bytes_per_device), B being the bytes named below, n the communicator size:
//   all-reduce      2(n−1)/n · B   B = the reduced buffer
//   all-gather       (n−1)/n · B   B = the gathered (output) buffer
//   reduce-scatter   (n−1)/n · B   B = the input buffer
//   all-to-all       (n−1)/n · B   B = the local send buffer
//   send             B             B = the message (recv counts nothing)
// Each call's count is rounded to the nearest byte. A size-1 communicator counts 0.
#pragma once

#include <cstdint>
#include <memory>

#include "executor/backend/communicator.h"

namespace alpa::exec {

// MPI_Init_thread with MPI_THREAD_FUNNELED (only the main thread calls MPI), and MPI_Finalize.
// Failures throw alpa::InternalError.
void init_mpi(int* argc, char*** argv);
void finalize_mpi();
// Ends every rank of the job (MPI_Abort on MPI_COMM_WORLD) with exit code `code`.
[[noreturn]] void abort_mpi(int code);

class MpiCommunicator : public Communicator {
 public:
  struct Handle;  // owns an MPI_Comm; defined in mpi_communicator.cc
  explicit MpiCommunicator(std::unique_ptr<Handle> handle);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(void* data, int64_t count, DType dtype) override;
  void all_reduce_max(void* data, int64_t count, DType dtype) override;
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override;
  void reduce_scatter_sum(const void* send, void* recv, int64_t count, DType dtype) override;
  void all_to_all(const void* send, void* recv, int64_t count, DType dtype) override;

  // Blocking point-to-point (for pipeline stages). `tag` must match between the pair.
  void send(const void* data, int64_t count, DType dtype, int dst, int tag);
  void recv(void* data, int64_t count, DType dtype, int src, int tag);
  // Non-blocking send of a copy of `data` (counted as a send): the caller goes on at once, so
  // two pipeline stages sending to each other never wait on each other. wait_sends() completes
  // every pending one.
  void isend(const void* data, int64_t count, DType dtype, int dst, int tag);
  void wait_sends();

  // Collective over this communicator: ranks passing equal `color` form one sub-communicator,
  // ordered by `key` (ties by rank here). Used for the groups along one logical mesh axis.
  std::unique_ptr<MpiCommunicator> split(int color, int key) const;

 private:
  std::unique_ptr<Handle> handle_;
  int rank_ = 0;
  int size_ = 1;
};

// A duplicate of MPI_COMM_WORLD (errors returned, not fatal). Requires init_mpi.
std::unique_ptr<MpiCommunicator> make_mpi_world_communicator();

inline std::unique_ptr<MpiCommunicator> split(const MpiCommunicator& parent, int color, int key) {
  return parent.split(color, key);
}

}  // namespace alpa::exec
