#include "planner/graph/const_eval.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "planner/common/error.h"

namespace alpa {

int64_t saturating_int(double v) {
  if (std::isnan(v)) return 0;
  if (v >= 9.2e18) return std::numeric_limits<int64_t>::max();
  if (v <= -9.2e18) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

namespace {

ConstArray make(DType dtype, const Shape& shape) {
  ConstArray a;
  a.dtype = dtype;
  a.shape = shape;
  if (is_floating(dtype)) a.floats.assign(num_elements(shape), 0.0);
  else a.ints.assign(num_elements(shape), 0);
  return a;
}

void put(ConstArray& a, int64_t i, double f, int64_t n, bool from_float) {
  if (is_floating(a.dtype)) a.floats[i] = from_float ? f : static_cast<double>(n);
  else if (a.dtype == DType::kBool) a.ints[i] = from_float ? (f != 0.0) : (n != 0);
  else a.ints[i] = from_float ? saturating_int(f) : n;
}

// Copies element `src_i` of `src` into element `dst_i` of `dst` (same category).
void copy_elem(const ConstArray& src, int64_t src_i, ConstArray& dst, int64_t dst_i) {
  if (is_floating(src.dtype)) put(dst, dst_i, src.floats[src_i], 0, true);
  else put(dst, dst_i, 0.0, src.ints[src_i], false);
}

std::vector<int64_t> strides_of(const Shape& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; --d) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

// Calls f(output flat index, multi-index) for every element of `shape`.
void for_each_index(const Shape& shape, const std::function<void(int64_t, const std::vector<int64_t>&)>& f) {
  const int64_t n = num_elements(shape);
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t flat = 0; flat < n; ++flat) {
    f(flat, idx);
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

// Flat offset in `in` (broadcast to `out_shape`) of output multi-index `idx`.
int64_t broadcast_offset(const Shape& in, const Shape& out_shape, const std::vector<int64_t>& idx) {
  const auto strides = strides_of(in);
  const size_t lead = out_shape.size() - in.size();
  int64_t off = 0;
  for (size_t d = 0; d < in.size(); ++d) {
    if (in[d] != 1) off += idx[d + lead] * strides[d];
  }
  return off;
}

std::optional<ConstArray> elementwise(const Node& node, const std::vector<ConstArray>& in,
                                      const TensorType& out_type) {
  ConstArray out = make(out_type.dtype, out_type.shape);
  const bool fl = is_floating(in[0].dtype);
  bool supported = true;
  for_each_index(out.shape, [&](int64_t flat, const std::vector<int64_t>& idx) {
    auto arg = [&](size_t k) { return broadcast_offset(in[k].shape, out.shape, idx); };
    switch (node.kind) {
      case OpKind::kAdd: case OpKind::kSub: case OpKind::kMul: case OpKind::kDiv:
      case OpKind::kPow: {
        const int64_t a = arg(0), b = arg(1);
        if (fl) {
          const double x = in[0].floats[a], y = in[1].as_double(b);
          const double r = node.kind == OpKind::kAdd   ? x + y
                           : node.kind == OpKind::kSub ? x - y
                           : node.kind == OpKind::kMul ? x * y
                           : node.kind == OpKind::kDiv ? x / y
                                                       : std::pow(x, y);
          put(out, flat, r, 0, true);
        } else {
          const int64_t x = in[0].ints[a], y = in[1].as_int(b);
          int64_t r = 0;
          if (node.kind == OpKind::kAdd) r = x + y;
          else if (node.kind == OpKind::kSub) r = x - y;
          else if (node.kind == OpKind::kMul) r = x * y;
          else if (node.kind == OpKind::kDiv) r = y == 0 ? 0 : x / y;
          else r = saturating_int(std::pow(static_cast<double>(x), static_cast<double>(y)));
          put(out, flat, 0.0, r, false);
        }
        break;
      }
      case OpKind::kEqual: case OpKind::kLess: case OpKind::kGreater: {
        const double x = in[0].as_double(arg(0)), y = in[1].as_double(arg(1));
        const bool r = node.kind == OpKind::kEqual ? x == y : node.kind == OpKind::kLess ? x < y : x > y;
        put(out, flat, 0.0, r ? 1 : 0, false);
        break;
      }
      case OpKind::kNot:
        put(out, flat, 0.0, in[0].ints[arg(0)] == 0 ? 1 : 0, false);
        break;
      case OpKind::kWhere: {
        const int64_t pick = in[0].ints[arg(0)] != 0 ? 1 : 2;
        copy_elem(in[pick], arg(pick), out, flat);
        break;
      }
      case OpKind::kCast: {
        const int64_t a = arg(0);
        if (fl) put(out, flat, in[0].floats[a], 0, true);
        else put(out, flat, 0.0, in[0].ints[a], false);
        break;
      }
      case OpKind::kSqrt: case OpKind::kNeg: case OpKind::kExp: case OpKind::kLog: {
        const double x = in[0].as_double(arg(0));
        const double r = node.kind == OpKind::kSqrt  ? std::sqrt(x)
                         : node.kind == OpKind::kNeg ? -x
                         : node.kind == OpKind::kExp ? std::exp(x)
                                                     : std::log(x);
        if (fl) put(out, flat, r, 0, true);
        else if (node.kind == OpKind::kNeg) put(out, flat, 0.0, -in[0].ints[arg(0)], false);
        else supported = false;
        break;
      }
      default:
        supported = false;
    }
  });
  if (!supported) return std::nullopt;
  return out;
}

// Ops that only rearrange elements: out[flat] = in[source(flat)].
ConstArray gather_elements(const ConstArray& in, const TensorType& type,
                           const std::function<int64_t(const std::vector<int64_t>&)>& source) {
  ConstArray out = make(type.dtype, type.shape);
  for_each_index(out.shape, [&](int64_t flat, const std::vector<int64_t>& idx) {
    copy_elem(in, source(idx), out, flat);
  });
  return out;
}

std::optional<ConstArray> layout(const Node& node, const std::vector<ConstArray>& in,
                                 const TensorType& type) {
  const ConstArray& x = in[0];
  const auto xs = strides_of(x.shape);
  switch (node.kind) {
    case OpKind::kReshape: case OpKind::kFlatten: case OpKind::kSqueeze:
    case OpKind::kUnsqueeze: case OpKind::kIdentity: {
      ConstArray out = x;
      out.shape = type.shape;
      return out;
    }
    case OpKind::kExpand:
      return gather_elements(x, type, [&](const std::vector<int64_t>& idx) {
        return broadcast_offset(x.shape, type.shape, idx);
      });
    case OpKind::kTranspose: {
      const auto& perm = node.attrs.get_ints("perm");
      return gather_elements(x, type, [&](const std::vector<int64_t>& idx) {
        int64_t off = 0;
        for (size_t d = 0; d < perm.size(); ++d) off += idx[d] * xs[perm[d]];
        return off;
      });
    }
    case OpKind::kSlice: {
      const auto ranges = resolve_slice(x.shape, node.attrs);
      return gather_elements(x, type, [&](const std::vector<int64_t>& idx) {
        int64_t off = 0;
        for (size_t d = 0; d < idx.size(); ++d) off += (ranges[d].start + idx[d] * ranges[d].step) * xs[d];
        return off;
      });
    }
    case OpKind::kGather: {
      const int64_t axis = normalize_axis(node.attrs.get_int("axis", 0), x.shape.size());
      const ConstArray& indices = in[1];
      const auto is = strides_of(indices.shape);
      const size_t ir = indices.shape.size();
      return gather_elements(x, type, [&](const std::vector<int64_t>& idx) {
        int64_t ioff = 0;
        for (size_t d = 0; d < ir; ++d) ioff += idx[axis + d] * is[d];
        int64_t i = indices.ints[ioff];
        if (i < 0) i += x.shape[axis];
        if (i < 0 || i >= x.shape[axis]) throw ShapeError("gather index " + std::to_string(i) + " out of range");
        int64_t off = i * xs[axis];
        for (int64_t d = 0; d < axis; ++d) off += idx[d] * xs[d];
        for (size_t d = axis + 1; d < x.shape.size(); ++d) off += idx[d + ir - 1] * xs[d];
        return off;
      });
    }
    case OpKind::kConcat: {
      const int64_t axis = normalize_axis(node.attrs.get_int("axis"), x.shape.size());
      ConstArray out = make(type.dtype, type.shape);
      for_each_index(out.shape, [&](int64_t flat, const std::vector<int64_t>& idx) {
        int64_t pos = idx[axis];
        size_t k = 0;
        while (pos >= in[k].shape[axis]) pos -= in[k++].shape[axis];
        const auto ks = strides_of(in[k].shape);
        int64_t off = 0;
        for (size_t d = 0; d < idx.size(); ++d) off += (static_cast<int64_t>(d) == axis ? pos : idx[d]) * ks[d];
        copy_elem(in[k], off, out, flat);
      });
      return out;
    }
    default:
      return std::nullopt;
  }
}

std::optional<ConstArray> source(const Node& node, const TensorType& type) {
  ConstArray out = make(type.dtype, type.shape);
  if (node.kind == OpKind::kConstantOfShape) {
    const double v = node.attrs.get_float("value", 0.0);
    for (int64_t i = 0; i < out.size(); ++i) put(out, i, v, saturating_int(v), true);
    return out;
  }
  if (node.kind == OpKind::kRange) {
    const double start = node.attrs.get_float("start"), delta = node.attrs.get_float("delta");
    for (int64_t i = 0; i < out.size(); ++i) {
      const double v = start + static_cast<double>(i) * delta;
      put(out, i, v, saturating_int(std::round(v)), true);
    }
    return out;
  }
  return std::nullopt;
}

template <typename T>
void decode(const std::vector<uint8_t>& bytes, int64_t n, std::vector<int64_t>* ints,
            std::vector<double>* floats) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, bytes.data() + i * sizeof(T), sizeof(T));
    if (ints) ints->push_back(static_cast<int64_t>(v));
    else floats->push_back(static_cast<double>(v));
  }
}

template <typename T>
void encode(const std::vector<int64_t>* ints, const std::vector<double>* floats, int64_t n,
            std::vector<uint8_t>& bytes) {
  bytes.resize(n * sizeof(T));
  for (int64_t i = 0; i < n; ++i) {
    const T v = ints ? static_cast<T>((*ints)[i]) : static_cast<T>((*floats)[i]);
    std::memcpy(bytes.data() + i * sizeof(T), &v, sizeof(T));
  }
}

}  // namespace

