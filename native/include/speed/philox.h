// Philox-4x32-10 (Salmon et al., Random123) and the normal noise stream built on
// it. Shared verbatim by the CPU and CUDA backends so both draw the same numbers
// for the same (seed, offset).
//
// Stream definition (the contract every backend follows):
//   key     = { lo32(seed), hi32(seed) }
//   block b = offset + i / 4 for element i; counter = { lo32(b), hi32(b), 0, 0 }
//   words w0..w3 = philox4x32_10(counter, key)
//   u_j = (w_j + 0.5) / 2^32           (in (0, 1), never 0)
//   r0 = sqrt(-2 ln u0), r1 = sqrt(-2 ln u2)
//   normals = { r0 cos(2π u1), r0 sin(2π u1), r1 cos(2π u3), r1 sin(2π u3) }
//   element i takes normal (i % 4) of its block; math in double, then rounded.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SPEED_HD __host__ __device__ __forceinline__
#else
#define SPEED_HD inline
#endif

namespace speed {

struct Philox4 {
  uint32_t v[4];
};

SPEED_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

SPEED_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c.v[0], &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c.v[2], &hi1, &lo1);
    Philox4 n;
    n.v[0] = hi1 ^ c.v[1] ^ k0;
    n.v[1] = lo1;
    n.v[2] = hi0 ^ c.v[3] ^ k1;
    n.v[3] = lo0;
    c = n;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// The four normals of block b under seed (see the stream definition above).
SPEED_HD void philox_normal4(uint64_t seed, uint64_t block, double out[4]) {
  Philox4 c;
  c.v[0] = static_cast<uint32_t>(block);
  c.v[1] = static_cast<uint32_t>(block >> 32);
  c.v[2] = 0;
  c.v[3] = 0;
  Philox4 w = philox4x32_10(c, static_cast<uint32_t>(seed),
                            static_cast<uint32_t>(seed >> 32));
  const double inv = 1.0 / 4294967296.0;
  const double two_pi = 6.283185307179586476925286766559;
  double u0 = (w.v[0] + 0.5) * inv, u1 = (w.v[1] + 0.5) * inv;
  double u2 = (w.v[2] + 0.5) * inv, u3 = (w.v[3] + 0.5) * inv;
  double r0 = sqrt(-2.0 * log(u0)), r1 = sqrt(-2.0 * log(u2));
  out[0] = r0 * cos(two_pi * u1);
  out[1] = r0 * sin(two_pi * u1);
  out[2] = r1 * cos(two_pi * u3);
  out[3] = r1 * sin(two_pi * u3);
}

// Number of blocks a draw of n elements consumes (the offset advance).
SPEED_HD uint64_t philox_blocks(uint64_t n) { return (n + 3) / 4; }

}  // namespace speed
