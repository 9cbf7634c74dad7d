// MatMul (numpy semantics), Gemm and Einsum.
#include <algorithm>
#include <map>

#include "executor/cpu/blas.h"
#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"
#include "planner/graph/shape_inference.h"

namespace alpa::exec::cpu {
namespace {

template <typename T>
void matmul(const KernelCall& call) {
  const TensorView& a = call.inputs[0];
  const TensorView& b = call.inputs[1];
  const TensorView& y = call.outputs[0];
  if (a.dtype != b.dtype) unsupported(*call.node, "mixed operand dtypes");
  Shape sa = a.shape, sb = b.shape;
  if (sa.empty() || sb.empty()) unsupported(*call.node, "rank-0 operand");
  if (sa.size() == 1) sa.insert(sa.begin(), 1);
  if (sb.size() == 1) sb.push_back(1);
  const int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
  const Shape batch_a(sa.begin(), sa.end() - 2), batch_b(sb.begin(), sb.end() - 2);
  const Shape batch = broadcast_shapes(batch_a, batch_b);
  const int64_t nb = num_elements(batch);
  const T* pa = a.as<T>();
  const T* pb = b.as<T>();
  T* pc = y.as<T>();
  if (num_elements(batch_b) == 1 && num_elements(batch_a) == nb) {
    // B is one matrix shared by every batch: fold A's batch into its rows.
    gemm<T>(false, false, nb * m, n, k, T(1), pa, k, pb, n, T(0), pc, n);
    return;
  }
  Strides sta = broadcast_strides(batch_a, batch), stb = broadcast_strides(batch_b, batch);
  Strides stc = contiguous_strides(batch);
  for (auto& s : sta) s *= m * k;
  for (auto& s : stb) s *= k * n;
  for (auto& s : stc) s *= m * n;
  const LoopNest nest = make_loop_nest(batch, {stc, sta, stb});
  for_each_run<3>(nest, [&](const auto& off, int64_t runs, const auto& st) {
    for (int64_t j = 0; j < runs; ++j) {
      gemm<T>(false, false, m, n, k, T(1), pa + off[1] + j * st[1], k, pb + off[2] + j * st[2], n,
              T(0), pc + off[0] + j * st[0], n);
    }
  });
}

template <typename T>
void gemm_op(const KernelCall& call) {
  const Attributes& at = call.node->attrs;
  const TensorView& a = call.inputs[0];
  const TensorView& b = call.inputs[1];
  const TensorView& y = call.outputs[0];
  const bool ta = at.get_int("transA", 0) != 0, tb = at.get_int("transB", 0) != 0;
  const T alpha = static_cast<T>(at.get_float("alpha", 1.0));
  T beta = static_cast<T>(at.get_float("beta", 1.0));
  const int64_t m = y.shape[0], n = y.shape[1];
  const int64_t k = ta ? a.shape[0] : a.shape[1];
  // A rank holding a block of a split contraction dim computes a partial sum that the lowering
  // adds up across ranks: each adds its share of the bias (bias_scale = 1 / the ranks).
  beta = static_cast<T>(static_cast<double>(beta) * at.get_float("bias_scale", 1.0));
  if (has_input(call, 2)) {
    const TensorView& c = call.inputs[2];
    if (c.dtype != y.dtype) unsupported(*call.node, "bias dtype");
    broadcast_copy(*call.node, sizeof(T), c.data, c.shape, y.data, y.shape);
  } else {
    beta = T(0);
  }
  gemm<T>(ta, tb, m, n, k, alpha, a.as<T>(), a.shape[1], b.as<T>(), b.shape[1], beta, y.as<T>(), n);
}

// --- Einsum ---------------------------------------------------------------------------------

struct EinsumSizes {
  std::map<char, int64_t> size;
  bool uniform = true;  // every label has the same size in every operand (no size-1 broadcast)
};

EinsumSizes label_sizes(const EinsumSpec& spec, const std::vector<TensorView>& in) {
  EinsumSizes s;
  for (size_t k = 0; k < in.size(); ++k) {
    for (size_t d = 0; d < spec.inputs[k].size(); ++d) {
      const char c = spec.inputs[k][d];
      const int64_t dim = in[k].shape[d];
      auto [it, inserted] = s.size.emplace(c, dim);
      if (!inserted && it->second != dim) {
        s.uniform = false;
        it->second = std::max(it->second, dim);
      }
    }
  }
  return s;
}

// Any number of operands, repeated labels (diagonals), size-1 broadcasting: one odometer over
// the output labels then the summed labels, accumulating in double.
template <typename T>
void einsum_generic(const EinsumSpec& spec, const std::vector<TensorView>& in, const TensorView& out) {
  const EinsumSizes sizes = label_sizes(spec, in);
  std::string labels = spec.output;
  for (const auto& op : spec.inputs) {
    for (char c : op) {
      if (labels.find(c) == std::string::npos) labels += c;
    }
  }
  const size_t nl = labels.size(), nout = spec.output.size(), nops = in.size();
  std::vector<int64_t> dim(nl);
  for (size_t l = 0; l < nl; ++l) dim[l] = sizes.size.at(labels[l]);
  // stride[k][l]: how far operand k moves when label l advances (0 when broadcast or absent).
  std::vector<Strides> stride(nops, Strides(nl, 0));
  // The output's own strides (a label repeated in the output writes its diagonal only; the
  // remaining output elements stay 0).
  Strides out_stride(nl, 0);
  const Strides oc = contiguous_strides(out.shape);
  for (size_t d = 0; d < nout; ++d) out_stride[labels.find(spec.output[d])] += oc[d];
  for (size_t k = 0; k < nops; ++k) {
    const Strides c = contiguous_strides(in[k].shape);
    for (size_t d = 0; d < spec.inputs[k].size(); ++d) {
      const size_t l = labels.find(spec.inputs[k][d]);
      if (in[k].shape[d] != 1 || dim[l] == 1) stride[k][l] += c[d];
    }
  }
  T* py = out.as<T>();
  std::fill_n(py, out.numel(), T(0));
  // Odometer over [unique output labels..., summed labels...].
  std::vector<size_t> order;
  for (size_t l = 0; l < nl; ++l) {
    if (l >= nout || labels.find(labels[l]) == l) order.push_back(l);
  }
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < order.size(); ++i) (order[i] < nout ? outer : inner) *= dim[order[i]];
  if (outer == 0 || inner == 0) return;
  std::vector<int64_t> idx(order.size(), 0);
  std::vector<int64_t> off(nops, 0);
  int64_t out_off = 0;
  const int64_t total = outer * inner;
  double acc = 0;
  for (int64_t t = 0; t < total; ++t) {
    double p = 1;
    for (size_t k = 0; k < nops; ++k) p *= static_cast<double>(in[k].as<T>()[off[k]]);
    acc += p;
    if ((t + 1) % inner == 0) {
      py[out_off] = static_cast<T>(acc);
      acc = 0;
    }
    for (int64_t i = static_cast<int64_t>(order.size()) - 1; i >= 0; --i) {
      const size_t l = order[i];
      if (++idx[i] < dim[l]) {
        for (size_t k = 0; k < nops; ++k) off[k] += stride[k][l];
        out_off += out_stride[l];
        break;
      }
      idx[i] = 0;
      for (size_t k = 0; k < nops; ++k) off[k] -= stride[k][l] * (dim[l] - 1);
      out_off -= out_stride[l] * (dim[l] - 1);
    }
  }
}

bool has_repeats(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.find(s[i], i + 1) != std::string::npos) return true;
  }
  return false;
}