double ConstArray::as_double(int64_t i) const {
  return is_floating(dtype) ? floats[i] : static_cast<double>(ints[i]);
}
int64_t ConstArray::as_int(int64_t i) const {
  return is_floating(dtype) ? saturating_int(floats[i]) : ints[i];
}

namespace {
double half_value(uint16_t h, DType dtype);
}  // namespace

ConstArray array_from_tensor(const Tensor& tensor) {
  ALPA_CHECK(tensor.has_data(), "constant '" + tensor.name + "' has no data");
  ConstArray a;
  a.dtype = tensor.dtype;
  a.shape = tensor.shape;
  const int64_t n = tensor.numel();
  ALPA_CHECK(static_cast<int64_t>(tensor.data->size()) == n * dtype_bytes(tensor.dtype),
             "constant '" + tensor.name + "' has the wrong byte size");
  const auto& b = *tensor.data;
  switch (tensor.dtype) {
    case DType::kFloat32: decode<float>(b, n, nullptr, &a.floats); break;
    case DType::kFloat64: decode<double>(b, n, nullptr, &a.floats); break;
    case DType::kInt64: decode<int64_t>(b, n, &a.ints, nullptr); break;
    case DType::kInt32: decode<int32_t>(b, n, &a.ints, nullptr); break;
    case DType::kInt8: decode<int8_t>(b, n, &a.ints, nullptr); break;
    case DType::kUInt8: case DType::kBool: decode<uint8_t>(b, n, &a.ints, nullptr); break;
    case DType::kFloat16: case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, b.data() + 2 * i, 2);
        a.floats.push_back(half_value(h, tensor.dtype));
      }
      break;
  }
  return a;
}

