// CPU kernels against hand-computed values and naive reference implementations written here.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <random>

#include "executor/backend/kernels.h"
#include "planner/common/error.h"
#include "planner/common/rng.h"
#include "planner/graph/shape_inference.h"

namespace alpa {
// Defined in planner/common/rng.cc (the raw Philox block, for the known-answer test).
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key);
}  // namespace alpa

namespace alpa::exec {
namespace {

// --- Host tensors and a one-node runner -------------------------------------------------------

struct Host {
  DType dtype = DType::kFloat32;
  Shape shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const { return num_elements(shape); }
  template <typename T>
  T* data() { return reinterpret_cast<T*>(bytes.data()); }
  template <typename T>
  const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }
  double at(int64_t i) const {
    switch (dtype) {
      case DType::kFloat32: return data<float>()[i];
      case DType::kFloat64: return data<double>()[i];
      case DType::kInt64: return static_cast<double>(data<int64_t>()[i]);
      case DType::kInt32: return data<int32_t>()[i];
      default: return data<uint8_t>()[i];
    }
  }
  std::vector<double> values() const {
    std::vector<double> v(numel());
    for (int64_t i = 0; i < numel(); ++i) v[i] = at(i);
    return v;
  }
};

template <typename T>
Host make(DType dtype, Shape shape, const std::vector<T>& values) {
  Host h;
  h.dtype = dtype;
  h.shape = std::move(shape);
  EXPECT_EQ(static_cast<int64_t>(values.size()), h.numel());
  h.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(h.bytes.data(), values.data(), h.bytes.size());
  return h;
}
Host f32(Shape s, std::vector<float> v) { return make(DType::kFloat32, std::move(s), v); }
Host f64(Shape s, std::vector<double> v) { return make(DType::kFloat64, std::move(s), v); }
Host i64(Shape s, std::vector<int64_t> v) { return make(DType::kInt64, std::move(s), v); }
Host i32(Shape s, std::vector<int32_t> v) { return make(DType::kInt32, std::move(s), v); }
Host b8(Shape s, std::vector<uint8_t> v) { return make(DType::kBool, std::move(s), v); }

std::vector<double> random_values(int64_t n, uint32_t seed, double lo = -1, double hi = 1) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}
Host rand64(Shape s, uint32_t seed, double lo = -1, double hi = 1) {
  return f64(s, random_values(num_elements(s), seed, lo, hi));
}
Host rand32(Shape s, uint32_t seed) {
  const auto d = random_values(num_elements(s), seed);
  return f32(s, std::vector<float>(d.begin(), d.end()));
}

Attributes attrs(std::initializer_list<std::pair<const char*, AttrValue>> kv) {
  Attributes a;
  for (const auto& [k, v] : kv) a.set(k, v);
  return a;
}
std::vector<int64_t> ints(std::initializer_list<int64_t> v) { return v; }

// Runs one node; output shapes and dtypes come from shape inference. Outputs start as 0xFF
// garbage (NaN for floats) so a kernel that skips an element is caught.
std::vector<Host> run(OpKind kind, const Attributes& at, std::vector<Host> inputs, size_t num_outputs = 1,
                      StepContext ctx = {}) {
  Node node;
  node.name = "test_node";
  node.kind = kind;
  node.attrs = at;
  std::vector<TensorType> types;
  for (size_t i = 0; i < inputs.size(); ++i) {
    node.inputs.push_back(static_cast<TensorId>(i));
    types.push_back({inputs[i].dtype, inputs[i].shape});
  }
  for (size_t i = 0; i < num_outputs; ++i) node.outputs.push_back(static_cast<TensorId>(inputs.size() + i));
  const std::vector<TensorType> out_types = infer_types(node, types);
  std::vector<Host> outputs;
  for (const auto& t : out_types) {
    Host h;
    h.dtype = t.dtype;
    h.shape = t.shape;
    h.bytes.assign(static_cast<size_t>(num_elements(t.shape) * dtype_bytes(t.dtype)), 0xFF);
    outputs.push_back(std::move(h));
  }
  std::vector<std::unique_ptr<uint8_t[]>> scratch;
  KernelCall call;
  call.node = &node;
  call.ctx = &ctx;
  for (auto& h : inputs) call.inputs.push_back({h.dtype, h.shape, h.bytes.data()});
  for (auto& h : outputs) call.outputs.push_back({h.dtype, h.shape, h.bytes.data()});
  call.scratch = [&](size_t bytes) {
    scratch.push_back(std::make_unique<uint8_t[]>(bytes + 64));
    auto p = reinterpret_cast<uintptr_t>(scratch.back().get());
    return reinterpret_cast<void*>((p + 63) & ~uintptr_t{63});
  };
  static const std::unique_ptr<Kernels> kernels = make_cpu_kernels();
  kernels->run(call);
  return outputs;
}

Host run1(OpKind kind, const Attributes& at, std::vector<Host> inputs, StepContext ctx = {}) {
  return run(kind, at, std::move(inputs), 1, ctx)[0];
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], tol * std::max(1.0, std::abs(want[i]))) << "at element " << i;
  }
}

