// alpa-run: trains a model. Argument handling only; the work is in executor/ and planner/.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "executor/comm/planned_run.h"
#include "executor/runtime/checkpoint.h"
#include "executor/runtime/data.h"
#include "executor/runtime/trainer.h"
#include "planner/autodiff/training_graph.h"
#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/graph/rebatch.h"
#include "planner/onnx/import.h"

namespace {

// The options a planned run takes are the single-device run's too; these are the rest.
struct Flags : alpa::exec::PlannedRunOptions {
  Flags() { optimizer = "sgd"; }
  std::string precision = "fp32";
  int64_t microbatches = 1;
};

int run(const Flags& f) {
  if (f.precision != "fp32") {
    throw alpa::UserError("--precision", f.precision,
                          f.precision == "fp16" || f.precision == "bf16"
                              ? "the CPU backend runs fp32 only (half-precision training graphs are for planning GPU runs)"
                              : "expected fp32, fp16 or bf16");
  }
  alpa::ImportOptions import_options;
  if (f.batch > 0) import_options.batch = f.batch;
  const alpa::ImportedModel model = alpa::import_onnx_file(f.model, import_options);

  alpa::OptimizerConfig opt;
  opt.lr = f.lr;
  opt.momentum = f.momentum;
  opt.weight_decay = f.weight_decay;
  if (f.optimizer == "sgd") opt.kind = alpa::OptimizerKind::kSgd;
  else if (f.optimizer == "adam") opt.kind = alpa::OptimizerKind::kAdam;
  else if (f.optimizer == "adamw") opt.kind = alpa::OptimizerKind::kAdamW;
  else throw alpa::UserError("--optimizer", f.optimizer, "expected sgd, adam or adamw");
  const int64_t k = f.microbatches;
  if (k < 1 || model.batch % k != 0) {
    throw alpa::UserError("--microbatches", std::to_string(k),
                          "must divide the global batch " + std::to_string(model.batch));
  }
  const alpa::SoftmaxCrossEntropyTarget loss_target = alpa::exec::loss_target(model.graph, k);
  if (k > 1) {
    alpa::exec::require_batch_in_dim0(model.graph, "--microbatches", "microbatches split dim 0; this input has no batch in dim 0");
  }
  // The training graph describes one microbatch: the batch split derived in the IR.
  const alpa::TrainingGraph tg = alpa::build_training_graph(
      alpa::rebatch(model.graph, model.batch, model.batch / k), opt);

  uint64_t seed = f.seed;
  int64_t first_step = 0;
  if (!f.resume.empty()) {
    const auto info = alpa::exec::check_resume(f.resume, f.steps, model.batch, f.optimizer, f.seed_given ? &f.seed : nullptr);
    seed = info.seed;
    first_step = info.step;
  }
  std::unique_ptr<alpa::exec::DataSource> data =
      f.data == "synthetic" ? alpa::exec::synthetic_data(model.graph, seed)
                            : alpa::exec::open_data_directory(f.data, model.graph);
  auto kernels = alpa::exec::make_cpu_kernels();
  alpa::exec::Trainer trainer(tg, *kernels, seed);
  trainer.set_dump(f.dump_tensors, f.dump_dir + "/rank0");
  if (!f.resume.empty()) alpa::exec::load_checkpoint(f.resume, trainer, {});
  if (k > 1) {  // dropout masks keyed by global element index, as in the whole-batch step
    trainer.set_batch_dims(alpa::exec::training_batch_dims(tg, model.graph, model.batch), model.batch / k);
  }

  std::ofstream metrics;
  if (!f.metrics.empty()) {
    metrics.open(f.metrics);
    if (!metrics) throw alpa::UserError(f.metrics, "--metrics", "cannot be written");
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  for (int64_t step = first_step; step < f.steps; ++step) {
    const auto batch = data->batch(step);
    std::vector<std::vector<const void*>> micro(static_cast<size_t>(k));
    for (int64_t m = 0; m < k; ++m) {
      for (const auto& b : batch) micro[m].push_back(b.data() + static_cast<size_t>(m) * (b.size() / static_cast<size_t>(k)));
    }
    const double normalizer = k > 1 ? alpa::exec::count_labels(loss_target, model.graph, batch) : 0.0;
    const auto start = std::chrono::steady_clock::now();
    const alpa::exec::StepResult r = trainer.step_microbatches(micro, step, normalizer);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const double samples_per_s = static_cast<double>(model.batch) / (ms / 1000.0);
    if (metrics) {
      const nlohmann::ordered_json m = {{"step", step + 1}, {"loss", r.loss}, {"step_ms", ms},
                                        {"samples_per_s", samples_per_s}, {"peak_bytes", r.peak_bytes}};
      metrics << m.dump() << "\n" << std::flush;
    }
    const int width = 30;
    const int filled = static_cast<int>(width * (step + 1) / f.steps);
    std::fprintf(stderr, "%sstep %lld/%lld [%s%s] loss %.6f  %.1f ms  %.1f samples/s  peak %s%s",
                 tty ? "\r" : "", static_cast<long long>(step + 1), static_cast<long long>(f.steps),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), r.loss, ms,
                 samples_per_s, alpa::format_bytes(static_cast<double>(r.peak_bytes)).c_str(),
                 tty ? "" : "\n");
  }
  if (tty) std::fprintf(stderr, "\n");
  if (!f.save_params.empty()) alpa::exec::save_parameters(f.save_params, trainer);
  if (!f.save.empty()) alpa::exec::save_checkpoint(f.save, trainer, {f.steps, seed, f.optimizer, model.batch}, 0, {}, {});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"alpa-run: train a model on one device, or with --plan under mpirun on one rank per device of the plan"};
  Flags f;
  app.add_option("--model", f.model, "ONNX model (as written by torch.onnx.export)")->required();
  app.add_option("--plan", f.plan, "execution plan from alpa-plan: run under mpirun -np <devices of the plan>");
  app.add_flag("--allow-cluster-mismatch", f.allow_cluster_mismatch,
               "--plan: run a plan made for another cluster on these CPU ranks (only the devices' speed differs)");
  app.add_option("--profile", f.profile, "--plan: the profile the plan was searched with, if any");
  app.add_option("--steps", f.steps, "training steps (with --resume: the step count to reach)")->check(CLI::PositiveNumber);
  app.add_option("--data", f.data, "DIR with <input-name>.npy per model input, or 'synthetic'");
  app.add_option("--optimizer", f.optimizer, "sgd | adam | adamw");
  app.add_option("--lr", f.lr, "learning rate");
  app.add_option("--momentum", f.momentum, "SGD momentum");
  app.add_option("--weight-decay", f.weight_decay, "weight decay (L2 for sgd/adam, decoupled for adamw)");
  app.add_option("--batch", f.batch, "global batch (binds the model's batch dim)")->check(CLI::PositiveNumber);
  app.add_option("--microbatches", f.microbatches,
                 "gradient accumulation: K microbatches per step, one optimizer update");
  app.add_option("--precision", f.precision, "fp32 | fp16 | bf16 (the CPU backend runs fp32)");
  app.add_option("--seed", f.seed, "seed for dropout masks, shape-only parameters, synthetic data");
  app.add_option("--metrics", f.metrics, "write JSON Lines metrics, one object per step");
  app.add_option("--save-params", f.save_params, "after the last step, write every parameter and buffer as DIR/<name>.npy");
  app.add_option("--save", f.save, "after the last step, write a checkpoint to DIR (parameters, buffers, optimizer state, step)");
  app.add_option("--dump-tensors", f.dump_tensors,
                 "write every tensor whose name matches this regex as it is made: DIR/rank<r>/s<step>_m<microbatch>_<name>.npy");
  app.add_option("--dump-dir", f.dump_dir, "where --dump-tensors writes (default alpa_dump)");
  app.add_option("--trace", f.trace, "--plan: write a Chrome trace (Perfetto, chrome://tracing) of the steps, one track per rank");
  app.add_option("--resume", f.resume, "start from the checkpoint in DIR (written by --save under any plan) and train to --steps");
  try {
    app.parse(argc, argv);
    f.seed_given = app.count("--seed") > 0;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (!f.plan.empty()) {
    if (app.count("--microbatches") > 0 || f.precision != "fp32") {
      std::fprintf(stderr, "alpa-run: error: --microbatches and --precision come from the plan with --plan\n");
      return 2;
    }
    alpa::exec::PlannedRunOptions o = f;
    if (app.count("--optimizer") == 0) o.optimizer.clear();  // the plan's
    try {
      return alpa::exec::run_planned(o, &argc, &argv);
    } catch (const std::exception& e) {  // MPI itself failed to start
      std::fprintf(stderr, "alpa-run: %s\n", e.what());
      return 3;
    }
  }
  try {
    return run(f);
  } catch (const alpa::UserError& e) {
    std::fprintf(stderr, "alpa-run: error: %s\n", e.what());
    return 2;
  } catch (const alpa::InternalError& e) {
    std::fprintf(stderr, "alpa-run: %s\n", e.what());
    return 3;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "alpa-run: error: out of memory\n");
    return 3;
  }
}
