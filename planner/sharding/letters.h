// The iteration space of a node: every operand dim is named by a "letter" (an einsum-style
// index) or marked unsplittable. A strategy assigns each logical mesh axis to at most one letter;
// the operands' specs, the partial sums of the forward (letters missing from an output) and of
// the backward (letters missing from an input) all follow from that assignment. One description
// covers matmul/gemm/einsum, conv, gather, element-wise ops with broadcasting, reductions,
// normalisations, reshapes and transposes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/graph/graph.h"

namespace alpa {

inline constexpr int kNoLetter = -1;

struct Letter {
  int64_t size = 1;
  bool splittable = true;  // false: every operand must hold it whole (softmax axis, conv window)
  bool must_divide = false;  // the batch, and reshape factors: a split must divide the size
  bool is_batch = false;     // indexes samples (data-parallel presets split only these)
};

enum class Reduction : uint8_t { kSum, kMax };

struct IterationSpace {
  std::vector<Letter> letters;
  std::vector<std::vector<int>> inputs;   // per node input, per dim: letter or kNoLetter
  std::vector<std::vector<int>> outputs;  // per node output, per dim: letter or kNoLetter
  // What a split letter that is absent from an output leaves on it.
  Reduction reduction = Reduction::kSum;
  // Ops whose split of a letter needs extra statistics exchanged (BatchNorm over a split batch,
  // vocab-parallel cross-entropy): per letter, bytes all-reduced in forward+backward when split.
  std::vector<double> stats_bytes;
};

// The iteration space of forward node `id`; `batch_dim` gives each tensor's batch axis (-1: none;
// see graph/rebatch.h). Never fails: an op without a finer description gets letters for nothing
// (everything replicated).
IterationSpace iteration_space(const Graph& graph, NodeId id, const std::vector<int>& batch_dim);

}  // namespace alpa
