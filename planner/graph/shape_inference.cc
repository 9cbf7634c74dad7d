#include "planner/graph/shape_inference.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "planner/common/format.h"

namespace alpa {
namespace {

using Types = std::vector<TensorType>;

[[noreturn]] void fail(const std::string& message) { throw ShapeError(message); }

void expect_inputs(const Types& in, size_t min, size_t max) {
  if (in.size() < min || in.size() > max) {
    fail("expects " + std::to_string(min) + (min == max ? "" : "-" + std::to_string(max)) +
         " inputs, got " + std::to_string(in.size()));
  }
}

void expect_same_dtype(const TensorType& a, const TensorType& b) {
  if (a.dtype != b.dtype) {
    fail("operand dtypes differ: " + std::string(dtype_name(a.dtype)) + " vs " +
         std::string(dtype_name(b.dtype)));
  }
}

Types outputs_like(const Node& node, TensorType first) {
  Types out(node.outputs.size(), first);
  return out;
}

Types infer_matmul(const Types& in) {
  Shape a = in[0].shape, b = in[1].shape;
  if (a.empty() || b.empty()) fail("MatMul operands must have rank >= 1");
  const bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  const int64_t k_a = a.back(), k_b = b[b.size() - 2];
  if (k_a != k_b) {
    fail("contraction dims differ: " + format_dims(in[0].shape) + " x " + format_dims(in[1].shape));
  }
  Shape batch = broadcast_shapes(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
  if (!a_vec) batch.push_back(a[a.size() - 2]);
  if (!b_vec) batch.push_back(b.back());
  return {{in[0].dtype, batch}};
}

Types infer_gemm(const Node& node, const Types& in) {
  expect_inputs(in, 2, 3);
  const Shape& a = in[0].shape;
  const Shape& b = in[1].shape;
  if (a.size() != 2 || b.size() != 2) fail("Gemm operands must be 2-D");
  const bool ta = node.attrs.get_int("transA", 0) != 0;
  const bool tb = node.attrs.get_int("transB", 0) != 0;
  const int64_t m = ta ? a[1] : a[0], k = ta ? a[0] : a[1];
  const int64_t kb = tb ? b[1] : b[0], n = tb ? b[0] : b[1];
  if (k != kb) fail("contraction dims differ: " + format_dims(a) + " x " + format_dims(b));
  Shape out = {m, n};
  if (in.size() == 3 && broadcast_shapes(out, in[2].shape) != out) {
    fail("bias " + format_dims(in[2].shape) + " does not broadcast to " + format_dims(out));
  }
  return {{in[0].dtype, out}};
}

Types infer_einsum(const Node& node, const Types& in) {
  const EinsumSpec spec = parse_einsum(node.attrs.get_string("equation"), in.size());
  std::map<char, int64_t> size;
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string& labels = spec.inputs[i];
    if (labels.size() != in[i].shape.size()) {
      fail("operand " + std::to_string(i) + " has rank " + std::to_string(in[i].shape.size()) +
           " but the equation names " + std::to_string(labels.size()) + " dims");
    }
    for (size_t d = 0; d < labels.size(); ++d) {
      auto [it, inserted] = size.emplace(labels[d], in[i].shape[d]);
      if (!inserted && it->second != in[i].shape[d]) {
        if (it->second == 1) {
          it->second = in[i].shape[d];
        } else if (in[i].shape[d] != 1) {
          fail(std::string("label '") + labels[d] + "' has sizes " + std::to_string(it->second) +
               " and " + std::to_string(in[i].shape[d]));
        }
      }
    }
  }
  Shape out;
  for (char c : spec.output) out.push_back(size.at(c));
  return {{in[0].dtype, out}};
}

int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe, bool ceil) {
  const int64_t span = in + pb + pe - d * (k - 1) - 1;
  if (span < 0) fail("window larger than the padded input");
  return (ceil ? (span + s - 1) / s : span / s) + 1;
}

Shape infer_window(const Node& node, const Shape& x, const std::vector<int64_t>& kernel) {
  const size_t nsp = kernel.size();
  if (x.size() != nsp + 2) {
    fail("input " + format_dims(x) + " does not match a " + std::to_string(nsp) + "-D window");
  }
  const auto strides = node.attrs.get_ints("strides", std::vector<int64_t>(nsp, 1));
  const auto dil = node.attrs.get_ints("dilations", std::vector<int64_t>(nsp, 1));
  const auto pads = node.attrs.get_ints("pads", std::vector<int64_t>(2 * nsp, 0));
  if (strides.size() != nsp || dil.size() != nsp || pads.size() != 2 * nsp) {
    fail("strides/dilations/pads do not match the kernel rank");
  }
  const bool ceil = node.attrs.get_int("ceil_mode", 0) != 0;
  Shape out = {x[0], x[1]};
  for (size_t i = 0; i < nsp; ++i) {
    if (strides[i] <= 0 || dil[i] <= 0 || kernel[i] <= 0) fail("non-positive window parameter");
    out.push_back(pool_out(x[i + 2], kernel[i], strides[i], dil[i], pads[i], pads[i + nsp], ceil));
  }
  return out;
}

Types infer_conv(const Node& node, const Types& in) {
  expect_inputs(in, 2, 3);
  const Shape& x = in[0].shape;
  const Shape& w = in[1].shape;
  if (w.size() < 3 || x.size() != w.size()) {
    fail("input " + format_dims(x) + " and weight " + format_dims(w) + " ranks differ");
  }
  const int64_t group = node.attrs.get_int("group", 1);
  if (group <= 0 || x[1] != w[1] * group || w[0] % group != 0) {
    fail("input channels " + std::to_string(x[1]) + " do not match weight " + format_dims(w) +
         " with group " + std::to_string(group));
  }
  const std::vector<int64_t> kernel(w.begin() + 2, w.end());
  if (node.attrs.has("kernel_shape") && node.attrs.get_ints("kernel_shape") != kernel) {
    fail("kernel_shape attribute disagrees with the weight shape");
  }
  Shape out = infer_window(node, x, kernel);
  out[1] = w[0];
  if (in.size() == 3 && in[2].shape != Shape{w[0]}) fail("bias must have shape [M]");
  return {{in[0].dtype, out}};
}

Types infer_pool(const Node& node, const Types& in) {
  const Shape out = infer_window(node, in[0].shape, node.attrs.get_ints("kernel_shape"));
  Types types = {{in[0].dtype, out}};
  if (node.outputs.size() > 1) types.push_back({DType::kInt64, out});
  return types;
}

Types infer_reduce(const Node& node, const Types& in) {
  const Shape& x = in[0].shape;
  const auto axes = resolve_reduce_axes(node.attrs, static_cast<int64_t>(x.size()));
  const bool keep = node.attrs.get_int("keepdims", 1) != 0;
  Shape out;
  for (size_t d = 0; d < x.size(); ++d) {
    const bool reduced = std::find(axes.begin(), axes.end(), static_cast<int64_t>(d)) != axes.end();
    if (!reduced) out.push_back(x[d]);
    else if (keep) out.push_back(1);
  }
  return {{in[0].dtype, out}};
}

Types infer_gather(const Node& node, const Types& in) {
  expect_inputs(in, 2, 2);
  if (is_floating(in[1].dtype)) fail("indices must be integers");
  const Shape& data = in[0].shape;
  const int64_t axis = normalize_axis(node.attrs.get_int("axis", 0), data.size());
  Shape out(data.begin(), data.begin() + axis);
  out.insert(out.end(), in[1].shape.begin(), in[1].shape.end());
  out.insert(out.end(), data.begin() + axis + 1, data.end());
  return {{in[0].dtype, out}};
}

Types infer_concat(const Node& node, const Types& in) {
  if (in.empty()) fail("Concat needs inputs");
  Shape out = in[0].shape;
  const int64_t axis = normalize_axis(node.attrs.get_int("axis"), out.size());
  for (size_t i = 1; i < in.size(); ++i) {
    expect_same_dtype(in[0], in[i]);
    const Shape& s = in[i].shape;
    if (s.size() != out.size()) fail("Concat operands differ in rank");
    for (size_t d = 0; d < s.size(); ++d) {
      if (static_cast<int64_t>(d) == axis) continue;
      if (s[d] != out[d]) {
        fail("Concat operand " + std::to_string(i) + " " + format_dims(s) + " does not match " +
             format_dims(in[0].shape) + " off axis " + std::to_string(axis));
      }
    }
    if (__builtin_add_overflow(out[axis], s[axis], &out[axis])) fail("Concat result is too large");
  }
  return {{in[0].dtype, out}};
}

Types infer_split(const Node& node, const Types& in) {
  const Shape& x = in[0].shape;
  const int64_t axis = normalize_axis(node.attrs.get_int("axis", 0), x.size());
  const int64_t n = static_cast<int64_t>(node.outputs.size());
  std::vector<int64_t> sizes;
  if (node.attrs.has("split")) {
    sizes = node.attrs.get_ints("split");
  } else {
    const int64_t chunk = (x[axis] + n - 1) / n;
    for (int64_t i = 0; i < n; ++i) sizes.push_back(std::min(chunk, x[axis] - i * chunk));
  }
  if (static_cast<int64_t>(sizes.size()) != n ||
      std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != x[axis]) {
    fail("split sizes do not add up to dim " + std::to_string(x[axis]));
  }
  Types out;
  for (int64_t s : sizes) {
    Shape shape = x;
    shape[axis] = s;
    out.push_back({in[0].dtype, shape});
  }
  return out;
}

Types infer_squeeze(const Node& node, const Types& in) {
  const Shape& x = in[0].shape;
  std::vector<bool> drop(x.size(), false);
  if (node.attrs.has("axes")) {
    for (int64_t a : node.attrs.get_ints("axes")) {
      const int64_t axis = normalize_axis(a, x.size());
      if (x[axis] != 1) fail("cannot squeeze dim " + std::to_string(axis) + " of " + format_dims(x));
      drop[axis] = true;
    }
  } else {
    for (size_t d = 0; d < x.size(); ++d) drop[d] = x[d] == 1;
  }
  Shape out;
  for (size_t d = 0; d < x.size(); ++d) {
    if (!drop[d]) out.push_back(x[d]);
  }
  return {{in[0].dtype, out}};
}

Types infer_unsqueeze(const Node& node, const Types& in) {
  const Shape& x = in[0].shape;
  const auto& axes = node.attrs.get_ints("axes");
  const int64_t rank = static_cast<int64_t>(x.size() + axes.size());
  std::vector<bool> inserted(rank, false);
  for (int64_t a : axes) {
    const int64_t axis = normalize_axis(a, rank);
    if (inserted[axis]) fail("repeated unsqueeze axis");
    inserted[axis] = true;
  }
  Shape out;
  size_t next = 0;
  for (int64_t d = 0; d < rank; ++d) out.push_back(inserted[d] ? 1 : x[next++]);
  return {{in[0].dtype, out}};
}

Types infer_transpose(const Node& node, const Types& in) {
  const Shape& x = in[0].shape;
  std::vector<int64_t> perm(x.size());
  std::iota(perm.rbegin(), perm.rend(), 0);
  perm = node.attrs.get_ints("perm", perm);
  std::vector<int64_t> check = perm;
  std::sort(check.begin(), check.end());
  for (size_t i = 0; i < check.size(); ++i) {
    if (check.size() != x.size() || check[i] != static_cast<int64_t>(i)) {
      fail("perm " + format_dims(perm) + " is not a permutation of rank " + std::to_string(x.size()));
    }
  }
  Shape out;
  for (int64_t p : perm) out.push_back(x[p]);
  return {{in[0].dtype, out}};
}

Types infer_slice(const Node& node, const Types& in) {
  Shape out;
  for (const SliceRange& r : resolve_slice(in[0].shape, node.attrs)) out.push_back(r.count);
  return {{in[0].dtype, out}};
}

Types infer_loss(const Node& node, const Types& in) {
  expect_inputs(in, 2, 3);
  const Shape& scores = in[0].shape;
  const Shape& labels = in[1].shape;
  if (scores.size() < 2) fail("scores must have rank >= 2 ([N, C, ...])");
  Shape expected = scores;
  expected.erase(expected.begin() + 1);
  if (labels != expected) {
    fail("labels " + format_dims(labels) + " do not match scores " + format_dims(scores));
  }
  if (is_floating(in[1].dtype)) fail("labels must be integers");
  const std::string reduction =
      node.attrs.has("reduction") ? node.attrs.get_string("reduction") : "mean";
  Types out = {{in[0].dtype, reduction == "none" ? labels : Shape{}}};
  if (node.outputs.size() > 1) out.push_back({in[0].dtype, scores});
  return out;
}

Types infer_elementwise(const Node& node, const Types& in) {
  switch (node.kind) {
    case OpKind::kAdd: case OpKind::kSub: case OpKind::kMul: case OpKind::kDiv:
      expect_inputs(in, 2, 2);
      expect_same_dtype(in[0], in[1]);
      return {{in[0].dtype, broadcast_shapes(in[0].shape, in[1].shape)}};
    case OpKind::kPow:
      expect_inputs(in, 2, 2);
      return {{in[0].dtype, broadcast_shapes(in[0].shape, in[1].shape)}};
    case OpKind::kEqual: case OpKind::kLess: case OpKind::kGreater:
      expect_inputs(in, 2, 2);
      expect_same_dtype(in[0], in[1]);
      return {{DType::kBool, broadcast_shapes(in[0].shape, in[1].shape)}};
    case OpKind::kWhere:
      expect_inputs(in, 3, 3);
      if (in[0].dtype != DType::kBool) fail("condition must be bool");
      expect_same_dtype(in[1], in[2]);
      return {{in[1].dtype,
               broadcast_shapes(in[0].shape, broadcast_shapes(in[1].shape, in[2].shape))}};
    case OpKind::kCast:
      return {{static_cast<DType>(node.attrs.get_int("to")), in[0].shape}};
    default:
      expect_inputs(in, 1, 1);
      return {{in[0].dtype, in[0].shape}};
  }
}

// Backward and optimizer ops: each output has the shape of a forward operand, named by an
// attribute or by one of its inputs.
Types infer_internal(const Node& node, const Types& in) {
  const DType dt = in.empty() ? DType::kFloat32 : in[0].dtype;
  auto attr_shape = [&](const char* key) { return TensorType{dt, node.attrs.get_ints(key)}; };
  switch (node.kind) {
    case OpKind::kSumToShape: return {attr_shape("shape")};
    case OpKind::kZeros:
      return {{static_cast<DType>(node.attrs.get_int("dtype")), node.attrs.get_ints("shape")}};
    case OpKind::kConvGradInput: case OpKind::kAveragePoolGrad: case OpKind::kSliceGrad:
    case OpKind::kTopKGrad:
      return {attr_shape("input_shape")};
    case OpKind::kConvGradWeight: return {attr_shape("weight_shape")};
    case OpKind::kGatherGrad: return {attr_shape("shape")};
    case OpKind::kLayerNormalizationGrad: case OpKind::kBatchNormalizationGrad: {
      expect_inputs(in, 3, 3);
      Types out = {{dt, in[1].shape}};
      for (size_t i = 1; i < node.outputs.size(); ++i) out.push_back({dt, in[2].shape});
      return out;
    }
    case OpKind::kMaxPoolGrad: case OpKind::kReduceMaxGrad: case OpKind::kClipGrad:
    case OpKind::kSoftmaxCrossEntropyLossGrad:
      expect_inputs(in, 2, 4);
      return {{dt, in[1].shape}};
    case OpKind::kPowGrad: {
      expect_inputs(in, 3, 3);
      const Shape full = broadcast_shapes(in[1].shape, in[2].shape);
      return Types(node.outputs.size(), TensorType{dt, full});
    }
    case OpKind::kReshard:  // the local shape after the collectives, chosen by the lowering
      expect_inputs(in, 1, 1);
      return {{in[0].dtype, node.attrs.get_ints("shape")}};
    case OpKind::kSgdUpdate: case OpKind::kAdamUpdate: {
      Types out = {{in[0].dtype, in[0].shape}};
      for (size_t i = 2; i < in.size(); ++i) out.push_back({in[i].dtype, in[i].shape});
      return out;
    }
    default:  // element-wise gradients: ReluGrad, SigmoidGrad, TanhGrad, ErfGrad, SoftmaxGrad, ...
      expect_inputs(in, 2, 2);
      if (in[0].shape != in[1].shape) {
        fail("gradient " + format_dims(in[0].shape) + " and operand " + format_dims(in[1].shape) + " differ");
      }
      return {{dt, in[0].shape}};
  }
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) {
      fail("shapes " + format_dims(a) + " and " + format_dims(b) + " do not broadcast");
    }
    out[i] = da == 1 ? db : da;
  }
  return out;
}

