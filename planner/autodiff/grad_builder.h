// The small vocabulary gradient rules are written in: I(i) / O(i) are the forward node's
// inputs and outputs, GO(i) the incoming gradient of output i, set_GI(i, t) the gradient it
// passes to input i. Rules emit nodes through op(); emitted nodes record the forward node.
#pragma once

#include <string>
#include <vector>

#include "planner/graph/graph.h"
#include "planner/graph/shape_inference.h"

namespace alpa {

class GradBuilder {
 public:
  GradBuilder(Graph& graph, const Node& forward, std::vector<bool> wants)
      : g_(graph), fwd_(forward), wants_(std::move(wants)), gi_(forward.inputs.size(), kNoId) {}

  TensorId I(size_t i) const { return fwd_.inputs.at(i); }
  TensorId O(size_t i) const { return fwd_.outputs.at(i); }
  TensorId GO(size_t i) const { return i < go_.size() ? go_[i] : kNoId; }
  bool wants(size_t i) const { return i < wants_.size() && wants_[i]; }
  void set_GI(size_t i, TensorId t) {
    if (wants(i)) gi_.at(i) = t;
  }
  const Node& forward() const { return fwd_; }
  const Attributes& attrs() const { return fwd_.attrs; }
  Shape shape(TensorId t) const { return g_.tensor(t).shape; }  // a copy: op() grows the tensor list
  DType dtype(TensorId t) const { return g_.tensor(t).dtype; }

  // Emits one node; returns its outputs (types from shape inference).
  std::vector<TensorId> op_n(OpKind kind, std::vector<TensorId> inputs, Attributes attrs, size_t outputs);
  TensorId op(OpKind kind, std::vector<TensorId> inputs, Attributes attrs = {}) {
    return op_n(kind, std::move(inputs), std::move(attrs), 1)[0];
  }
  TensorId scalar(double value, DType dtype);
  TensorId sum_to(TensorId t, const Shape& shape);   // no node when the shape already matches
  TensorId reshape(TensorId t, const Shape& shape);  // no node when the shape already matches

  std::vector<TensorId> go_;  // filled by the engine
  const std::vector<TensorId>& gradients() const { return gi_; }

 private:
  Graph& g_;
  const Node& fwd_;
  std::vector<bool> wants_;
  std::vector<TensorId> gi_;
  int counter_ = 0;
};

// Applies the rule for `b.forward().kind`. Throws UserError if the op has no rule.
void apply_grad_rule(GradBuilder& b);

}  // namespace alpa
