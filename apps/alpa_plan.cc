// alpa-plan: the offline planner's command line. Argument handling only; the work is in planner/.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "planner/common/error.h"
#include "planner/inspect/inspect.h"
#include "planner/onnx/import.h"

namespace {

struct ModelFlags {
  std::string model;
  int64_t batch = 0;
  std::vector<std::string> batch_dims;
  std::string trainable, frozen;
};

void add_model_flags(CLI::App* cmd, ModelFlags& f) {
  cmd->add_option("model", f.model, "ONNX model file (as written by torch.onnx.export)")->required();
  cmd->add_option("--batch", f.batch, "global batch size; binds the symbolic batch dim")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch-dim", f.batch_dims,
                  "NAME:AXIS — the batch axis of input NAME (default: axis 0 of every input)");
  cmd->add_option("--trainable", f.trainable, "regex: floating initializers forced trainable");
  cmd->add_option("--frozen", f.frozen, "regex: floating initializers forced frozen (buffers)");
}

alpa::ImportedModel load(const ModelFlags& f) {
  alpa::ImportOptions options;
  if (f.batch > 0) options.batch = f.batch;
  for (const auto& spec : f.batch_dims) options.batch_dims.push_back(alpa::parse_batch_dim(spec));
  options.trainable_regex = f.trainable;
  options.frozen_regex = f.frozen;
  return alpa::import_onnx_file(f.model, options);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"alpa-plan: search parallel execution plans for training a model on a cluster"};
  app.require_subcommand(1);

  ModelFlags inspect_flags;
  bool json = false;
  CLI::App* inspect = app.add_subcommand(
      "inspect", "parameters, FLOPs, memory and structure of a model's training iteration");
  add_model_flags(inspect, inspect_flags);
  inspect->add_flag("--json", json, "print JSON (schemas/inspect.schema.json)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  try {
    if (inspect->parsed()) {
      const alpa::ImportedModel model = load(inspect_flags);
      const alpa::InspectReport report = alpa::inspect_model(model);
      std::cout << (json ? alpa::format_report_json(report) : alpa::format_report_text(report));
    }
  } catch (const alpa::UserError& e) {
    std::fprintf(stderr, "alpa-plan: error: %s\n", e.what());
    return 2;
  } catch (const alpa::InternalError& e) {
    std::fprintf(stderr, "alpa-plan: %s\n", e.what());
    return 3;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "alpa-plan: error: out of memory\n");
    return 3;
  }
  return 0;
}