// Central-difference gradient of L = sum(dy * f(inputs)[out]) w.r.t. input `k` (float64).
std::vector<double> numeric_grad(const std::function<Host(std::vector<Host>)>& f, std::vector<Host> inputs,
                                 size_t k, const Host& dy, double h = 1e-6) {
  std::vector<double> g(inputs[k].numel());
  auto objective = [&](const std::vector<Host>& in) {
    const Host y = f(in);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += dy.at(i) * y.at(i);
    return s;
  };
  for (int64_t i = 0; i < inputs[k].numel(); ++i) {
    double& x = inputs[k].data<double>()[i];
    const double x0 = x;
    x = x0 + h;
    const double up = objective(inputs);
    x = x0 - h;
    const double down = objective(inputs);
    x = x0;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// --- RNG --------------------------------------------------------------------------------------

TEST(Rng, PhiloxKnownAnswers) {  // Random123 kat_vectors, philox4x32 10
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Rng, UniformIsDeterministicAndInRange) {
  double sum = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    const float u = philox_uniform(42, 3, 7, i);
    EXPECT_EQ(u, philox_uniform(42, 3, 7, i));
    EXPECT_GE(u, 0.0f);
    EXPECT_LT(u, 1.0f);
    EXPECT_EQ(u * 16777216.0f, std::floor(u * 16777216.0f));  // 24-bit grid
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
  EXPECT_NE(philox_uniform(42, 3, 7, 0), philox_uniform(43, 3, 7, 0));
  EXPECT_NE(philox_uniform(42, 3, 7, 0), philox_uniform(42, 4, 7, 0));
  EXPECT_NE(philox_uniform(42, 3, 7, 0), philox_uniform(42, 3, 8, 0));
  EXPECT_NE(philox_uniform(42, 3, 7, 0), philox_uniform(42, 3, 7, uint64_t{1} << 32));
}

TEST(Rng, StableKeyIsFnv1a) {
  EXPECT_EQ(stable_key(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(stable_key("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(stable_key("foobar"), 0x85944171f73967e8ull);
}

// --- Element-wise -----------------------------------------------------------------------------

TEST(Elementwise, BroadcastArithmetic) {
  const Host a = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  const Host b = f32({3}, {10, 20, 30});
  expect_near(run1(OpKind::kAdd, {}, {a, b}).values(), {11, 22, 33, 14, 25, 36}, 0);
  expect_near(run1(OpKind::kSub, {}, {b, a}).values(), {9, 18, 27, 6, 15, 24}, 0);
  const Host col = f32({2, 1}, {2, 3});
  expect_near(run1(OpKind::kMul, {}, {a, col}).values(), {2, 4, 6, 12, 15, 18}, 0);
  expect_near(run1(OpKind::kDiv, {}, {a, col}).values(), {0.5, 1, 1.5, 4.0 / 3, 5.0 / 3, 2}, 1e-6);
  // [2,1] x [1,3] -> [2,3]
  const Host row = f32({1, 3}, {1, 2, 3});
  expect_near(run1(OpKind::kMul, {}, {col, row}).values(), {2, 4, 6, 3, 6, 9}, 0);
  // scalar
  expect_near(run1(OpKind::kAdd, {}, {f64({}, {1.5}), f64({2}, {1, 2})}).values(), {2.5, 3.5}, 0);
}

TEST(Elementwise, IntegerArithmetic) {
  const Host a = i64({3}, {7, -7, 9});
  const Host b = i64({3}, {2, 2, 0});
  const Host sum = run1(OpKind::kAdd, {}, {a, b});
  EXPECT_EQ(sum.dtype, DType::kInt64);
  expect_near(sum.values(), {9, -5, 9}, 0);
  expect_near(run1(OpKind::kDiv, {}, {a, b}).values(), {3, -3, 0}, 0);  // truncation; /0 -> 0
  expect_near(run1(OpKind::kMul, {}, {a, i64({}, {3})}).values(), {21, -21, 27}, 0);
}

TEST(Elementwise, PowAndUnary) {
  const Host x = f64({4}, {0.5, 1.0, 2.0, 3.0});
  expect_near(run1(OpKind::kPow, {}, {x, f64({}, {2.0})}).values(), {0.25, 1, 4, 9}, 1e-12);
  expect_near(run1(OpKind::kPow, {}, {x, i64({}, {3})}).values(), {0.125, 1, 8, 27}, 1e-12);
  expect_near(run1(OpKind::kPow, {}, {x, f64({4}, {1, 2, 0.5, -1})}).values(),
              {0.5, 1, std::sqrt(2.0), 1.0 / 3}, 1e-12);
  const Host y = f64({4}, {-2.0, -0.5, 0.0, 1.5});
  auto apply = [&](OpKind k, double (*f)(double)) {
    std::vector<double> want;
    for (double v : y.values()) want.push_back(f(v));
    expect_near(run1(k, {}, {y}).values(), want, 1e-12);
  };
  apply(OpKind::kExp, [](double v) { return std::exp(v); });
  apply(OpKind::kErf, [](double v) { return std::erf(v); });
  apply(OpKind::kTanh, [](double v) { return std::tanh(v); });
  apply(OpKind::kNeg, [](double v) { return -v; });
  apply(OpKind::kRelu, [](double v) { return v > 0 ? v : 0.0; });
  apply(OpKind::kSigmoid, [](double v) { return 1 / (1 + std::exp(-v)); });
  expect_near(run1(OpKind::kSqrt, {}, {x}).values(), {std::sqrt(0.5), 1, std::sqrt(2.0), std::sqrt(3.0)}, 1e-12);
  expect_near(run1(OpKind::kLog, {}, {x}).values(), {std::log(0.5), 0, std::log(2.0), std::log(3.0)}, 1e-12);
  // Sigmoid stays finite for large magnitudes.
  expect_near(run1(OpKind::kSigmoid, {}, {f32({2}, {-100, 100})}).values(), {0, 1}, 1e-30);
}

TEST(Elementwise, ComparisonsNotWhere) {
  const Host a = f32({2, 2}, {1, 2, 3, 4});
  const Host b = f32({2}, {2, 2});
  const Host eq = run1(OpKind::kEqual, {}, {a, b});
  EXPECT_EQ(eq.dtype, DType::kBool);
  expect_near(eq.values(), {0, 1, 0, 0}, 0);
  expect_near(run1(OpKind::kLess, {}, {a, b}).values(), {1, 0, 0, 0}, 0);
  expect_near(run1(OpKind::kGreater, {}, {a, b}).values(), {0, 0, 1, 1}, 0);
  expect_near(run1(OpKind::kEqual, {}, {i64({2}, {5, 6}), i64({}, {6})}).values(), {0, 1}, 0);
  expect_near(run1(OpKind::kNot, {}, {b8({3}, {0, 1, 0})}).values(), {1, 0, 1}, 0);
  const Host cond = b8({2, 1}, {1, 0});
  expect_near(run1(OpKind::kWhere, {}, {cond, a, f32({}, {-1})}).values(), {1, 2, -1, -1}, 0);
  expect_near(run1(OpKind::kWhere, {}, {b8({2}, {0, 1}), i64({2}, {1, 2}), i64({2}, {3, 4})}).values(), {3, 2}, 0);
}

TEST(Elementwise, CastAndClip) {
  const Host x = f32({5}, {-1.7f, -0.2f, 0.0f, 2.9f, 1e20f});
  const Host to_i = run1(OpKind::kCast, attrs({{"to", int64_t(DType::kInt64)}}), {x});
  EXPECT_EQ(to_i.dtype, DType::kInt64);
  EXPECT_EQ(to_i.data<int64_t>()[0], -1);
  EXPECT_EQ(to_i.data<int64_t>()[1], 0);
  EXPECT_EQ(to_i.data<int64_t>()[3], 2);
  EXPECT_EQ(to_i.data<int64_t>()[4], std::numeric_limits<int64_t>::max());
  expect_near(run1(OpKind::kCast, attrs({{"to", int64_t(DType::kBool)}}), {x}).values(), {1, 1, 0, 1, 1}, 0);
  expect_near(run1(OpKind::kCast, attrs({{"to", int64_t(DType::kFloat64)}}), {i32({2}, {3, -4})}).values(), {3, -4}, 0);
  expect_near(run1(OpKind::kCast, attrs({{"to", int64_t(DType::kFloat32)}}), {b8({2}, {1, 0})}).values(), {1, 0}, 0);
  expect_near(run1(OpKind::kClip, attrs({{"min", -0.5}, {"max", 2.0}}), {x}).values(),
              {-0.5, -0.2, 0, 2, 2}, 1e-6);
  expect_near(run1(OpKind::kClip, attrs({{"min", 0.0}}), {x}).values(), {0, 0, 0, 2.9, 1e20}, 1e-6);
  expect_near(run1(OpKind::kClip, attrs({{"max", 3.5}}), {i64({3}, {-5, 3, 9})}).values(), {-5, 3, 3}, 0);
}

// --- Softmax ----------------------------------------------------------------------------------

TEST(Softmax, MatchesDirectFormulaOnAnyAxis) {
  const Host x = rand64({2, 3, 4}, 1, -5, 5);
  for (int64_t axis : {0, 1, 2, -1}) {
    const int64_t a = axis < 0 ? axis + 3 : axis;
    const Host sm = run1(OpKind::kSoftmax, attrs({{"axis", axis}}), {x});
    const Host lsm = run1(OpKind::kLogSoftmax, attrs({{"axis", axis}}), {x});
    const std::vector<int64_t> st = {12, 4, 1};
    for (int64_t i = 0; i < 24; ++i) {
      const int64_t pos = (i / st[a]) % x.shape[a];
      const int64_t base = i - pos * st[a];
      double z = 0;
      for (int64_t j = 0; j < x.shape[a]; ++j) z += std::exp(x.at(base + j * st[a]));
      EXPECT_NEAR(sm.at(i), std::exp(x.at(i)) / z, 1e-12);
      EXPECT_NEAR(lsm.at(i), x.at(i) - std::log(z), 1e-12);
    }
  }
  // Numerically stable for large inputs.
  expect_near(run1(OpKind::kSoftmax, {}, {f32({2}, {1000, 1000})}).values(), {0.5, 0.5}, 1e-6);
}

TEST(Softmax, GradientsMatchFiniteDifferences) {
  const Host x = rand64({3, 4}, 2);
  const Host dy = rand64({3, 4}, 3);
  for (OpKind fwd : {OpKind::kSoftmax, OpKind::kLogSoftmax}) {
    const Attributes at = attrs({{"axis", int64_t{1}}});
    const Host y = run1(fwd, at, {x});
    const OpKind bwd = fwd == OpKind::kSoftmax ? OpKind::kSoftmaxGrad : OpKind::kLogSoftmaxGrad;
    const Host dx = run1(bwd, at, {dy, y});
    const auto want = numeric_grad([&](std::vector<Host> in) { return run1(fwd, at, in); }, {x}, 0, dy);
    expect_near(dx.values(), want, 1e-6);
  }
}

// --- Contractions -----------------------------------------------------------------------------

// Naive numpy matmul for rank >= 2 operands with broadcast batch dims.
std::vector<double> naive_matmul(const Host& a, const Host& b, const Shape& out) {
  const size_t r = out.size();
  const int64_t m = out[r - 2], n = out[r - 1], k = a.shape.back();
  std::vector<double> y(num_elements(out), 0.0);
  const Shape batch(out.begin(), out.end() - 2);
  const int64_t nb = num_elements(batch);
  auto offset = [&](const Shape& s, int64_t flat) {  // batch offset into operand with shape s
    const size_t sr = s.size() - 2;
    int64_t off = 0, stride = s[sr] * s[sr + 1];
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1, rem = flat; d >= 0; --d) {
      const int64_t i = rem % batch[d];
      rem /= batch[d];
      const int64_t sd = d - static_cast<int64_t>(batch.size() - sr);
      if (sd >= 0) {
        if (s[sd] != 1) off += i * stride;
        stride *= s[sd];
      }
    }
    return off;
  };
  for (int64_t bi = 0; bi < nb; ++bi) {
    const int64_t oa = offset(a.shape, bi), ob = offset(b.shape, bi);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t t = 0; t < k; ++t) s += a.at(oa + i * k + t) * b.at(ob + t * n + j);
        y[bi * m * n + i * n + j] = s;
      }
    }
  }
  return y;
}

TEST(Contraction, MatMulBatchedBroadcast) {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4}, {4, 5}}, {{2, 3, 4}, {4, 5}}, {{2, 1, 3, 4}, {5, 4, 2}}, {{1, 3, 4}, {6, 4, 2}},
      {{2, 3, 0}, {0, 2}}, {{4, 3, 4}, {4, 4, 1}}};
  uint32_t seed = 10;
  for (const auto& [sa, sb] : cases) {
    const Host a = rand64(sa, seed++), b = rand64(sb, seed++);
    const Host y = run1(OpKind::kMatMul, {}, {a, b});
    expect_near(y.values(), naive_matmul(a, b, y.shape), 1e-12);
    const Host a32 = rand32(sa, seed++), b32 = rand32(sb, seed++);
    const Host y32 = run1(OpKind::kMatMul, {}, {a32, b32});
    expect_near(y32.values(), naive_matmul(a32, b32, y32.shape), 1e-5);
  }
}

