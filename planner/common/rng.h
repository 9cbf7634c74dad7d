// Counter-based random numbers (Philox4x32-10). A value depends only on (seed, step, key,
// index), so a dropout mask or an initial value is the same however the tensor is sharded,
// pipelined or recomputed: shard owners pass global element indices.
#pragma once

#include <cstdint>
#include <string_view>

namespace alpa {

// Uniform in [0, 1) with 24 random bits (exactly representable in float32).
float philox_uniform(uint64_t seed, uint64_t step, uint64_t key, uint64_t index);

// A stable 64-bit key for a name (FNV-1a), e.g. the forward node a dropout mask belongs to.
uint64_t stable_key(std::string_view name);

}  // namespace alpa