namespace {

// float → IEEE binary16 / bfloat16 bits, round to nearest even.
uint16_t half_bits(double value, DType dtype) {
  const float f = static_cast<float>(value);
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if (dtype == DType::kBFloat16) {
    if (std::isnan(f)) return 0x7FC0;
    return static_cast<uint16_t>((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
  }
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7E00;
  if (a >= 65520.0f) return sign | 0x7C00;
  if (a < 6.103515625e-05f) {  // subnormal: multiples of 2^-24
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m · 2^e, m in [0.5, 1)
  uint32_t mant = static_cast<uint32_t>(std::nearbyint((2.0f * m - 1.0f) * 1024.0f));
  uint32_t biased = static_cast<uint32_t>(e - 1 + 15);
  if (mant == 1024) {
    mant = 0;
    ++biased;
  }
  return static_cast<uint16_t>(sign | (biased << 10) | mant);
}

double half_value(uint16_t h, DType dtype) {
  if (dtype == DType::kBFloat16) {
    const uint32_t x = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  const int exponent = (h >> 10) & 0x1F;
  const int mantissa = h & 0x3FF;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31) return mantissa ? std::nan("") : sign * HUGE_VAL;
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

}  // namespace

std::shared_ptr<const std::vector<uint8_t>> array_to_bytes(const ConstArray& a) {
  auto bytes = std::make_shared<std::vector<uint8_t>>();
  const int64_t n = a.size();
  const auto* ints = is_floating(a.dtype) ? nullptr : &a.ints;
  const auto* floats = is_floating(a.dtype) ? &a.floats : nullptr;
  switch (a.dtype) {
    case DType::kFloat32: encode<float>(ints, floats, n, *bytes); break;
    case DType::kFloat64: encode<double>(ints, floats, n, *bytes); break;
    case DType::kInt64: encode<int64_t>(ints, floats, n, *bytes); break;
    case DType::kInt32: encode<int32_t>(ints, floats, n, *bytes); break;
    case DType::kInt8: encode<int8_t>(ints, floats, n, *bytes); break;
    case DType::kUInt8: case DType::kBool: encode<uint8_t>(ints, floats, n, *bytes); break;
    case DType::kFloat16: case DType::kBFloat16:
      bytes->resize(static_cast<size_t>(n) * 2);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = half_bits(a.floats[i], a.dtype);
        std::memcpy(bytes->data() + 2 * i, &h, 2);
      }
      break;
  }
  return bytes;
}

std::optional<std::vector<ConstArray>> evaluate_constant(const Node& node,
                                                         const std::vector<ConstArray>& inputs,
                                                         const std::vector<TensorType>& outputs) {
  if (outputs.size() != 1) return std::nullopt;
  for (const auto& in : inputs) {
    if (in.dtype == DType::kFloat16 || in.dtype == DType::kBFloat16) return std::nullopt;
  }
  if (outputs[0].dtype == DType::kFloat16 || outputs[0].dtype == DType::kBFloat16) return std::nullopt;
  std::optional<ConstArray> out;
  switch (op_info(node.kind).family) {
    case OpFamily::kElementwise: out = elementwise(node, inputs, outputs[0]); break;
    case OpFamily::kLayout: case OpFamily::kGather: out = layout(node, inputs, outputs[0]); break;
    case OpFamily::kSource: out = source(node, outputs[0]); break;
    default: break;
  }
  if (!out) return std::nullopt;
  return std::vector<ConstArray>{std::move(*out)};
}

}  // namespace alpa
