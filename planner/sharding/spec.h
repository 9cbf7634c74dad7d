// Sharding specs: per tensor dim R (replicated), S0 / S1 (split along logical mesh axis 0 / 1)
// or S01 (split along both, axis 0 major), printed like "S0R", "RS1", "S01R".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "planner/cluster/mesh.h"
#include "planner/graph/graph.h"

namespace alpa {

enum class DimSharding : uint8_t { kR, kS0, kS1, kS01 };

struct ShardingSpec {
  std::vector<DimSharding> dims;
  bool operator==(const ShardingSpec&) const = default;

  std::string to_string() const;
  // nullopt when the text is malformed, its rank differs, or a mesh axis is used twice.
  static std::optional<ShardingSpec> parse(const std::string& text, size_t rank);
  static ShardingSpec replicated(size_t rank) { return {std::vector<DimSharding>(rank, DimSharding::kR)}; }

  // Devices a dim is split over on `mesh`.
  int64_t ways(size_t dim, const LogicalMesh& mesh) const;
  // Per-device shape; a dim its ways do not divide is padded up to the next multiple.
  Shape local_shape(const Shape& global, const LogicalMesh& mesh) const;
  // Whether every split dim is divisible (no padding needed).
  bool divides(const Shape& global, const LogicalMesh& mesh) const;
};

}  // namespace alpa
