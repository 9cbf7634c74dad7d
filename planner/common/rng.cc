// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
//
// Mapping used by philox_uniform(seed, step, key, index) — a CUDA backend must reproduce it:
//   counter = (index & 0xffffffff, index >> 32, step & 0xffffffff, step >> 32)
//   key64   = mix64(mix64(seed) ^ key)            (mix64 = the SplitMix64 finaliser below)
//   key     = (key64 & 0xffffffff, key64 >> 32)
//   x       = word 0 of philox4x32_10(counter, key)
//   result  = (x >> 8) * 2^-24                      (24 random bits, exact in float32)
#include "planner/common/rng.h"

#include <array>

namespace alpa {

// Exposed (not declared in rng.h) so tests can check the known-answer vectors of the block
// function; declare it locally to use it.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kW0;
      key[1] += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

namespace {

uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

float philox_uniform(uint64_t seed, uint64_t step, uint64_t key, uint64_t index) {
  const uint64_t k = mix64(mix64(seed) ^ key);
  const std::array<uint32_t, 4> ctr = {static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                                       static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)};
  const auto out = philox4x32_10(ctr, {static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32)});
  return static_cast<float>(out[0] >> 8) * (1.0f / 16777216.0f);
}

uint64_t stable_key(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace alpa