TEST(Contraction, MatMulVectors) {
  const Host v = f64({3}, {1, 2, 3});
  const Host m = f64({3, 2}, {1, 2, 3, 4, 5, 6});
  const Host vm = run1(OpKind::kMatMul, {}, {v, m});
  EXPECT_EQ(vm.shape, (Shape{2}));
  expect_near(vm.values(), {22, 28}, 0);
  const Host mt = f64({2, 3}, {1, 3, 5, 2, 4, 6});
  expect_near(run1(OpKind::kMatMul, {}, {mt, v}).values(), {22, 28}, 0);
  expect_near(run1(OpKind::kMatMul, {}, {v, v}).values(), {14}, 0);
  const Host batched = f64({2, 2, 3}, {1, 3, 5, 2, 4, 6, 1, 0, 0, 0, 1, 0});
  expect_near(run1(OpKind::kMatMul, {}, {batched, v}).values(), {22, 28, 1, 2}, 0);
}

TEST(Contraction, GemmTransposesAndBias) {
  const Host a = rand64({4, 3}, 20), b = rand64({5, 4}, 21), c = rand64({5}, 22);
  const Host y = run1(OpKind::kGemm,
                      attrs({{"transA", int64_t{1}}, {"transB", int64_t{1}}, {"alpha", 0.5}, {"beta", 2.0}}),
                      {a, b, c});
  ASSERT_EQ(y.shape, (Shape{3, 5}));
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 5; ++j) {
      double s = 0;
      for (int64_t t = 0; t < 4; ++t) s += a.at(t * 3 + i) * b.at(j * 4 + t);
      EXPECT_NEAR(y.at(i * 5 + j), 0.5 * s + 2.0 * c.at(j), 1e-12);
    }
  }
  const Host a2 = rand64({3, 4}, 23), b2 = rand64({4, 5}, 24);
  const Host y2 = run1(OpKind::kGemm, {}, {a2, b2});
  expect_near(y2.values(), naive_matmul(a2, b2, {3, 5}), 1e-12);
  const Host c2 = rand64({3, 1}, 25);
  const Host y3 = run1(OpKind::kGemm, attrs({{"beta", 1.0}}), {a2, b2, c2});
  for (int64_t i = 0; i < 15; ++i) EXPECT_NEAR(y3.at(i), y2.at(i) + c2.at(i / 5), 1e-12);
}

// Naive einsum: loops over every label assignment.
std::vector<double> naive_einsum(const std::string& eq, const std::vector<Host>& in, const Shape& out_shape) {
  const EinsumSpec spec = parse_einsum(eq, in.size());
  std::map<char, int64_t> size;
  for (size_t k = 0; k < in.size(); ++k) {
    for (size_t d = 0; d < spec.inputs[k].size(); ++d) {
      size[spec.inputs[k][d]] = std::max(size[spec.inputs[k][d]], in[k].shape[d]);
    }
  }
  std::vector<char> labels;
  for (auto& [c, s] : size) labels.push_back(c);
  std::vector<double> out(num_elements(out_shape), 0.0);
  std::map<char, int64_t> val;
  std::function<void(size_t)> rec = [&](size_t li) {
    if (li == labels.size()) {
      double p = 1;
      for (size_t k = 0; k < in.size(); ++k) {
        int64_t off = 0;
        for (size_t d = 0; d < spec.inputs[k].size(); ++d) {
          const int64_t dim = in[k].shape[d];
          off = off * dim + (dim == 1 ? 0 : val[spec.inputs[k][d]]);
        }
        p *= in[k].at(off);
      }
      int64_t o = 0;
      for (char c : spec.output) o = o * size[c] + val[c];
      out[o] += p;
      return;
    }
    for (int64_t v = 0; v < size[labels[li]]; ++v) {
      val[labels[li]] = v;
      rec(li + 1);
    }
  };
  rec(0);
  return out;
}

TEST(Contraction, EinsumPairsAndGeneric) {
  const std::vector<std::pair<std::string, std::vector<Shape>>> cases = {
      {"bij,bjk->bik", {{2, 3, 4}, {2, 4, 5}}},
      {"ij,kj->ik", {{3, 4}, {5, 4}}},
      {"ji,jk->ik", {{4, 3}, {4, 5}}},
      {"bhqd,bhkd->bhqk", {{2, 2, 3, 4}, {2, 2, 5, 4}}},
      {"bqhd,bkhd->bhqk", {{2, 3, 2, 4}, {2, 5, 2, 4}}},
      {"abc,cd->dba", {{2, 3, 4}, {4, 5}}},
      {"ij,jk", {{3, 4}, {4, 2}}},
      {"ijx,jky->ik", {{3, 4, 2}, {4, 2, 3}}},  // private labels summed first
      {"i,j->ij", {{3}, {4}}},
      {"i,i->", {{5}, {5}}},
      {"ii->i", {{3, 3}}},
      {"ij->", {{3, 4}}},
      {"ij->ji", {{3, 4}}},
      {"ij,jk,kl->il", {{2, 3}, {3, 4}, {4, 2}}},
      {"ij,ij->ij", {{2, 3}, {1, 3}}},  // size-1 broadcast
      {"bij,bjk->bik", {{1, 3, 4}, {2, 4, 5}}},
  };
  uint32_t seed = 40;
  for (const auto& [eq, shapes] : cases) {
    std::vector<Host> in;
    for (const auto& s : shapes) in.push_back(rand64(s, seed++));
    const Host y = run1(OpKind::kEinsum, attrs({{"equation", std::string(eq)}}), in);
    SCOPED_TRACE(eq);
    expect_near(y.values(), naive_einsum(eq, in, y.shape), 1e-12);
  }
}