int64_t normalize_axis(int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) {
    fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

Shape resolve_reshape(const Shape& input, const std::vector<int64_t>& target, bool allow_zero) {
  Shape out(target.size());
  int64_t known = 1;
  int infer_at = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t d = target[i];
    if (d == 0 && !allow_zero) {
      if (i >= input.size()) fail("target dim 0 at position " + std::to_string(i) + " has no input dim to copy");
      d = input[i];
    }
    if (d == -1) {
      if (infer_at >= 0) fail("target " + format_dims(target) + " has two -1 dims");
      infer_at = static_cast<int>(i);
      continue;
    }
    if (d < 0) fail("target " + format_dims(target) + " has a negative dim");
    out[i] = d;
    if (__builtin_mul_overflow(known, d, &known)) fail("target " + format_dims(target) + " is too large");
  }
  const int64_t total = num_elements(input);
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0) {
      fail("target " + format_dims(target) + " cannot hold input " + format_dims(input) + " (" +
           std::to_string(total) + " elements)");
    }
    out[infer_at] = total / known;
  } else if (known != total) {
    fail("target " + format_dims(target) + " (" + std::to_string(known) +
         " elements) does not match input " + format_dims(input) + " (" + std::to_string(total) +
         " elements)");
  }
  return out;
}

std::vector<SliceRange> resolve_slice(const Shape& input, const Attributes& attrs) {
  const auto& starts = attrs.get_ints("starts");
  const auto& ends = attrs.get_ints("ends");
  std::vector<int64_t> axes(starts.size());
  std::iota(axes.begin(), axes.end(), 0);
  axes = attrs.get_ints("axes", axes);
  const auto steps = attrs.get_ints("steps", std::vector<int64_t>(starts.size(), 1));
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
    fail("starts/ends/axes/steps lengths differ");
  }
  std::vector<SliceRange> out;
  for (int64_t d : input) out.push_back({0, 1, d});
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t axis = normalize_axis(axes[i], input.size());
    const int64_t dim = input[axis];
    const int64_t step = steps[i];
    if (step == 0) fail("slice step is 0");
    auto wrap = [dim](int64_t v) { return v < 0 ? v + dim : v; };
    int64_t start, end, count;
    if (step > 0) {
      start = std::clamp<int64_t>(wrap(starts[i]), 0, dim);
      end = std::clamp<int64_t>(wrap(ends[i]), 0, dim);
      count = end > start ? (end - start + step - 1) / step : 0;
    } else {
      start = std::clamp<int64_t>(wrap(starts[i]), 0, dim - 1);
      end = std::clamp<int64_t>(wrap(ends[i]), -1, dim - 1);
      count = start > end ? (start - end + (-step) - 1) / (-step) : 0;
    }
    out[axis] = {start, step, count};
  }
  return out;
}

