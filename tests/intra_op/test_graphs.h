// Small graphs for intra-op tests, built directly in the IR.
#pragma once

#include <string>

#include "planner/autodiff/training_graph.h"
#include "planner/cluster/cluster.h"

namespace alpa::testing {

// x[batch, hidden] → (MatMul W_i[hidden, hidden] → Relu) × layers → mean. Parameters w0..w{L-1}.
inline Graph mlp(int64_t batch, int64_t hidden, int layers, bool relu = true) {
  Graph g;
  auto add = [&](const std::string& name, Shape shape, TensorRole role) {
    Tensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.role = role;
    return g.add_tensor(t);
  };
  TensorId x = add("x", {batch, hidden}, TensorRole::kDataInput);
  g.inputs = {x};
  g.input_batch_axes = {0};
  for (int i = 0; i < layers; ++i) {
    const std::string s = std::to_string(i);
    const TensorId w = add("w" + s, {hidden, hidden}, TensorRole::kParameter);
    const TensorId h = add("h" + s, {batch, hidden}, TensorRole::kActivation);
    g.add_node({"mm" + s, OpKind::kMatMul, {x, w}, {h}, {}});
    x = h;
    if (relu && i + 1 < layers) {
      const TensorId r = add("r" + s, {batch, hidden}, TensorRole::kActivation);
      g.add_node({"relu" + s, OpKind::kRelu, {x}, {r}, {}});
      x = r;
    }
  }
  const TensorId loss = add("loss", {}, TensorRole::kLoss);
  Node mean{"mean", OpKind::kReduceMean, {x}, {loss}, {}};
  mean.attrs.set("keepdims", int64_t{0});
  g.add_node(mean);
  g.loss = loss;
  g.finalize();
  return g;
}

// One host of `devices` devices with α = `alpha` s and β = `beta` s/byte inside the host, and
// compute at `flops` FLOP/s (1 by default: with α = β = 1 both matter, as in Alpa's unit tests).
inline Cluster unit_cluster(int64_t hosts, int64_t devices, double alpha = 1, double beta = 1,
                            double inter_beta = -1, double flops = 1) {
  Cluster c;
  c.name = "unit";
  c.hosts = hosts;
  c.devices_per_host = devices;
  c.device.kind = "unit";
  c.device.memory_bytes = int64_t{1} << 40;
  c.device.peak_flops_fp32 = c.device.peak_flops_fp16 = c.device.peak_flops_bf16 = flops;
  c.device.memory_bandwidth_bytes_per_s = 1e30;  // element-wise ops free
  c.intra_host = {1.0 / beta, alpha};
  c.inter_host = {1.0 / (inter_beta > 0 ? inter_beta : beta), alpha};
  c.achievable = {1, 1, 1};
  return c;
}

}  // namespace alpa::testing
