#include "executor/runtime/npy.h"

#include <cstring>
#include <fstream>
#include <regex>

#include "planner/common/error.h"

namespace alpa::exec {
namespace {

std::string descr_of(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "<f4";
    case DType::kFloat64: return "<f8";
    case DType::kFloat16: return "<f2";
    case DType::kInt64: return "<i8";
    case DType::kInt32: return "<i4";
    case DType::kInt8: return "|i1";
    case DType::kUInt8: return "|u1";
    case DType::kBool: return "|b1";
    case DType::kBFloat16: return "<V2";
  }
  return "?";
}

}  // namespace

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path, "file", "cannot be opened");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    throw UserError(path, "header", "is not a NumPy .npy file");
  }
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint8_t b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) throw UserError(path, "header", "is truncated");
    header_len = b[0] | (b[1] << 8);
  } else {
    uint8_t b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) throw UserError(path, "header", "is truncated");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  if (header_len > (1u << 20)) throw UserError(path, "header", "is implausibly long");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) throw UserError(path, "header", "is truncated");

  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']*)'"))) {
    throw UserError(path, "header", "has no 'descr'");
  }
  const std::string descr = m[1];
  NpyArray a;
  bool known = false;
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt64, DType::kInt32, DType::kInt8,
                  DType::kUInt8, DType::kBool}) {
    if (descr == descr_of(d) || (descr.size() == 3 && descr[0] == '=' && descr.substr(1) == descr_of(d).substr(1))) {
      a.dtype = d;
      known = true;
    }
  }
  if (!known) throw UserError(path, "dtype", "'" + descr + "' is not supported (use float32, int64, ...)");
  if (std::regex_search(header, m, std::regex("'fortran_order':\\s*True"))) {
    throw UserError(path, "header", "Fortran order is not supported; save a C-contiguous array");
  }
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) {
    throw UserError(path, "header", "has no 'shape'");
  }
  const std::string dims = m[1];
  static const std::regex kNumber("\\d+");
  std::sregex_iterator it(dims.begin(), dims.end(), kNumber), end;
  for (; it != end; ++it) a.shape.push_back(std::stoll(it->str()));
  const auto n = checked_num_elements(a.shape);
  if (!n) throw UserError(path, "shape", "is too large");
  a.data.resize(static_cast<size_t>(*n * dtype_bytes(a.dtype)));
  if (!in.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(a.data.size()))) {
    throw UserError(path, "data", "is truncated (expected " + std::to_string(a.data.size()) + " bytes)");
  }
  return a;
}

void write_npy(const std::string& path, DType dtype, const Shape& shape, const void* data) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  std::string header = "{'descr': '" + descr_of(dtype) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  if (!out) throw UserError(path, "file", "cannot be written");
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(len & 0xFF));
  out.put(static_cast<char>(len >> 8));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), num_elements(shape) * dtype_bytes(dtype));
  if (!out) throw UserError(path, "file", "write failed");
}

std::string npy_file_name(const std::string& tensor) {
  std::string out = tensor;
  for (char& c : out) {
    if (c == '/' || c == '\\' || c == ':') c = '_';
  }
  return out + ".npy";
}

}  // namespace alpa::exec
