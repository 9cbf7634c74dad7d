// Optimizer updates, following PyTorch's single-tensor SGD and Adam/AdamW. Scalar coefficients
// are computed in double, element arithmetic in T. Each element's inputs are read before its
// outputs are written, so updated tensors may alias their inputs.
#include <cmath>

#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"

namespace alpa::exec::cpu {
namespace {

// SgdUpdate(p, g[, v]) -> p'[, v']: d = g + wd*p; v' = momentum*v + d (v' = d when momentum
// is 0 or there is no v); p' = p - lr*v'.
template <typename T>
void sgd(const KernelCall& call) {
  const Attributes& at = call.node->attrs;
  const T lr = static_cast<T>(at.get_float("lr"));
  const double momentum_d = at.get_float("momentum", 0.0);
  const T momentum = static_cast<T>(momentum_d);
  const T wd = static_cast<T>(at.get_float("weight_decay", 0.0));
  const T inv_scale = static_cast<T>(1.0 / at.get_float("loss_scale", 1.0));
  const T* p = call.inputs[0].as<T>();
  const T* g = call.inputs[1].as<T>();
  const T* v = has_input(call, 2) ? call.inputs[2].as<T>() : nullptr;
  T* p_out = call.outputs[0].as<T>();
  T* v_out = has_output(call, 1) ? call.outputs[1].as<T>() : nullptr;
  const bool use_v = v != nullptr && momentum_d != 0.0;
  for (int64_t i = 0, n = call.inputs[0].numel(); i < n; ++i) {
    const T pi = p[i];
    const T gi = g[i] * inv_scale;  // unscale (fp16 loss scaling; 1 otherwise)
    const T d = wd == T(0) ? gi : gi + wd * pi;
    const T vn = use_v ? momentum * v[i] + d : d;
    if (v_out) v_out[i] = vn;
    p_out[i] = pi - lr * vn;
  }
}

// AdamUpdate(p, g, m, v) -> p', m', v' with t = ctx.step + 1.
template <typename T>
void adam(const KernelCall& call) {
  const Attributes& at = call.node->attrs;
  const double lr = at.get_float("lr");
  const double b1 = at.get_float("beta1", 0.9), b2 = at.get_float("beta2", 0.999);
  const double eps = at.get_float("epsilon", 1e-8);
  const double wd = at.get_float("weight_decay", 0.0);
  const bool decoupled = at.get_int("decoupled", 0) != 0;
  const int64_t step = call.ctx ? call.ctx->step : 0;
  const double t = static_cast<double>(step + 1);
  const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
  const T decay = static_cast<T>(1.0 - lr * wd);
  const T l2 = static_cast<T>(wd);
  const T tb1 = static_cast<T>(b1), tb2 = static_cast<T>(b2);
  const T one_b1 = static_cast<T>(1.0 - b1), one_b2 = static_cast<T>(1.0 - b2);
  const T sqrt_bc2 = static_cast<T>(std::sqrt(bc2));
  const T step_size = static_cast<T>(lr / bc1);
  const T teps = static_cast<T>(eps);
  const double loss_scale = at.get_float("loss_scale", 1.0);
  const T* p = call.inputs[0].as<T>();
  const T* g = call.inputs[1].as<T>();
  const T* m = call.inputs[2].as<T>();
  const T* v = call.inputs[3].as<T>();
  T* p_out = call.outputs[0].as<T>();
  T* m_out = call.outputs[1].as<T>();
  T* v_out = call.outputs[2].as<T>();
  for (int64_t i = 0, n = call.inputs[0].numel(); i < n; ++i) {
    T pi = p[i];
    T gi = static_cast<T>(g[i] / loss_scale);  // unscale (fp16 loss scaling; 1 otherwise)
    if (wd != 0.0) {
      if (decoupled) pi = pi * decay;
      else gi = gi + l2 * pi;
    }
    const T mn = tb1 * m[i] + one_b1 * gi;
    const T vn = tb2 * v[i] + one_b2 * gi * gi;
    const T denom = std::sqrt(vn) / sqrt_bc2 + teps;
    m_out[i] = mn;
    v_out[i] = vn;
    p_out[i] = pi - step_size * (mn / denom);
  }
}

}  // namespace

void run_optimizer(const KernelCall& call) {
  const Node& node = *call.node;
  switch (node.kind) {
    case OpKind::kSgdUpdate:
      expect_inputs(call, 2, 3);
      dispatch_float(call.inputs[0].dtype, node, [&](auto t) { sgd<decltype(t)>(call); });
      return;
    case OpKind::kAdamUpdate:
      expect_inputs(call, 4, 4);
      if (call.outputs.size() < 3) unsupported(node, "output count");
      dispatch_float(call.inputs[0].dtype, node, [&](auto t) { adam<decltype(t)>(call); });
      return;
    default:
      unsupported(node, "op in the optimizer family");
  }
}

}  // namespace alpa::exec::cpu