// --- Convolution ------------------------------------------------------------------------------

struct ConvCfg {
  Shape x, w;
  std::vector<int64_t> strides, pads, dilations;
  int64_t group;
  bool bias;
};

Attributes conv_attrs(const ConvCfg& c) {
  return attrs({{"strides", c.strides}, {"pads", c.pads}, {"dilations", c.dilations}, {"group", c.group}});
}

// Direct convolution (and its adjoints) over 1-D/2-D/3-D inputs.
struct NaiveConv {
  const ConvCfg& c;
  Shape out;
  // Calls f(y index, x index, w index) for every product term of the convolution.
  void for_each_term(const std::function<void(int64_t, int64_t, int64_t)>& f) const {
    const size_t nsp = c.x.size() - 2;
    const int64_t N = c.x[0], C = c.x[1], M = c.w[0], Cg = c.w[1], Mg = M / c.group;
    const int64_t P = num_elements(Shape(out.begin() + 2, out.end()));
    const int64_t K = num_elements(Shape(c.w.begin() + 2, c.w.end()));
    const int64_t S = num_elements(Shape(c.x.begin() + 2, c.x.end()));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t p = 0; p < P; ++p)
          for (int64_t cg = 0; cg < Cg; ++cg)
            for (int64_t k = 0; k < K; ++k) {
              int64_t xoff = 0;
              bool inside = true;
              for (size_t d = 0, pr = p, kr = k; d < nsp; ++d) {
                // unravel p over out spatial and k over kernel dims (row-major)
                int64_t pd = 1, kd = 1;
                for (size_t e = d + 1; e < nsp; ++e) {
                  pd *= out[e + 2];
                  kd *= c.w[e + 2];
                }
                const int64_t o = static_cast<int64_t>(pr) / pd, kk = static_cast<int64_t>(kr) / kd;
                pr %= pd;
                kr %= kd;
                const int64_t i = o * c.strides[d] - c.pads[d] + kk * c.dilations[d];
                if (i < 0 || i >= c.x[d + 2]) inside = false;
                xoff = xoff * c.x[d + 2] + i;
              }
              if (!inside) continue;
              const int64_t ch = (m / Mg) * Cg + cg;
              (void)C;
              f((n * M + m) * P + p, (n * c.x[1] + ch) * S + xoff, (m * Cg + cg) * K + k);
            }
  }
};

TEST(Conv, Im2colMatchesDirectConvolutionAndAdjoints) {
  const std::vector<ConvCfg> cases = {
      {{2, 3, 7, 6}, {4, 3, 3, 3}, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, true},
      {{1, 2, 9, 8}, {3, 2, 3, 2}, {2, 3}, {1, 0, 2, 1}, {1, 1}, 1, false},
      {{2, 4, 8, 8}, {6, 2, 3, 3}, {1, 2}, {2, 2, 2, 2}, {2, 2}, 2, true},
      {{2, 4, 5, 5}, {8, 4, 1, 1}, {1, 1}, {0, 0, 0, 0}, {1, 1}, 1, true},   // direct 1x1 path
      {{1, 4, 6, 6}, {4, 1, 3, 3}, {1, 1}, {1, 1, 1, 1}, {1, 1}, 4, false},  // depthwise
      {{2, 3, 10}, {2, 3, 4}, {3}, {2, 1}, {2}, 1, true},                   // 1-D
      {{1, 2, 4, 5, 3}, {2, 2, 2, 3, 2}, {1, 2, 1}, {1, 0, 1, 0, 1, 1}, {1, 1, 2}, 1, false},  // 3-D
  };
  uint32_t seed = 100;
  for (const ConvCfg& c : cases) {
    SCOPED_TRACE(::testing::Message() << "case with x rank " << c.x.size() << " seed " << seed);
    const Host x = rand64(c.x, seed++), w = rand64(c.w, seed++), b = rand64({c.w[0]}, seed++);
    std::vector<Host> in = {x, w};
    if (c.bias) in.push_back(b);
    const Host y = run1(OpKind::kConv, conv_attrs(c), in);
    NaiveConv nc{c, y.shape};
    std::vector<double> want(y.numel(), 0.0);
    nc.for_each_term([&](int64_t yi, int64_t xi, int64_t wi) { want[yi] += x.at(xi) * w.at(wi); });
    if (c.bias) {
      const int64_t P = y.numel() / (y.shape[0] * y.shape[1]);
      for (int64_t i = 0; i < y.numel(); ++i) want[i] += b.at((i / P) % y.shape[1]);
    }
    expect_near(y.values(), want, 1e-12);

    // Float32 too.
    std::vector<float> xf(x.numel()), wf(w.numel());
    for (int64_t i = 0; i < x.numel(); ++i) xf[i] = static_cast<float>(x.at(i));
    for (int64_t i = 0; i < w.numel(); ++i) wf[i] = static_cast<float>(w.at(i));
    std::vector<Host> in32 = {f32(c.x, xf), f32(c.w, wf)};
    const std::vector<double> bv = b.values();
    if (c.bias) in32.push_back(f32({c.w[0]}, std::vector<float>(bv.begin(), bv.end())));
    expect_near(run1(OpKind::kConv, conv_attrs(c), in32).values(), want, 1e-5);

    // Adjoints: dx[xi] += dy[yi] * w[wi], dw[wi] += dy[yi] * x[xi].
    const Host dy = rand64(y.shape, seed++);
    std::vector<double> dx(x.numel(), 0.0), dw(w.numel(), 0.0);
    nc.for_each_term([&](int64_t yi, int64_t xi, int64_t wi) {
      dx[xi] += dy.at(yi) * w.at(wi);
      dw[wi] += dy.at(yi) * x.at(xi);
    });
    Attributes gi = conv_attrs(c);
    gi.set("input_shape", c.x);
    expect_near(run1(OpKind::kConvGradInput, gi, {dy, w}).values(), dx, 1e-12);
    Attributes gw = conv_attrs(c);
    gw.set("weight_shape", c.w);
    expect_near(run1(OpKind::kConvGradWeight, gw, {dy, x}).values(), dw, 1e-12);
  }
}

// --- Pools ------------------------------------------------------------------------------------

