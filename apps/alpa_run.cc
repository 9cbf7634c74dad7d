// alpa-run: trains a model. Argument handling only; the work is in executor/ and planner/.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "executor/runtime/data.h"
#include "executor/runtime/npy.h"
#include "executor/runtime/trainer.h"
#include "planner/autodiff/training_graph.h"
#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/graph/rebatch.h"
#include "planner/onnx/import.h"

namespace {

struct Flags {
  std::string model, plan, data = "synthetic", optimizer = "sgd", metrics, save_params, precision = "fp32";
  int64_t steps = 10, batch = 0, microbatches = 1;
  double lr = 0.01, momentum = 0.0, weight_decay = 0.0;
  uint64_t seed = 0;
};

std::string file_name_for(const std::string& tensor) {
  std::string out = tensor;
  for (char& c : out) {
    if (c == '/' || c == '\\' || c == ':') c = '_';
  }
  return out + ".npy";
}

void save_params(const std::string& dir, const alpa::exec::Trainer& trainer) {
  std::filesystem::create_directories(dir);
  const alpa::Graph& g = trainer.training_graph().graph;
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    const alpa::Tensor& tensor = g.tensor(static_cast<alpa::TensorId>(t));
    if (tensor.role != alpa::TensorRole::kParameter && tensor.role != alpa::TensorRole::kBuffer) continue;
    alpa::exec::write_npy((std::filesystem::path(dir) / file_name_for(tensor.name)).string(), tensor.dtype,
                          tensor.shape, trainer.value(static_cast<alpa::TensorId>(t)));
  }
}

int run(const Flags& f) {
  if (!f.plan.empty()) {
    throw alpa::UserError(f.plan, "--plan", "distributed plans are not supported by this build yet; "
                                            "run without --plan for single-device training");
  }
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
  for (size_t i = 0; k > 1 && i < model.graph.inputs.size(); ++i) {
    if (model.graph.input_batch_axes[i] != 0) {
      throw alpa::UserError("--microbatches", "input '" + model.graph.tensor(model.graph.inputs[i]).name + "'",
                            "microbatches split dim 0; this input has no batch in dim 0");
    }
  }
  // The training graph describes one microbatch: the batch split derived in the IR.
  const alpa::TrainingGraph tg = alpa::build_training_graph(
      alpa::rebatch(model.graph, model.batch, model.batch / k), opt);

  std::unique_ptr<alpa::exec::DataSource> data =
      f.data == "synthetic" ? alpa::exec::synthetic_data(model.graph, f.seed)
                            : alpa::exec::open_data_directory(f.data, model.graph);
  auto kernels = alpa::exec::make_cpu_kernels();
  alpa::exec::Trainer trainer(tg, *kernels, f.seed);

  std::ofstream metrics;
  if (!f.metrics.empty()) {
    metrics.open(f.metrics);
    if (!metrics) throw alpa::UserError(f.metrics, "--metrics", "cannot be written");
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  for (int64_t step = 0; step < f.steps; ++step) {
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
      char line[512];
      std::snprintf(line, sizeof line,
                    "{\"step\":%lld,\"loss\":%.9g,\"step_ms\":%.3f,\"samples_per_s\":%.3f,\"peak_bytes\":%lld}\n",
                    static_cast<long long>(step + 1), r.loss, ms, samples_per_s,
                    static_cast<long long>(r.peak_bytes));
      metrics << line << std::flush;
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
  if (!f.save_params.empty()) save_params(f.save_params, trainer);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"alpa-run: train a model on one device (plans and MPI ranks come with the planner)"};
  Flags f;
  app.add_option("--model", f.model, "ONNX model (as written by torch.onnx.export)")->required();
  app.add_option("--plan", f.plan, "execution plan from alpa-plan (not yet supported)");
  app.add_option("--steps", f.steps, "training steps")->check(CLI::PositiveNumber);
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
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
