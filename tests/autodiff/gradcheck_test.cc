// Every backward rule against central finite differences, in float64, on random shapes with
// broadcasting: loss = sum(op(params...) * R) for a fixed random R.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "executor/backend/kernels.h"
#include "planner/autodiff/training_graph.h"
#include "planner/graph/const_eval.h"
#include "planner/graph/shape_inference.h"

namespace alpa {
namespace {

using Values = std::vector<std::vector<double>>;

class OpCase {
 public:
  explicit OpCase(OpKind kind, Attributes attrs = {}, size_t outputs = 1)
      : kind_(kind), attrs_(std::move(attrs)), outputs_(outputs) {}

  // A differentiable operand with random values in [lo, hi).
  OpCase& param(Shape shape, double lo = -1.0, double hi = 1.0) {
    operands_.push_back({std::move(shape), DType::kFloat64, lo, hi, true, {}});
    return *this;
  }
  // A constant operand (indices, labels, conditions).
  OpCase& ints(Shape shape, std::vector<int64_t> values, DType dtype = DType::kInt64) {
    operands_.push_back({std::move(shape), dtype, 0, 0, false, std::move(values)});
    return *this;
  }
  OpCase& constant(Shape shape, double lo = -1.0, double hi = 1.0) {
    operands_.push_back({std::move(shape), DType::kFloat64, lo, hi, false, {}});
    return *this;
  }

  void check(double tolerance = 1e-6) const;

 private:
  struct Operand {
    Shape shape;
    DType dtype;
    double lo, hi;
    bool is_param;
    std::vector<int64_t> ints;
  };
  Graph build(std::mt19937& rng) const;

