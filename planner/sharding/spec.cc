#include "planner/sharding/spec.h"

#include "planner/common/error.h"

namespace alpa {

std::string ShardingSpec::to_string() const {
  std::string out;
  for (DimSharding d : dims) {
    switch (d) {
      case DimSharding::kR: out += "R"; break;
      case DimSharding::kS0: out += "S0"; break;
      case DimSharding::kS1: out += "S1"; break;
      case DimSharding::kS01: out += "S01"; break;
    }
  }
  return out;
}

std::optional<ShardingSpec> ShardingSpec::parse(const std::string& text, size_t rank) {
  ShardingSpec spec;
  bool axis0 = false, axis1 = false;
  for (size_t i = 0; i < text.size();) {
    if (text[i] == 'R') {
      spec.dims.push_back(DimSharding::kR);
      ++i;
    } else if (text.compare(i, 3, "S01") == 0) {
      if (axis0 || axis1) return std::nullopt;
      axis0 = axis1 = true;
      spec.dims.push_back(DimSharding::kS01);
      i += 3;
    } else if (text.compare(i, 2, "S0") == 0) {
      if (axis0) return std::nullopt;
      axis0 = true;
      spec.dims.push_back(DimSharding::kS0);
      i += 2;
    } else if (text.compare(i, 2, "S1") == 0) {
      if (axis1) return std::nullopt;
      axis1 = true;
      spec.dims.push_back(DimSharding::kS1);
      i += 2;
    } else {
      return std::nullopt;
    }
  }
  if (spec.dims.size() != rank) return std::nullopt;
  return spec;
}

int64_t ShardingSpec::ways(size_t dim, const LogicalMesh& mesh) const {
  switch (dims.at(dim)) {
    case DimSharding::kR: return 1;
    case DimSharding::kS0: return mesh.d0;
    case DimSharding::kS1: return mesh.d1;
    case DimSharding::kS01: return mesh.d0 * mesh.d1;
  }
  return 1;
}

Shape ShardingSpec::local_shape(const Shape& global, const LogicalMesh& mesh) const {
  ALPA_CHECK(global.size() == dims.size(), "spec rank differs from the tensor's");
  Shape local(global.size());
  for (size_t d = 0; d < global.size(); ++d) {
    const int64_t w = ways(d, mesh);
    local[d] = (global[d] + w - 1) / w;
  }
  return local;
}

bool ShardingSpec::divides(const Shape& global, const LogicalMesh& mesh) const {
  for (size_t d = 0; d < global.size(); ++d) {
    if (global[d] % ways(d, mesh) != 0) return false;
  }
  return true;
}

}  // namespace alpa