bool contains(const std::string& s, char c) { return s.find(c) != std::string::npos; }

// Two operands as a batched GEMM: sum away labels private to one operand, permute to
// [batch, m, k] x [batch, k, n] (or use a transposed operand as is) and permute the result.
template <typename T>
void einsum_pair(const KernelCall& call, const EinsumSpec& spec, const EinsumSizes& sizes) {
  const Node& node = *call.node;
  Scratch scratch(call);
  const std::string& lo = spec.output;
  std::string batch, ml, nl, kl;
  for (char c : lo) {
    const bool in_a = contains(spec.inputs[0], c), in_b = contains(spec.inputs[1], c);
    if (in_a && in_b) batch += c;
    else if (in_a) ml += c;
    else nl += c;
  }
  for (char c : spec.inputs[0]) {
    if (contains(spec.inputs[1], c) && !contains(lo, c)) kl += c;
  }
  auto size_of = [&](const std::string& ls) {
    int64_t p = 1;
    for (char c : ls) p *= sizes.size.at(c);
    return p;
  };
  // Prepares operand `k`: returns its data laid out as `first + mid + last` or (transposed)
  // `first + last + mid`, summing labels that appear nowhere else.
  auto prepare = [&](size_t k, const std::string& mid, const std::string& last, bool& trans) -> const T* {
    const TensorView& t = call.inputs[k];
    const std::string& ls = spec.inputs[k];
    const T* data = t.as<T>();
    Shape shape = t.shape;
    std::string kept;
    for (char c : ls) {
      if (contains(batch, c) || contains(mid, c) || contains(last, c)) kept += c;
    }
    if (kept.size() != ls.size()) {
      Shape reduced = shape;
      for (size_t d = 0; d < ls.size(); ++d) {
        if (!contains(kept, ls[d])) reduced[d] = 1;
      }
      T* buf = scratch.get<T>(num_elements(reduced));
      reduce_sum_to<T>(data, shape, buf, reduced, 1.0, scratch);
      data = buf;
      shape.clear();
      for (size_t d = 0; d < ls.size(); ++d) {
        if (contains(kept, ls[d])) shape.push_back(reduced[d]);
      }
    }
    trans = false;
    if (kept == batch + mid + last) return data;
    if (kept == batch + last + mid) {
      trans = true;
      return data;
    }
    const std::string target = batch + mid + last;
    std::vector<int64_t> perm;
    for (char c : target) perm.push_back(static_cast<int64_t>(kept.find(c)));
    T* buf = scratch.get<T>(num_elements(shape));
    permute_copy(node, sizeof(T), data, shape, perm, buf);
    return buf;
  };
  bool ta = false, tb = false;
  const T* pa = prepare(0, ml, kl, ta);
  const T* pb = prepare(1, kl, nl, tb);
  const int64_t nb = size_of(batch), m = size_of(ml), n = size_of(nl), k = size_of(kl);
  const TensorView& y = call.outputs[0];
  const std::string natural = batch + ml + nl;
  T* pc = lo == natural ? y.as<T>() : scratch.get<T>(nb * m * n);
  for (int64_t i = 0; i < nb; ++i) {
    gemm<T>(ta, tb, m, n, k, T(1), pa + i * m * k, ta ? m : k, pb + i * k * n, tb ? k : n, T(0),
            pc + i * m * n, n);
  }
  if (lo != natural) {
    Shape natural_shape;
    for (char c : natural) natural_shape.push_back(sizes.size.at(c));
    std::vector<int64_t> perm;
    for (char c : lo) perm.push_back(static_cast<int64_t>(natural.find(c)));
    permute_copy(node, sizeof(T), pc, natural_shape, perm, y.data);
  }
}