  OpKind kind_;
  Attributes attrs_;
  size_t outputs_;
  std::vector<Operand> operands_;
};

std::shared_ptr<const std::vector<uint8_t>> doubles(const std::vector<double>& v) {
  ConstArray a;
  a.dtype = DType::kFloat64;
  a.shape = {static_cast<int64_t>(v.size())};
  a.floats = v;
  return array_to_bytes(a);
}

Graph OpCase::build(std::mt19937& rng) const {
  Graph g;
  Node node;
  node.name = "op";
  node.kind = kind_;
  node.attrs = attrs_;
  std::vector<TensorType> in_types;
  for (size_t i = 0; i < operands_.size(); ++i) {
    const Operand& o = operands_[i];
    Tensor t;
    t.name = "in" + std::to_string(i);
    t.dtype = o.dtype;
    t.shape = o.shape;
    t.role = o.is_param ? TensorRole::kParameter : TensorRole::kConstant;
    if (o.dtype == DType::kFloat64) {
      std::uniform_real_distribution<double> dist(o.lo, o.hi);
      std::vector<double> v(static_cast<size_t>(num_elements(o.shape)));
      for (auto& x : v) x = dist(rng);
      t.data = doubles(v);
    } else {
      ConstArray a;
      a.dtype = o.dtype;
      a.shape = o.shape;
      a.ints = o.ints;
      t.data = array_to_bytes(a);
    }
    in_types.push_back({t.dtype, t.shape});
    node.inputs.push_back(g.add_tensor(std::move(t)));
  }
  node.outputs.assign(outputs_, kNoId);
  const auto types = infer_types(node, in_types);
  for (size_t o = 0; o < outputs_; ++o) {
    Tensor t;
    t.name = "out" + std::to_string(o);
    t.dtype = types[o].dtype;
    t.shape = types[o].shape;
    node.outputs[o] = g.add_tensor(std::move(t));
  }
  const TensorId y = node.outputs[0];
  g.add_node(node);
  // loss = ReduceSum(y * R)
  Tensor r;
  r.name = "R";
  r.dtype = DType::kFloat64;
  r.shape = g.tensor(y).shape;
  r.role = TensorRole::kConstant;
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> rv(static_cast<size_t>(num_elements(r.shape)));
  for (auto& x : rv) x = dist(rng);
  r.data = doubles(rv);
  const TensorId rid = g.add_tensor(std::move(r));
  Tensor prod = g.tensor(y);
  prod.name = "weighted";
  const TensorId pid = g.add_tensor(prod);
  g.add_node({"weight", OpKind::kMul, {y, rid}, {pid}, {}});
  Tensor loss;
  loss.name = "loss";
  loss.dtype = DType::kFloat64;
  loss.role = TensorRole::kLoss;
  const TensorId lid = g.add_tensor(loss);
  Node sum{"sum", OpKind::kReduceSum, {pid}, {lid}, {}};
  sum.attrs.set("keepdims", int64_t{0});
  g.add_node(sum);
  g.loss = lid;
  g.finalize();
  return g;
}

// Runs every node of `g` and returns all tensor values as doubles (floats only).
std::vector<std::vector<uint8_t>> run_graph(const Graph& g, exec::Kernels& kernels) {
  std::vector<std::vector<uint8_t>> mem(g.num_tensors());
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    const Tensor& tensor = g.tensor(static_cast<TensorId>(t));
    mem[t].assign(static_cast<size_t>(tensor.bytes()), 0);
    if (tensor.has_data()) mem[t] = *tensor.data;
  }
  exec::StepContext ctx;
  ctx.seed = 7;
  std::vector<std::vector<uint8_t>> scratch;
  for (const Node& n : g.nodes()) {
    exec::KernelCall call;
    call.node = &n;
    call.ctx = &ctx;
    call.scratch = [&](size_t bytes) {
      scratch.emplace_back(bytes);
      return static_cast<void*>(scratch.back().data());
    };
    for (TensorId t : n.inputs) call.inputs.push_back({g.tensor(t).dtype, g.tensor(t).shape, mem[t].data()});
    for (TensorId t : n.outputs) call.outputs.push_back({g.tensor(t).dtype, g.tensor(t).shape, mem[t].data()});
    kernels.run(call);
  }
  return mem;
}

double loss_of(const Graph& g, exec::Kernels& k) {
  const auto mem = run_graph(g, k);
  double v;
  std::memcpy(&v, mem[g.loss].data(), sizeof v);
  return v;
}

void OpCase::check(double tolerance) const {
  std::mt19937 rng(42);
  Graph g = build(rng);
  auto kernels = exec::make_cpu_kernels();
  OptimizerConfig opt;
  opt.lr = 0.0;
  const TrainingGraph tg = build_training_graph(g, opt);
  const auto mem = run_graph(tg.graph, *kernels);
  int checked = 0;
  for (const ParameterSlot& slot : tg.parameters) {
    const Tensor& p = g.tensor(slot.param);
    const int64_t n = p.numel();
    std::vector<double> analytic(static_cast<size_t>(n));
    std::memcpy(analytic.data(), mem[slot.grad].data(), static_cast<size_t>(n) * sizeof(double));
    std::vector<double> base(static_cast<size_t>(n));
    std::memcpy(base.data(), p.data->data(), static_cast<size_t>(n) * sizeof(double));
    for (int64_t i = 0; i < n; ++i) {
      const double h = 1e-6 * std::max(1.0, std::fabs(base[i]));
      Graph plus = g, minus = g;
      std::vector<double> vp = base, vm = base;
      vp[i] += h;
      vm[i] -= h;
      plus.tensor(slot.param).data = doubles(vp);
      minus.tensor(slot.param).data = doubles(vm);
      const double numeric = (loss_of(plus, *kernels) - loss_of(minus, *kernels)) / (2 * h);
      EXPECT_NEAR(analytic[i], numeric, tolerance * std::max(1.0, std::fabs(numeric)))
          << op_name(kind_) << " d/d" << p.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 0) << op_name(kind_);
}

Attributes attrs(std::initializer_list<std::pair<const char*, AttrValue>> kv) {
  Attributes a;
  for (const auto& [k, v] : kv) a.set(k, v);
  return a;
}

TEST(GradCheck, BinaryWithBroadcasting) {
  OpCase(OpKind::kAdd).param({2, 3}).param({3}).check();
  OpCase(OpKind::kSub).param({2, 3}).param({2, 1}).check();
  OpCase(OpKind::kMul).param({2, 1, 3}).param({4, 3}).check();
  OpCase(OpKind::kDiv).param({3, 2}).param({2}, 0.5, 2.0).check();
  OpCase(OpKind::kPow).param({3, 2}, 0.5, 2.0).param({2}, 0.5, 2.0).check();
}

TEST(GradCheck, Unary) {
  for (OpKind k : {OpKind::kNeg, OpKind::kExp, OpKind::kErf, OpKind::kTanh, OpKind::kSigmoid}) {
    OpCase(k).param({2, 3}).check();
  }
  OpCase(OpKind::kSqrt).param({2, 3}, 0.5, 2.0).check();
  OpCase(OpKind::kLog).param({2, 3}, 0.5, 2.0).check();
  OpCase(OpKind::kRelu).param({2, 3}, 0.1, 1.0).check();
  OpCase(OpKind::kRelu).param({2, 3}, -1.0, -0.1).check();
  OpCase(OpKind::kClip, attrs({{"min", -0.5}, {"max", 0.5}})).param({4, 3}).check();
}

TEST(GradCheck, SoftmaxFamily) {
  OpCase(OpKind::kSoftmax, attrs({{"axis", int64_t{-1}}})).param({2, 5}).check();
  OpCase(OpKind::kLogSoftmax, attrs({{"axis", int64_t{1}}})).param({2, 5, 3}).check();
}

TEST(GradCheck, Normalization) {
  OpCase(OpKind::kLayerNormalization, attrs({{"axis", int64_t{-1}}, {"epsilon", 1e-5}}))
      .param({2, 3, 4}).param({4}).param({4}).check();
  OpCase(OpKind::kBatchNormalization,
         attrs({{"epsilon", 1e-5}, {"momentum", 0.9}, {"training_mode", int64_t{1}}}), 3)
      .param({3, 2, 2, 2}).param({2}).param({2}).constant({2}).constant({2}, 0.5, 1.5).check();
}

TEST(GradCheck, Contractions) {
  OpCase(OpKind::kMatMul).param({2, 3, 4}).param({4, 5}).check();
  OpCase(OpKind::kMatMul).param({3, 4}).param({2, 4, 5}).check();
  OpCase(OpKind::kMatMul).param({4}).param({4, 3}).check();
  for (int64_t ta : {0, 1}) {
    for (int64_t tb : {0, 1}) {
      OpCase(OpKind::kGemm, attrs({{"transA", ta}, {"transB", tb}, {"alpha", 0.5}, {"beta", 2.0}}))
          .param(ta ? Shape{4, 3} : Shape{3, 4}).param(tb ? Shape{5, 4} : Shape{4, 5}).param({5}).check();
    }
  }
  OpCase(OpKind::kEinsum, attrs({{"equation", std::string("bij,bjk->bik")}})).param({2, 3, 4}).param({2, 4, 2}).check();
  OpCase(OpKind::kEinsum, attrs({{"equation", std::string("gsec,gsm->egcm")}}))
      .param({1, 3, 2, 2}).param({1, 3, 4}).check();
  OpCase(OpKind::kEinsum, attrs({{"equation", std::string("ij,jk->i")}})).param({2, 3}).param({3, 4}).check();
}

TEST(GradCheck, ConvAndPool) {
  OpCase(OpKind::kConv, attrs({{"strides", std::vector<int64_t>{2, 2}}, {"pads", std::vector<int64_t>{1, 1, 1, 1}}}))
      .param({1, 2, 5, 5}).param({3, 2, 3, 3}).param({3}).check();
  OpCase(OpKind::kConv, attrs({{"group", int64_t{2}}})).param({2, 4, 4, 4}).param({4, 2, 3, 3}).check();
  OpCase(OpKind::kMaxPool, attrs({{"kernel_shape", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{2, 2}}}))
      .param({1, 2, 4, 4}).check();
  OpCase(OpKind::kAveragePool, attrs({{"kernel_shape", std::vector<int64_t>{3, 3}}, {"strides", std::vector<int64_t>{2, 2}},
                                      {"pads", std::vector<int64_t>{1, 1, 1, 1}}}))
      .param({1, 2, 5, 5}).check();
  OpCase(OpKind::kGlobalAveragePool).param({2, 3, 3, 3}).check();
}

TEST(GradCheck, Layout) {
  OpCase(OpKind::kReshape, attrs({{"shape", std::vector<int64_t>{3, -1}}})).param({2, 3, 2}).check();
  OpCase(OpKind::kFlatten, attrs({{"axis", int64_t{1}}})).param({2, 3, 2}).check();
  OpCase(OpKind::kTranspose, attrs({{"perm", std::vector<int64_t>{2, 0, 1}}})).param({2, 3, 4}).check();
  OpCase(OpKind::kUnsqueeze, attrs({{"axes", std::vector<int64_t>{1}}})).param({2, 3}).check();
  OpCase(OpKind::kSqueeze, attrs({{"axes", std::vector<int64_t>{1}}})).param({2, 1, 3}).check();
  OpCase(OpKind::kExpand, attrs({{"shape", std::vector<int64_t>{2, 3, 4}}})).param({3, 1}).check();
  OpCase(OpKind::kConcat, attrs({{"axis", int64_t{1}}})).param({2, 3}).param({2, 2}).check();
  OpCase(OpKind::kSplit, attrs({{"axis", int64_t{1}}, {"split", std::vector<int64_t>{1, 3}}}), 2).param({2, 4}).check();
  OpCase(OpKind::kSlice, attrs({{"starts", std::vector<int64_t>{1}}, {"ends", std::vector<int64_t>{6}},
                                {"axes", std::vector<int64_t>{1}}, {"steps", std::vector<int64_t>{2}}}))
      .param({2, 7}).check();
  OpCase(OpKind::kGather, attrs({{"axis", int64_t{0}}})).param({5, 3}).ints({4}, {1, 3, 1, 0}).check();
}

TEST(GradCheck, ReductionsAndSelection) {
  OpCase(OpKind::kReduceSum, attrs({{"axes", std::vector<int64_t>{1}}, {"keepdims", int64_t{0}}})).param({2, 3, 4}).check();
  OpCase(OpKind::kReduceMean, attrs({{"keepdims", int64_t{1}}})).param({2, 3}).check();
  OpCase(OpKind::kReduceMax, attrs({{"axes", std::vector<int64_t>{-1}}})).param({3, 4}).check();
  OpCase(OpKind::kCumSum, attrs({{"axis", int64_t{1}}})).param({2, 4}).check();
  OpCase(OpKind::kCumSum, attrs({{"axis", int64_t{0}}, {"exclusive", int64_t{1}}, {"reverse", int64_t{1}}})).param({3, 2}).check();
  OpCase(OpKind::kTopK, attrs({{"k", int64_t{2}}, {"axis", int64_t{-1}}}), 2).param({3, 5}).check();
  OpCase(OpKind::kWhere).ints({2, 3}, {1, 0, 1, 0, 0, 1}, DType::kBool).param({2, 3}).param({3}).check();
}

TEST(GradCheck, LossAndDropout) {
  OpCase(OpKind::kSoftmaxCrossEntropyLoss, attrs({{"ignore_index", int64_t{-100}}}))
      .param({4, 5}).ints({4}, {1, -100, 4, 0}).check();
  OpCase(OpKind::kSoftmaxCrossEntropyLoss, attrs({{"reduction", std::string("sum")}}))
      .param({2, 3, 2}).ints({2, 2}, {0, 2, 1, 1}).check();
  OpCase(OpKind::kDropout, attrs({{"ratio", 0.3}, {"rng_key", int64_t{99}}})).param({4, 6}).check();
}

// Gradients of a tensor used twice (a tied weight) accumulate.
TEST(GradCheck, TiedUseAccumulates) {
  OpCase(OpKind::kMatMul).param({3, 3}).param({3, 3}).check();
  Graph g;
  Tensor w;
  w.name = "w";
  w.dtype = DType::kFloat64;
  w.shape = {2, 2};
  w.role = TensorRole::kParameter;
  w.data = doubles({0.5, -1.0, 2.0, 0.25});
  const TensorId wid = g.add_tensor(w);
  Tensor y = w;
  y.name = "y";
  y.role = TensorRole::kActivation;
  y.data = nullptr;
  const TensorId yid = g.add_tensor(y);
  g.add_node({"square", OpKind::kMatMul, {wid, wid}, {yid}, {}});
  Tensor loss;
  loss.name = "loss";
  loss.dtype = DType::kFloat64;
  const TensorId lid = g.add_tensor(loss);
  Node sum{"sum", OpKind::kReduceSum, {yid}, {lid}, {}};
  sum.attrs.set("keepdims", int64_t{0});
  g.add_node(sum);
  g.loss = lid;
  g.finalize();
  const TrainingGraph tg = build_training_graph(g, OptimizerConfig{});
  auto k = exec::make_cpu_kernels();
  const auto mem = run_graph(tg.graph, *k);
  double grad[4];
  std::memcpy(grad, mem[tg.parameters[0].grad].data(), sizeof grad);
  // d/dW sum(W·W) = 1·Wᵀ + Wᵀ·1: element (i,j) = sum_k W[j,k] + sum_k W[k,i]
  const double W[2][2] = {{0.5, -1.0}, {2.0, 0.25}};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      EXPECT_NEAR(grad[i * 2 + j], W[j][0] + W[j][1] + W[0][i] + W[1][i], 1e-12);
    }
  }
  EXPECT_EQ(tg.graph.tensor(tg.parameters[0].grad).name, "grad/w");
}

}  // namespace
}  // namespace alpa
