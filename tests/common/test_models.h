// The models scripts/models/make_test_models.py exports (the `test_models` ctest fixture),
// imported once per test process at a given batch.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "planner/onnx/import.h"

namespace alpa::testing {

inline const Graph& test_model(const std::string& name, int64_t batch) {
  static std::map<std::string, std::unique_ptr<ImportedModel>> cache;
  auto& slot = cache[name + "@" + std::to_string(batch)];
  if (!slot) {
    ImportOptions io;
    io.batch = batch;
    slot = std::make_unique<ImportedModel>(import_onnx_file(std::string(ALPA_TEST_MODELS_DIR) + "/" + name + ".onnx", io));
  }
  return slot->graph;
}

}  // namespace alpa::testing
