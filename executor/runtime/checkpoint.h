// Checkpoints that reload under any plan and rank count: every persistent tensor (parameters,
// buffers, optimizer state) under its global name and global shape, stored as shards that each
// record the index ranges of the global tensor they hold; plus the step (which with the seed is
// the whole state of the counter-based RNG and the data cursor) and the optimizer.
//
// Layout of DIR: manifest.json and shards/<n>.npy. A save writes DIR.partial/ and renames it to
// DIR (an existing DIR is first renamed to DIR.previous and removed only after the new one is in
// place), so an interrupted save never damages the previous checkpoint.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "executor/runtime/trainer.h"

namespace alpa::exec {

inline constexpr const char* kCheckpointFormat = "alpa-checkpoint/1";

struct CheckpointInfo {
  int64_t step = 0;          // steps completed: the next step's index, RNG counter and data cursor
  uint64_t seed = 0;
  std::string optimizer;     // sgd | adam | adamw
  int64_t global_batch = 0;  // the data cursor's unit
};

// The part of a tensor this process holds: [lo, hi) of each global dim (the whole tensor on one
// device or when replicated), and whether this process writes it (one writer per distinct block).
struct HeldBlock {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  bool writer = true;
  // The local buffer's shape when it is larger than the ranges (a padded shard: the ranges are
  // its rows inside the global tensor, the rest padding); empty when equal.
  Shape buffer;
  Shape global;  // the whole tensor's shape; empty: the trainer's tensor shape (unsharded)
};
// Per persistent tensor of the trainer's graph; default: the whole tensor, written.
using BlockOf = std::function<HeldBlock(TensorId)>;

// Copies block `block` of a whole tensor (`global` shape, `elem` bytes per element) into `dst`,
// laid out as the block's buffer; and back (the block's valid part into the whole tensor).
void copy_block(const void* whole, const Shape& global, int64_t elem, const HeldBlock& block, void* dst);
void copy_into_whole(const void* block_data, const HeldBlock& block, const Shape& global, int64_t elem, void* whole);

// Collective when `barrier` is set (every rank calls it; rank 0 merges and renames). Throws
// UserError naming DIR when it cannot be written.
void save_checkpoint(const std::string& dir, const Trainer& trainer, const CheckpointInfo& info, int rank,
                     const BlockOf& block, const std::function<void()>& barrier);

// Reads the manifest (UserError naming the file and element when it is malformed).
CheckpointInfo read_checkpoint_info(const std::string& dir);

// The checkpoint a run resumes from, checked against the run: the same global batch and
// optimizer, a seed flag (when given) equal to the checkpoint's, and more `steps` than it has.
CheckpointInfo check_resume(const std::string& dir, int64_t steps, int64_t global_batch, const std::string& optimizer,
                            const uint64_t* seed_flag);

// Fills every persistent tensor of `trainer` from the shards covering its held block; UserError
// naming DIR and the tensor when one is missing or its dtype or global shape differs.
void load_checkpoint(const std::string& dir, Trainer& trainer, const BlockOf& block);

}  // namespace alpa::exec
