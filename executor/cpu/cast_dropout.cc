// Cast and Dropout.
#include <cmath>
#include <limits>

#include "executor/cpu/cpu_ops.h"
#include "executor/cpu/cpu_common.h"
#include "planner/common/rng.h"

namespace alpa::exec::cpu {
namespace {

template <typename D, typename S>
D convert(S v) {
  if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
    // Truncates toward zero, saturating; NaN becomes 0.
    if (std::isnan(v)) return D(0);
    if (v >= static_cast<S>(std::numeric_limits<D>::max())) return std::numeric_limits<D>::max();
    if (v <= static_cast<S>(std::numeric_limits<D>::lowest())) return std::numeric_limits<D>::lowest();
    return static_cast<D>(v);
  } else {
    return static_cast<D>(v);
  }
}

}  // namespace

void run_cast(const KernelCall& call) {
  expect_inputs(call, 1, 1);
  const Node& node = *call.node;
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  const int64_t n = x.numel();
  if (x.dtype == y.dtype) {
    if (y.data != x.data) std::memcpy(y.data, x.data, static_cast<size_t>(x.bytes()));
    return;
  }
  dispatch_storage(x.dtype, node, [&](auto src_tag) {
    using S = decltype(src_tag);
    const S* px = x.as<S>();
    if (y.dtype == DType::kBool) {
      uint8_t* py = y.as<uint8_t>();
      for (int64_t i = 0; i < n; ++i) py[i] = px[i] != S(0) ? 1 : 0;
      return;
    }
    dispatch_storage(y.dtype, node, [&](auto dst_tag) {
      using D = decltype(dst_tag);
      D* py = y.as<D>();
      for (int64_t i = 0; i < n; ++i) py[i] = convert<D>(px[i]);
    });
  });
}

// Global flat index of local element i: the batch dim of a tensor holding part of the step's
// batch is widened to the whole batch and shifted to this call's first sample; a block of other
// dims (tensor parallelism: the lowering's block_offsets and block_global attributes) is
// shifted to its place in the whole tensor.
struct GlobalIndex {
  Shape local, global;
  std::vector<int64_t> offset;
  bool identity = true;
  GlobalIndex(const StepContext& ctx, const Node& node, TensorId t, const Shape& shape)
      : local(shape), global(shape), offset(shape.size(), 0) {
    if (node.attrs.has("block_offsets")) {
      const std::vector<int64_t> off = node.attrs.get_ints("block_offsets");
      const std::vector<int64_t> whole = node.attrs.get_ints("block_global");
      for (size_t d = 0; d < shape.size() && d < off.size() && d < whole.size(); ++d) {
        offset[d] = off[d];
        global[d] = whole[d];
      }
    }
    if (ctx.batch_dim && ctx.global_samples > 0 && ctx.local_samples > 0) {
      const int bd = (*ctx.batch_dim)[static_cast<size_t>(t)];
      if (bd >= 0 && node.attrs.get_int("block_batch", 0) != 0) {
        // A block of the microbatch's samples (the batch split in some nodes only): its place in
        // the microbatch, and the microbatch's in the step.
        const int64_t per_sample = global[static_cast<size_t>(bd)] / ctx.local_samples;
        global[static_cast<size_t>(bd)] = ctx.global_samples * per_sample;
        offset[static_cast<size_t>(bd)] += ctx.sample_offset * per_sample;
      } else if (bd >= 0 && ctx.local_samples != ctx.global_samples) {
        const int64_t per_sample = shape[static_cast<size_t>(bd)] / ctx.local_samples;  // the batch is the dim's major factor
        global[static_cast<size_t>(bd)] = ctx.global_samples * per_sample;
        offset[static_cast<size_t>(bd)] = ctx.sample_offset * per_sample;
      } else if (bd >= 0) {
        global[static_cast<size_t>(bd)] = shape[static_cast<size_t>(bd)];
        offset[static_cast<size_t>(bd)] = 0;
      }
    }
    identity = global == local;
    for (int64_t o : offset) identity = identity && o == 0;
  }
  uint64_t operator()(int64_t i) const {
    if (identity) return static_cast<uint64_t>(i);
    int64_t g = 0, stride = 1;
    for (size_t d = local.size(); d-- > 0;) {
      const int64_t idx = i % local[d];
      i /= local[d];
      g += (idx + offset[d]) * stride;
      stride *= global[d];
    }
    return static_cast<uint64_t>(g);
  }
};

// u = philox_uniform(seed, step, rng_key, g) for global flat element g (GlobalIndex); keep iff
// u >= ratio (compared in double); kept elements are divided by (1 - ratio) in T.
void run_dropout(const KernelCall& call) {
  expect_inputs(call, 1, 1);
  const Node& node = *call.node;
  static const StepContext kNoContext;
  const StepContext& ctx = call.ctx ? *call.ctx : kNoContext;
  const double ratio = node.attrs.get_float("ratio", 0.5);
  const uint64_t key = static_cast<uint64_t>(node.attrs.get_int("rng_key", 0));
  const TensorView& x = call.inputs[0];
  const int64_t n = x.numel();
  uint8_t* mask = has_output(call, 1) ? call.outputs[1].as<uint8_t>() : nullptr;
  const GlobalIndex global_index(ctx, node, node.inputs[0], x.shape);
  dispatch_float(x.dtype, node, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.as<T>();
    T* py = call.outputs[0].as<T>();
    const T keep_div = static_cast<T>(1.0 - ratio);
    for (int64_t i = 0; i < n; ++i) {
      const bool keep = ratio < 1.0 &&
                        static_cast<double>(philox_uniform(ctx.seed, static_cast<uint64_t>(ctx.step), key,
                                                             global_index(i))) >= ratio;
      py[i] = keep ? px[i] / keep_div : T(0);
      if (mask) mask[i] = keep ? 1 : 0;
    }
  });
}

}  // namespace alpa::exec::cpu