std::vector<int64_t> resolve_reduce_axes(const Attributes& attrs, int64_t rank) {
  std::vector<int64_t> axes = attrs.get_ints("axes", {});
  if (axes.empty()) {
    if (attrs.get_int("noop_with_empty_axes", 0) != 0) return {};
    axes.resize(rank);
    std::iota(axes.begin(), axes.end(), 0);
  }
  for (auto& a : axes) a = normalize_axis(a, rank);
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  return axes;
}

EinsumSpec parse_einsum(const std::string& equation, size_t num_inputs) {
  std::string eq;
  for (char c : equation) {
    if (c != ' ') eq += c;
  }
  if (eq.find("...") != std::string::npos) fail("einsum ellipsis is not supported: " + equation);
  EinsumSpec spec;
  const auto arrow = eq.find("->");
  const std::string lhs = eq.substr(0, arrow);
  size_t begin = 0;
  while (true) {
    const auto comma = lhs.find(',', begin);
    spec.inputs.push_back(lhs.substr(begin, comma - begin));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  if (spec.inputs.size() != num_inputs) {
    fail("equation '" + equation + "' names " + std::to_string(spec.inputs.size()) +
         " operands, node has " + std::to_string(num_inputs));
  }
  for (const auto& labels : spec.inputs) {
    for (char c : labels) {
      if (!std::isalpha(static_cast<unsigned char>(c))) fail("bad einsum label in '" + equation + "'");
    }
  }
  if (arrow != std::string::npos) {
    spec.output = eq.substr(arrow + 2);
    for (char c : spec.output) {
      if (lhs.find(c) == std::string::npos) fail("output label not in any operand: " + equation);
    }
  } else {
    std::map<char, int> count;
    for (const auto& labels : spec.inputs) {
      for (char c : labels) ++count[c];
    }
    for (auto [c, n] : count) {
      if (n == 1) spec.output += c;
    }
  }
  return spec;
}

std::vector<TensorType> infer_types(const Node& node, const std::vector<TensorType>& in) {
  if (in.empty() && node.kind != OpKind::kConstant && node.kind != OpKind::kZeros) fail("node has no inputs");
  switch (op_info(node.kind).family) {
    case OpFamily::kElementwise:
      return infer_elementwise(node, in);
    case OpFamily::kContraction:
      if (node.kind == OpKind::kMatMul) {
        expect_inputs(in, 2, 2);
        expect_same_dtype(in[0], in[1]);
        return infer_matmul(in);
      }
      if (node.kind == OpKind::kGemm) return infer_gemm(node, in);
      return infer_einsum(node, in);
    case OpFamily::kConv:
      return infer_conv(node, in);
    case OpFamily::kPool:
      if (node.kind == OpKind::kGlobalAveragePool) {
        Shape out = in[0].shape;
        if (out.size() < 3) fail("input must be [N, C, spatial...]");
        std::fill(out.begin() + 2, out.end(), 1);
        return {{in[0].dtype, out}};
      }
      return infer_pool(node, in);
    case OpFamily::kNormalization: {
      const Shape& x = in[0].shape;
      if (node.kind == OpKind::kLayerNormalization) {
        expect_inputs(in, 2, 3);
        const int64_t axis = normalize_axis(node.attrs.get_int("axis", -1), x.size());
        const Shape normalized(x.begin() + axis, x.end());
        for (size_t i = 1; i < in.size(); ++i) {
          if (broadcast_shapes(normalized, in[i].shape) != normalized) {
            fail("scale/bias " + format_dims(in[i].shape) + " do not match normalized dims " +
                 format_dims(normalized));
          }
        }
        Types out = {{in[0].dtype, x}};
        Shape stat = x;
        for (size_t d = axis; d < stat.size(); ++d) stat[d] = 1;
        for (size_t i = 1; i < node.outputs.size(); ++i) out.push_back({DType::kFloat32, stat});
        return out;
      }
      expect_inputs(in, 5, 5);
      if (x.size() < 2) fail("input must be [N, C, ...]");
      for (size_t i = 1; i < 5; ++i) {
        if (in[i].shape != Shape{x[1]}) {
          fail("parameter " + std::to_string(i) + " " + format_dims(in[i].shape) +
               " must have shape [" + std::to_string(x[1]) + "]");
        }
      }
      Types out = {{in[0].dtype, x}};
      for (size_t i = 1; i < node.outputs.size(); ++i) out.push_back({in[3].dtype, {x[1]}});
      return out;
    }
    case OpFamily::kSoftmax:
      normalize_axis(node.attrs.get_int("axis", -1), in[0].shape.size());
      return {{in[0].dtype, in[0].shape}};
    case OpFamily::kReduction:
      return infer_reduce(node, in);
    case OpFamily::kLayout:
      switch (node.kind) {
        case OpKind::kFlatten: {
          const Shape& x = in[0].shape;
          const int64_t axis = node.attrs.get_int("axis", 1);
          const int64_t a = axis < 0 ? axis + static_cast<int64_t>(x.size()) : axis;
          if (a < 0 || a > static_cast<int64_t>(x.size())) fail("flatten axis out of range");
          return {{in[0].dtype,
                   {num_elements(Shape(x.begin(), x.begin() + a)),
                    num_elements(Shape(x.begin() + a, x.end()))}}};
        }
        case OpKind::kReshape:
          return {{in[0].dtype, resolve_reshape(in[0].shape, node.attrs.get_ints("shape"),
                                                node.attrs.get_int("allowzero", 0) != 0)}};
        case OpKind::kTranspose: return infer_transpose(node, in);
        case OpKind::kConcat: return infer_concat(node, in);
        case OpKind::kSplit: return infer_split(node, in);
        case OpKind::kSlice: return infer_slice(node, in);
        case OpKind::kSqueeze: return infer_squeeze(node, in);
        case OpKind::kUnsqueeze: return infer_unsqueeze(node, in);
        case OpKind::kExpand:
          return {{in[0].dtype, broadcast_shapes(in[0].shape, node.attrs.get_ints("shape"))}};
        case OpKind::kReshard:
          return infer_internal(node, in);
        default:
          return outputs_like(node, in[0]);
      }
    case OpFamily::kGather:
      return infer_gather(node, in);
    case OpFamily::kScan:
      normalize_axis(node.attrs.get_int("axis"), in[0].shape.size());
      return {{in[0].dtype, in[0].shape}};
    case OpFamily::kSelect: {
      const Shape& x = in[0].shape;
      if (node.kind == OpKind::kOneHot) {
        if (is_floating(in[0].dtype)) fail("OneHot indices must be integers");
        const int64_t rank = static_cast<int64_t>(x.size()) + 1;
        const int64_t axis = normalize_axis(node.attrs.get_int("axis", -1), rank);
        Shape out = x;
        out.insert(out.begin() + axis, node.attrs.get_int("depth"));
        return {{static_cast<DType>(node.attrs.get_int("dtype")), out}};
      }
      const int64_t axis = normalize_axis(node.attrs.get_int("axis", -1), x.size());
      const int64_t k = node.attrs.get_int("k");
      if (k < 0 || k > x[axis]) {
        fail("k = " + std::to_string(k) + " exceeds dim " + std::to_string(x[axis]));
      }
      Shape out = x;
      out[axis] = k;
      return {{in[0].dtype, out}, {DType::kInt64, out}};
    }
    case OpFamily::kDropout: {
      Types out = {{in[0].dtype, in[0].shape}};
      if (node.outputs.size() > 1) out.push_back({DType::kBool, in[0].shape});
      return out;
    }
    case OpFamily::kLoss:
      return infer_loss(node, in);
    case OpFamily::kGrad:
    case OpFamily::kOptimizer:
      return infer_internal(node, in);
    case OpFamily::kSource:
      break;
  }
  fail(std::string(op_name(node.kind)) + " is folded at import and has no runtime shape rule");
}

}  // namespace alpa