template <typename T>
void einsum(const KernelCall& call) {
  const EinsumSpec spec = parse_einsum(call.node->attrs.get_string("equation"), call.inputs.size());
  for (const auto& t : call.inputs) {
    if (t.dtype != call.outputs[0].dtype) unsupported(*call.node, "mixed operand dtypes");
  }
  const EinsumSizes sizes = label_sizes(spec, call.inputs);
  const bool pair = call.inputs.size() == 2 && sizes.uniform && !has_repeats(spec.inputs[0]) &&
                    !has_repeats(spec.inputs[1]) && !has_repeats(spec.output);
  if (pair) {
    einsum_pair<T>(call, spec, sizes);
  } else {
    einsum_generic<T>(spec, call.inputs, call.outputs[0]);
  }
}

}  // namespace

void run_contraction(const KernelCall& call) {
  const Node& node = *call.node;
  switch (node.kind) {
    case OpKind::kMatMul:
      expect_inputs(call, 2, 2);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { matmul<decltype(t)>(call); });
      return;
    case OpKind::kGemm:
      expect_inputs(call, 2, 3);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { gemm_op<decltype(t)>(call); });
      return;
    case OpKind::kEinsum:
      expect_inputs(call, 1, 64);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { einsum<decltype(t)>(call); });
      return;
    default:
      unsupported(node, "op in the contraction family");
  }
}

}  // namespace alpa::exec::cpu
