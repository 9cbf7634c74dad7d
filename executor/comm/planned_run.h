// `mpirun -np N alpa-run --plan PLAN.json --model M.onnx ...`: each MPI rank is one device of
// the plan's mesh and trains its part of every step; rank 0 writes the metrics.
#pragma once

#include <cstdint>
#include <string>

namespace alpa::exec {

struct PlannedRunOptions {
  std::string plan, model, data = "synthetic", metrics, save_params, profile;
  std::string save;    // write a checkpoint here after the last step
  std::string resume;  // start from this checkpoint (its step, seed, parameters and optimizer state)
  std::string trace;   // write a Chrome trace of every rank's steps here
  std::string dump_tensors, dump_dir = "alpa_dump";  // tensors written as they are made (Trainer::set_dump)
  std::string optimizer;  // empty: the plan's
  int64_t steps = 10;  // the step count to reach (a resumed run continues from its checkpoint's)
  int64_t batch = 0;      // 0: the plan's global batch (anything else must equal it)
  double lr = 0.01, momentum = 0.0, weight_decay = 0.0;
  uint64_t seed = 0;
  bool seed_given = false;  // --seed was on the command line (a resumed run must not change it)
  bool allow_cluster_mismatch = false;  // run a plan made for another cluster on these ranks
};

// Initialises MPI, runs, finalises. Returns the process exit code: 0; 2 for bad input (the same
// message on every rank; a rank whose own input was fine says which rank failed). A failure
// during the steps ends every rank through MPI_Abort with exit code 2 (bad data) or 3.
int run_planned(const PlannedRunOptions& options, int* argc, char*** argv);

}  // namespace alpa::exec