TEST(Pool, MaxPoolHandChecked) {
  // 1x1x4x4, 2x2 window, stride 2.
  const Host x = f32({1, 1, 4, 4}, {1, 2, 5, 6, 3, 4, 7, 8, 9, 10, 13, 14, 11, 12, 15, 16});
  const Attributes at = attrs({{"kernel_shape", ints({2, 2})}, {"strides", ints({2, 2})}});
  const auto out = run(OpKind::kMaxPool, at, {x}, 2);
  expect_near(out[0].values(), {4, 8, 12, 16}, 0);
  expect_near(out[1].values(), {5, 7, 13, 15}, 0);  // flat NCHW indices
  // 3x3 window, stride 2, pad 1 on a 1x1x3x3 input; with ceil_mode on a 4-wide input.
  const Host x3 = f32({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  expect_near(run1(OpKind::kMaxPool,
                   attrs({{"kernel_shape", ints({3, 3})}, {"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}}),
                   {x3}).values(),
              {5, 6, 8, 9}, 0);
  const Host x4 = f32({1, 1, 1, 5}, {1, 3, 2, 5, 4});
  const Host ceil = run1(OpKind::kMaxPool,
                         attrs({{"kernel_shape", ints({1, 2})}, {"strides", ints({1, 2})}, {"ceil_mode", int64_t{1}}}),
                         {x4});
  EXPECT_EQ(ceil.shape, (Shape{1, 1, 1, 3}));
  expect_near(ceil.values(), {3, 5, 4}, 0);
  // Dilation 2 on a 1-D input.
  const Host x1 = f64({1, 1, 6}, {1, 9, 2, 8, 3, 7});
  expect_near(run1(OpKind::kMaxPool, attrs({{"kernel_shape", ints({2})}, {"dilations", ints({2})}}), {x1}).values(),
              {2, 9, 3, 8}, 0);
}

TEST(Pool, AveragePoolPaddingModes) {
  const Host x = f64({1, 1, 2, 2}, {1, 2, 3, 4});
  Attributes at = attrs({{"kernel_shape", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}, {"strides", ints({2, 2})}});
  // Windows each cover one real element (corners).
  expect_near(run1(OpKind::kAveragePool, at, {x}).values(), {1, 2, 3, 4}, 1e-12);
  at.set("count_include_pad", int64_t{1});
  expect_near(run1(OpKind::kAveragePool, at, {x}).values(), {0.25, 0.5, 0.75, 1.0}, 1e-12);
  // Stride 1, 2x2 windows, no pad.
  const Host x3 = f64({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  expect_near(run1(OpKind::kAveragePool, attrs({{"kernel_shape", ints({2, 2})}}), {x3}).values(), {3, 4, 6, 7}, 1e-12);
  // ceil_mode: the last window is clipped at the input's end.
  const Host row = f64({1, 1, 1, 5}, {1, 2, 3, 4, 5});
  expect_near(run1(OpKind::kAveragePool,
                   attrs({{"kernel_shape", ints({1, 2})}, {"strides", ints({1, 2})}, {"ceil_mode", int64_t{1}}}), {row})
                  .values(),
              {1.5, 3.5, 5}, 1e-12);
  const Host g = run1(OpKind::kGlobalAveragePool, {}, {f32({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40})});
  EXPECT_EQ(g.shape, (Shape{1, 2, 1, 1}));
  expect_near(g.values(), {2.5, 25}, 1e-6);
}

TEST(Pool, GradientsRouteToFirstMaxAndSpreadAverages) {
  // Ties: both windows see two 5s; the first in window order gets the gradient.
  const Host x = f64({1, 1, 2, 3}, {5, 5, 1, 0, 5, 2});
  const Attributes at = attrs({{"kernel_shape", ints({2, 2})}});
  const Host y = run1(OpKind::kMaxPool, at, {x});
  expect_near(y.values(), {5, 5}, 0);
  const Host dy = f64({1, 1, 1, 2}, {1, 10});
  expect_near(run1(OpKind::kMaxPoolGrad, at, {dy, x}).values(), {1, 10, 0, 0, 0, 0}, 0);
  // Average pool gradient = adjoint of the forward (checked by finite differences).
  const Host xr = rand64({2, 2, 5, 5}, 300);
  for (int64_t include : {0, 1}) {
    const Attributes ap = attrs({{"kernel_shape", ints({3, 3})}, {"strides", ints({2, 2})},
                                 {"pads", ints({1, 0, 1, 1})}, {"count_include_pad", include}});
    const Host yr = run1(OpKind::kAveragePool, ap, {xr});
    const Host dyr = rand64(yr.shape, 301);
    Attributes ag = ap;
    ag.set("input_shape", xr.shape);
    const auto want = numeric_grad([&](std::vector<Host> in) { return run1(OpKind::kAveragePool, ap, in); },
                                   {xr}, 0, dyr);
    expect_near(run1(OpKind::kAveragePoolGrad, ag, {dyr}).values(), want, 1e-6);
    const auto want_max = numeric_grad([&](std::vector<Host> in) { return run1(OpKind::kMaxPool, ap, in); },
                                       {xr}, 0, dyr);
    expect_near(run1(OpKind::kMaxPoolGrad, ap, {dyr, xr}).values(), want_max, 1e-6);
  }
}

// --- Normalization ----------------------------------------------------------------------------

TEST(Normalization, LayerNormForwardAndGrad) {
  const Host x = rand64({2, 3, 4}, 400);
  const Host scale = rand64({4}, 401), bias = rand64({4}, 402);
  const Attributes at = attrs({{"axis", int64_t{-1}}, {"epsilon", 1e-5}});
  const auto out = run(OpKind::kLayerNormalization, at, {x, scale, bias}, 3);
  for (int64_t r = 0; r < 6; ++r) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < 4; ++j) mean += x.at(r * 4 + j) / 4;
    for (int64_t j = 0; j < 4; ++j) var += (x.at(r * 4 + j) - mean) * (x.at(r * 4 + j) - mean) / 4;
    for (int64_t j = 0; j < 4; ++j) {
      EXPECT_NEAR(out[0].at(r * 4 + j), (x.at(r * 4 + j) - mean) / std::sqrt(var + 1e-5) * scale.at(j) + bias.at(j), 1e-12);
    }
    EXPECT_NEAR(out[1].at(r), mean, 1e-6);
    EXPECT_NEAR(out[2].at(r), 1 / std::sqrt(var + 1e-5), 1e-4);
  }
  // Gradients over the last two dims with a broadcast scale [1, 4].
  const Attributes at2 = attrs({{"axis", int64_t{1}}, {"epsilon", 1e-5}});
  const Host scale2 = rand64({1, 4}, 403), bias2 = rand64({3, 4}, 404);
  const Host dy = rand64({2, 3, 4}, 405);
  const auto g = run(OpKind::kLayerNormalizationGrad, at2, {dy, x, scale2}, 3);
  auto f = [&](std::vector<Host> in) { return run1(OpKind::kLayerNormalization, at2, in); };
  expect_near(g[0].values(), numeric_grad(f, {x, scale2, bias2}, 0, dy), 1e-6);
  expect_near(g[1].values(), numeric_grad(f, {x, scale2, bias2}, 1, dy), 1e-6);
  std::vector<double> dbias(4, 0.0);
  for (int64_t i = 0; i < dy.numel(); ++i) dbias[i % 4] += dy.at(i);
  expect_near(g[2].values(), dbias, 1e-12);
}

TEST(Normalization, BatchNormTrainingAndInference) {
  const Host x = rand64({3, 2, 2, 2}, 500, -2, 2);
  const Host scale = f64({2}, {1.5, 0.5}), bias = f64({2}, {0.1, -0.2});
  const Host rmean = f64({2}, {0.3, -0.1}), rvar = f64({2}, {2.0, 0.5});
  const Attributes train = attrs({{"training_mode", int64_t{1}}, {"momentum", 0.9}, {"epsilon", 1e-5}});
  const auto out = run(OpKind::kBatchNormalization, train, {x, scale, bias, rmean, rvar}, 3);
  for (int64_t c = 0; c < 2; ++c) {
    std::vector<double> v;
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t i = 0; i < 4; ++i) v.push_back(x.at((n * 2 + c) * 4 + i));
    double mean = 0, var = 0;
    for (double e : v) mean += e / 12;
    for (double e : v) var += (e - mean) * (e - mean) / 12;
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t i = 0; i < 4; ++i) {
        const int64_t k = (n * 2 + c) * 4 + i;
        EXPECT_NEAR(out[0].at(k), (x.at(k) - mean) / std::sqrt(var + 1e-5) * scale.at(c) + bias.at(c), 1e-12);
      }
    EXPECT_NEAR(out[1].at(c), 0.9 * rmean.at(c) + 0.1 * mean, 1e-12);
    EXPECT_NEAR(out[2].at(c), 0.9 * rvar.at(c) + 0.1 * var * 12 / 11, 1e-12);
  }
  const Host y = run1(OpKind::kBatchNormalization, attrs({{"epsilon", 1e-5}}), {x, scale, bias, rmean, rvar});
  for (int64_t k = 0; k < x.numel(); ++k) {
    const int64_t c = (k / 4) % 2;
    EXPECT_NEAR(y.at(k), (x.at(k) - rmean.at(c)) / std::sqrt(rvar.at(c) + 1e-5) * scale.at(c) + bias.at(c), 1e-12);
  }
  // Training-mode gradients.
  const Host dy = rand64(x.shape, 501);
  const auto g = run(OpKind::kBatchNormalizationGrad, attrs({{"epsilon", 1e-5}}), {dy, x, scale}, 3);
  auto f = [&](std::vector<Host> in) { return run1(OpKind::kBatchNormalization, train, in); };
  const std::vector<Host> in = {x, scale, bias, rmean, rvar};
  expect_near(g[0].values(), numeric_grad(f, in, 0, dy), 1e-6);
  expect_near(g[1].values(), numeric_grad(f, in, 1, dy), 1e-6);
  expect_near(g[2].values(), numeric_grad(f, in, 2, dy), 1e-6);
}

// --- Layout -----------------------------------------------------------------------------------

TEST(Layout, TransposeExpandReshape) {
  const Host x = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  expect_near(run1(OpKind::kTranspose, {}, {x}).values(), {1, 4, 2, 5, 3, 6}, 0);
  const Host x3 = i64({2, 3, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  const Host t = run1(OpKind::kTranspose, attrs({{"perm", ints({1, 2, 0})}}), {x3});
  EXPECT_EQ(t.shape, (Shape{3, 2, 2}));
  expect_near(t.values(), {0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11}, 0);
  const Host e = run1(OpKind::kExpand, attrs({{"shape", ints({2, 1, 3})}}), {f32({3}, {1, 2, 3})});
  expect_near(e.values(), {1, 2, 3, 1, 2, 3}, 0);
  const Host e2 = run1(OpKind::kExpand, attrs({{"shape", ints({3, 1})}}), {f32({1, 2}, {7, 8})});
  EXPECT_EQ(e2.shape, (Shape{3, 2}));
  expect_near(e2.values(), {7, 8, 7, 8, 7, 8}, 0);
  expect_near(run1(OpKind::kReshape, attrs({{"shape", ints({3, -1})}}), {x}).values(), {1, 2, 3, 4, 5, 6}, 0);
  expect_near(run1(OpKind::kFlatten, {}, {x3}).values(), x3.values(), 0);
  expect_near(run1(OpKind::kUnsqueeze, attrs({{"axes", ints({0})}}), {x}).values(), x.values(), 0);
  expect_near(run1(OpKind::kIdentity, {}, {b8({2}, {1, 0})}).values(), {1, 0}, 0);
}

TEST(Layout, GatherAndGrad) {
  const Host data = f32({3, 2}, {1, 2, 3, 4, 5, 6});
  const Host idx = i64({2, 2}, {0, -1, 1, 0});
  const Host g = run1(OpKind::kGather, {}, {data, idx});
  EXPECT_EQ(g.shape, (Shape{2, 2, 2}));
  expect_near(g.values(), {1, 2, 5, 6, 3, 4, 1, 2}, 0);
  expect_near(run1(OpKind::kGather, attrs({{"axis", int64_t{1}}}), {data, i32({1}, {1})}).values(), {2, 4, 6}, 0);
  EXPECT_THROW(run1(OpKind::kGather, {}, {data, i64({1}, {3})}), UserError);
  try {
    run1(OpKind::kGather, {}, {data, i64({1}, {-4})});
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("test_node"), std::string::npos);
  }
  // Repeated indices accumulate.
  const Host dy = f32({2, 2, 2}, {1, 1, 1, 1, 1, 1, 1, 1});
  expect_near(run1(OpKind::kGatherGrad, attrs({{"axis", int64_t{0}}, {"shape", ints({3, 2})}}), {dy, idx}).values(),
              {2, 2, 1, 1, 1, 1}, 0);
}

TEST(Layout, ConcatSplitSlice) {
  const Host a = f32({2, 1}, {1, 2}), b = f32({2, 2}, {3, 4, 5, 6});
  expect_near(run1(OpKind::kConcat, attrs({{"axis", int64_t{1}}}), {a, b}).values(), {1, 3, 4, 2, 5, 6}, 0);
  expect_near(run1(OpKind::kConcat, attrs({{"axis", int64_t{0}}}), {b, b}).values(), {3, 4, 5, 6, 3, 4, 5, 6}, 0);
  const Host x = i64({2, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  const auto parts = run(OpKind::kSplit, attrs({{"axis", int64_t{1}}, {"split", ints({2, 3})}}), {x}, 2);
  expect_near(parts[0].values(), {0, 1, 5, 6}, 0);
  expect_near(parts[1].values(), {2, 3, 4, 7, 8, 9}, 0);
  const auto eq = run(OpKind::kSplit, attrs({{"axis", int64_t{1}}}), {x}, 3);  // 2, 2, 1
  expect_near(eq[2].values(), {4, 9}, 0);
  const Attributes sl = attrs({{"starts", ints({-1, 1})}, {"ends", ints({-100, 5})}, {"axes", ints({0, 1})},
                               {"steps", ints({-1, 2})}});
  const Host s = run1(OpKind::kSlice, sl, {x});
  EXPECT_EQ(s.shape, (Shape{2, 2}));
  expect_near(s.values(), {6, 8, 1, 3}, 0);
  Attributes sg = sl;
  sg.set("input_shape", x.shape);
  expect_near(run1(OpKind::kSliceGrad, sg, {f64({2, 2}, {1, 2, 3, 4})}).values(), {0, 3, 0, 4, 0, 0, 1, 0, 2, 0}, 0);
}

// --- Reductions and selection -----------------------------------------------------------------

TEST(Reduce, SumMeanMaxAndSumToShape) {
  const Host x = f32({2, 3, 2}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  const Host s = run1(OpKind::kReduceSum, attrs({{"axes", ints({1})}, {"keepdims", int64_t{0}}}), {x});
  EXPECT_EQ(s.shape, (Shape{2, 2}));
  expect_near(s.values(), {9, 12, 27, 30}, 0);
  expect_near(run1(OpKind::kReduceMean, attrs({{"axes", ints({0, 2})}}), {x}).values(), {4.5, 6.5, 8.5}, 1e-6);
  expect_near(run1(OpKind::kReduceMax, attrs({{"axes", ints({-1})}}), {x}).values(), {2, 4, 6, 8, 10, 12}, 0);
  expect_near(run1(OpKind::kReduceSum, {}, {x}).values(), {78}, 0);
  expect_near(run1(OpKind::kReduceSum, attrs({{"axes", ints({0})}}), {i64({2, 2}, {1, 2, 3, 4})}).values(), {4, 6}, 0);
  const Host st = run1(OpKind::kSumToShape, attrs({{"shape", ints({3, 1})}}), {x});
  expect_near(st.values(), {1 + 2 + 7 + 8, 3 + 4 + 9 + 10, 5 + 6 + 11 + 12}, 0);
  expect_near(run1(OpKind::kSumToShape, attrs({{"shape", ints({2})}}), {x}).values(), {36, 42}, 0);
  expect_near(run1(OpKind::kSumToShape, attrs({{"shape", ints({2, 3, 2})}}), {x}).values(), x.values(), 0);
}

TEST(Reduce, ReduceMaxGradSplitsTies) {
  const Host x = f64({2, 3}, {1, 3, 3, 2, 0, -1});
  const Attributes at = attrs({{"axes", ints({1})}, {"keepdims", int64_t{0}}});
  const Host y = run1(OpKind::kReduceMax, at, {x});
  expect_near(y.values(), {3, 2}, 0);
  const Host dy = f64({2}, {4, 10});
  expect_near(run1(OpKind::kReduceMaxGrad, at, {dy, x, y}).values(), {0, 2, 2, 10, 0, 0}, 0);
}

TEST(Select, CumSumOneHotTopK) {
  const Host x = f64({2, 3}, {1, 2, 3, 4, 5, 6});
  expect_near(run1(OpKind::kCumSum, attrs({{"axis", int64_t{1}}}), {x}).values(), {1, 3, 6, 4, 9, 15}, 0);
  expect_near(run1(OpKind::kCumSum, attrs({{"axis", int64_t{1}}, {"exclusive", int64_t{1}}}), {x}).values(),
              {0, 1, 3, 0, 4, 9}, 0);
  expect_near(run1(OpKind::kCumSum, attrs({{"axis", int64_t{1}}, {"reverse", int64_t{1}}}), {x}).values(),
              {6, 5, 3, 15, 11, 6}, 0);
  expect_near(run1(OpKind::kCumSum, attrs({{"axis", int64_t{0}}, {"reverse", int64_t{1}}, {"exclusive", int64_t{1}}}),
                   {i64({3}, {1, 2, 3})}).values(),
              {5, 3, 0}, 0);

  const Attributes oh = attrs({{"depth", int64_t{3}}, {"off_value", -1.0}, {"on_value", 5.0},
                               {"dtype", int64_t(DType::kFloat32)}});
  const Host o = run1(OpKind::kOneHot, oh, {i64({4}, {0, 2, -1, 3})});
  EXPECT_EQ(o.shape, (Shape{4, 3}));
  expect_near(o.values(), {5, -1, -1, -1, -1, 5, -1, -1, 5, -1, -1, -1}, 0);
  Attributes oh0 = oh;
  oh0.set("axis", int64_t{0});
  oh0.set("dtype", int64_t(DType::kInt64));
  const Host o0 = run1(OpKind::kOneHot, oh0, {i64({2}, {1, -3})});
  EXPECT_EQ(o0.shape, (Shape{3, 2}));
  expect_near(o0.values(), {-1, 5, 5, -1, -1, -1}, 0);

  const Host v = f32({2, 4}, {1, 3, 3, 2, 0, -1, 5, 5});
  const auto top = run(OpKind::kTopK, attrs({{"k", int64_t{2}}}), {v}, 2);
  expect_near(top[0].values(), {3, 3, 5, 5}, 0);
  expect_near(top[1].values(), {1, 2, 2, 3}, 0);
  const auto low = run(OpKind::kTopK, attrs({{"k", int64_t{3}}, {"largest", int64_t{0}}}), {v}, 2);
  expect_near(low[0].values(), {1, 2, 3, -1, 0, 5}, 0);
  expect_near(low[1].values(), {0, 3, 1, 1, 0, 2}, 0);
  const auto col = run(OpKind::kTopK, attrs({{"k", int64_t{1}}, {"axis", int64_t{0}}}), {v}, 2);
  expect_near(col[0].values(), {1, 3, 5, 5}, 0);
  expect_near(col[1].values(), {0, 0, 1, 1}, 0);
  const Host dg = run1(OpKind::kTopKGrad, attrs({{"axis", int64_t{-1}}, {"input_shape", ints({2, 4})}}),
                       {f32({2, 2}, {1, 2, 3, 4}), top[1]});
  expect_near(dg.values(), {0, 1, 2, 0, 0, 0, 3, 4}, 0);
}

// --- Dropout ----------------------------------------------------------------------------------

TEST(Dropout, MaskIsReproducibleAndScaled) {
  const int64_t n = 20000;
  const Host x = f32({n}, std::vector<float>(n, 2.0f));
  const Attributes at = attrs({{"ratio", 0.3}, {"rng_key", int64_t{12345}}});
  StepContext ctx;
  ctx.seed = 7;
  ctx.step = 3;
  const auto a = run(OpKind::kDropout, at, {x}, 2, ctx);
  const auto b = run(OpKind::kDropout, at, {x}, 2, ctx);
  EXPECT_EQ(a[0].bytes, b[0].bytes);
  EXPECT_EQ(a[1].bytes, b[1].bytes);
  int64_t dropped = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = a[1].data<uint8_t>()[i] != 0;
    EXPECT_EQ(keep, static_cast<double>(philox_uniform(7, 3, 12345, i)) >= 0.3);
    EXPECT_FLOAT_EQ(a[0].data<float>()[i], keep ? 2.0f / 0.7f : 0.0f);
    dropped += keep ? 0 : 1;
  }
  EXPECT_NEAR(static_cast<double>(dropped) / n, 0.3, 0.02);
  ctx.step = 4;
  const auto c = run(OpKind::kDropout, at, {x}, 2, ctx);
  EXPECT_NE(a[1].bytes, c[1].bytes);
  // Applied to a gradient with the same attributes: the same mask and scale.
  const Host g = rand32({n}, 600);
  ctx.step = 3;
  const Host dg = run1(OpKind::kDropout, at, {g}, ctx);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_FLOAT_EQ(dg.data<float>()[i], a[1].data<uint8_t>()[i] ? g.data<float>()[i] / 0.7f : 0.0f);
  }
}

// --- Loss -------------------------------------------------------------------------------------

TEST(Loss, SoftmaxCrossEntropyMatchesDirectFormula) {
  const Host scores = rand64({4, 3}, 700, -3, 3);
  const Host labels = i64({4}, {0, 2, -100, 1});
  auto nll = [&](int64_t n, int64_t c) {
    double z = 0;
    for (int64_t k = 0; k < 3; ++k) z += std::exp(scores.at(n * 3 + k));
    return -(scores.at(n * 3 + c) - std::log(z));
  };
  const double l0 = nll(0, 0), l1 = nll(1, 2), l3 = nll(3, 1);
  const Attributes mean = attrs({{"ignore_index", int64_t{-100}}});
  const auto out = run(OpKind::kSoftmaxCrossEntropyLoss, mean, {scores, labels}, 2);
  EXPECT_TRUE(out[0].shape.empty());
  EXPECT_NEAR(out[0].at(0), (l0 + l1 + l3) / 3, 1e-12);
  EXPECT_NEAR(std::exp(out[1].at(0)) + std::exp(out[1].at(1)) + std::exp(out[1].at(2)), 1.0, 1e-12);
  Attributes sum = mean;
  sum.set("reduction", std::string("sum"));
  EXPECT_NEAR(run1(OpKind::kSoftmaxCrossEntropyLoss, sum, {scores, labels}).at(0), l0 + l1 + l3, 1e-12);
  Attributes none = mean;
  none.set("reduction", std::string("none"));
  expect_near(run1(OpKind::kSoftmaxCrossEntropyLoss, none, {scores, labels}).values(), {l0, l1, 0, l3}, 1e-12);
  StepContext ctx;
  ctx.loss_normalizer = 10;
  EXPECT_NEAR(run1(OpKind::kSoftmaxCrossEntropyLoss, mean, {scores, labels}, ctx).at(0), (l0 + l1 + l3) / 10, 1e-12);
  // Out-of-range labels are the user's error, naming the node.
  EXPECT_THROW(run1(OpKind::kSoftmaxCrossEntropyLoss, {}, {scores, i64({4}, {0, 1, 3, 0})}), UserError);
  EXPECT_THROW(run1(OpKind::kSoftmaxCrossEntropyLoss, {}, {scores, i64({4}, {0, 1, -100, 0})}), UserError);
  EXPECT_THROW(run1(OpKind::kSoftmaxCrossEntropyLoss, {}, {scores, labels, f64({3}, {1, 1, 1})}), InternalError);
}

TEST(Loss, GradientMatchesFiniteDifferences) {
  // [N, C, d] layout with an ignored position.
  const Host scores = rand64({2, 3, 2}, 710, -2, 2);
  const Host labels = i64({2, 2}, {1, 2, 0, 5});
  for (const char* reduction : {"mean", "sum", "none"}) {
    SCOPED_TRACE(reduction);
    const Attributes at = attrs({{"reduction", std::string(reduction)}, {"ignore_index", int64_t{5}}});
    for (double normalizer : {0.0, 7.0}) {
      StepContext ctx;
      ctx.loss_normalizer = normalizer;
      const Host y = run1(OpKind::kSoftmaxCrossEntropyLoss, at, {scores, labels}, ctx);
      const Host dl = std::string(reduction) == "none" ? rand64(y.shape, 711) : f64({}, {1.7});
      const Host dx = run1(OpKind::kSoftmaxCrossEntropyLossGrad, at, {dl, scores, labels}, ctx);
      auto f = [&](std::vector<Host> in) { return run1(OpKind::kSoftmaxCrossEntropyLoss, at, in, ctx); };
      expect_near(dx.values(), numeric_grad(f, {scores, labels}, 0, dl), 1e-6);
    }
  }
}

// --- Element-wise gradients -------------------------------------------------------------------

TEST(Grad, ElementwiseGradients) {
  const Host x = f64({5}, {-1.5, -0.2, 0.3, 1.0, 2.5});
  const Host dy = f64({5}, {0.5, -1.0, 2.0, 1.5, -0.7});
  const std::vector<std::pair<OpKind, OpKind>> pairs = {
      {OpKind::kSigmoid, OpKind::kSigmoidGrad}, {OpKind::kTanh, OpKind::kTanhGrad}};
  for (const auto& [fwd, bwd] : pairs) {
    const Host y = run1(fwd, {}, {x});
    const auto want = numeric_grad([&](std::vector<Host> in) { return run1(fwd, {}, in); }, {x}, 0, dy);
    expect_near(run1(bwd, {}, {dy, y}).values(), want, 1e-7);
  }
  expect_near(run1(OpKind::kReluGrad, {}, {dy, run1(OpKind::kRelu, {}, {x})}).values(), {0, 0, 2, 1.5, -0.7}, 0);
  const auto erf_want = numeric_grad([&](std::vector<Host> in) { return run1(OpKind::kErf, {}, in); }, {x}, 0, dy);
  expect_near(run1(OpKind::kErfGrad, {}, {dy, x}).values(), erf_want, 1e-7);
  // Bounds are inclusive; absent bounds are unbounded.
  const Host xc = f64({5}, {-1.0, -0.5, 0.0, 0.5, 1.0});
  expect_near(run1(OpKind::kClipGrad, attrs({{"min", -0.5}, {"max", 0.5}}), {dy, xc}).values(), {0, -1, 2, 1.5, 0}, 0);
  expect_near(run1(OpKind::kClipGrad, attrs({{"max", 0.0}}), {dy, xc}).values(), {0.5, -1, 2, 0, 0}, 0);
}

TEST(Grad, PowGradBroadcast) {
  const Host a = rand64({2, 3}, 800, 0.5, 2.0);
  const Host b = rand64({3}, 801, -1.5, 2.5);
  const Host dy = rand64({2, 3}, 802);
  const auto g = run(OpKind::kPowGrad, {}, {dy, a, b}, 2);
  ASSERT_EQ(g[1].shape, (Shape{2, 3}));
  auto f = [&](std::vector<Host> in) { return run1(OpKind::kPow, {}, in); };
  expect_near(g[0].values(), numeric_grad(f, {a, b}, 0, dy), 1e-6);
  // db in the broadcast shape: its sum over rows is d(sum dy*pow)/db.
  const auto db = numeric_grad(f, {a, b}, 1, dy);
  for (int64_t j = 0; j < 3; ++j) EXPECT_NEAR(g[1].at(j) + g[1].at(3 + j), db[j], 1e-6);
  // a <= 0: db is 0.
  const auto g0 = run(OpKind::kPowGrad, {}, {f64({2}, {1, 1}), f64({2}, {-2, 0}), f64({}, {2})}, 2);
  expect_near(g0[0].values(), {-4, 0}, 1e-12);
  expect_near(g0[1].values(), {0, 0}, 0);
}

TEST(Grad, ZerosFillsShapeAndDtype) {
  const Host z = run1(OpKind::kZeros, attrs({{"shape", ints({2, 3})}, {"dtype", int64_t(DType::kFloat64)}}),
                      {f32({1}, {9})});
  EXPECT_EQ(z.dtype, DType::kFloat64);
  expect_near(z.values(), std::vector<double>(6, 0.0), 0);
}

// --- Optimizers -------------------------------------------------------------------------------

TEST(Optimizer, SgdMomentumWeightDecay) {
  const Host p = f64({3}, {1, -2, 0.5}), g = f64({3}, {0.1, 0.2, -0.3}), v = f64({3}, {0.01, 0, -0.02});
  const Attributes at = attrs({{"lr", 0.1}, {"momentum", 0.9}, {"weight_decay", 0.01}});
  const auto out = run(OpKind::kSgdUpdate, at, {p, g, v}, 2);
  for (int64_t i = 0; i < 3; ++i) {
    const double d = g.at(i) + 0.01 * p.at(i);
    const double vn = 0.9 * v.at(i) + d;
    EXPECT_NEAR(out[1].at(i), vn, 1e-15);
    EXPECT_NEAR(out[0].at(i), p.at(i) - 0.1 * vn, 1e-15);
  }
  const Host plain = run1(OpKind::kSgdUpdate, attrs({{"lr", 0.5}}), {p, g});
  expect_near(plain.values(), {0.95, -2.1, 0.65}, 1e-15);
}

TEST(Optimizer, AdamMatchesClosedForm) {
  const Host p = f64({4}, {1.0, -0.5, 0.25, 2.0}), g = f64({4}, {0.3, -0.1, 0.0, 2.0});
  const Host zeros = f64({4}, {0, 0, 0, 0});
  const double lr = 0.01, eps = 1e-8;
  // Step 1 from zero state: m_hat = g, v_hat = g^2, so p' = p - lr * g / (|g| + eps).
  const Attributes at = attrs({{"lr", lr}, {"beta1", 0.9}, {"beta2", 0.999}, {"epsilon", eps}});
  const auto s1 = run(OpKind::kAdamUpdate, at, {p, g, zeros, zeros}, 3);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(s1[0].at(i), p.at(i) - lr * g.at(i) / (std::abs(g.at(i)) + eps), 1e-12);
    EXPECT_NEAR(s1[1].at(i), 0.1 * g.at(i), 1e-15);
    EXPECT_NEAR(s1[2].at(i), 0.001 * g.at(i) * g.at(i), 1e-15);
  }
  // A later step (t = 5) with state, L2 weight decay and with decoupled (AdamW) decay.
  const Host m = f64({4}, {0.05, -0.02, 0.01, 0.3}), v = f64({4}, {0.001, 0.0004, 0.0001, 0.2});
  StepContext ctx;
  ctx.step = 4;
  for (int64_t decoupled : {0, 1}) {
    Attributes aw = at;
    aw.set("weight_decay", 0.1);
    aw.set("decoupled", decoupled);
    const auto s = run(OpKind::kAdamUpdate, aw, {p, g, m, v}, 3, ctx);
    for (int64_t i = 0; i < 4; ++i) {
      double pi = p.at(i), gi = g.at(i);
      if (decoupled) pi *= 1 - lr * 0.1;
      else gi += 0.1 * pi;
      const double mn = 0.9 * m.at(i) + 0.1 * gi, vn = 0.999 * v.at(i) + 0.001 * gi * gi;
      const double bc1 = 1 - std::pow(0.9, 5), bc2 = 1 - std::pow(0.999, 5);
      const double want = pi - lr / bc1 * mn / (std::sqrt(vn) / std::sqrt(bc2) + eps);
      EXPECT_NEAR(s[0].at(i), want, 1e-12);
      EXPECT_NEAR(s[1].at(i), mn, 1e-15);
      EXPECT_NEAR(s[2].at(i), vn, 1e-15);
    }
  }
}

// --- Dispatcher -------------------------------------------------------------------------------

TEST(Dispatch, UnsupportedOpsAndDtypesAreInternalErrors) {
  const auto kernels = make_cpu_kernels();
  Node node;
  node.kind = OpKind::kShape;
  KernelCall call;
  call.node = &node;
  EXPECT_THROW(kernels->run(call), InternalError);
  EXPECT_THROW(run1(OpKind::kRelu, {}, {make(DType::kFloat16, {1}, std::vector<uint16_t>{0})}), InternalError);
  EXPECT_THROW(run1(OpKind::kExp, {}, {i64({1}, {1})}), InternalError);
}

}  // namespace
}  // namespace alpa::exec
