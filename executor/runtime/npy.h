// NumPy .npy files (format 1.0/2.0, C order): the executor's data and parameter format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/graph/dtype.h"
#include "planner/graph/graph.h"

namespace alpa::exec {

struct NpyArray {
  DType dtype = DType::kFloat32;
  Shape shape;
  std::vector<uint8_t> data;  // little-endian, C order
};

// Throws UserError naming the file for anything malformed (bad magic, Fortran order,
// unsupported dtype, truncated data).
NpyArray read_npy(const std::string& path);
void write_npy(const std::string& path, DType dtype, const Shape& shape, const void* data);
// "<tensor>.npy" with '/', '\\' and ':' replaced by '_' (what --save-params writes).
std::string npy_file_name(const std::string& tensor);

}  // namespace alpa::exec
