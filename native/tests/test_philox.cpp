// Philox-4x32-10 against the Random123 known-answer vectors (Salmon et al. 2011, kat_vectors), and
// the CPU backend's normal stream: element i is normal (i % 4) of block
// offset + i/4, identical for any thread count, split draws continue one stream,
// and sample moments are those of N(0, 1).
#include <cmath>
#include <cstdio>
#include <vector>

#include "cpu_test_util.h"
#include "speed/cpu.h"
#include "speed/philox.h"

using namespace cputest;

namespace {

void known_answers() {
  struct Kat {
    uint32_t c[4], k[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  int i = 0;
  for (auto& kat : kats) {
    speed::Philox4 c{{kat.c[0], kat.c[1], kat.c[2], kat.c[3]}};
    speed::Philox4 r = speed::philox4x32_10(c, kat.k[0], kat.k[1]);
    bool ok = true;
    for (int j = 0; j < 4; ++j) ok &= r.v[j] == kat.out[j];
    char buf[96];
    std::snprintf(buf, sizeof buf, "got %08x %08x %08x %08x", r.v[0], r.v[1], r.v[2], r.v[3]);
    expect(ok, "philox4x32_10 known answer " + std::to_string(++i), buf);
  }
}

template <typename T>
void stream(const char* tname) {
  const uint64_t seed = 0x123456789abcdefULL, offset = (1ULL << 32) + 5;  // offset crosses 32 bits
  const size_t n = 200003;
  auto b1 = speed::make_cpu_backend<T>(1), b2 = speed::make_cpu_backend<T>(2);
  std::vector<T> x1(n), x2(n);
  poison(x1);
  poison(x2);
  b1->normal(x1.data(), n, seed, offset);
  b2->normal(x2.data(), n, seed, offset);
  std::string t = tname;
  expect(bitwise_equal(x1, x2) && all_finite(x1), t + " normal: same numbers for 1 and 2 threads");

  // the definition: element i = normal (i % 4) of block offset + i / 4
  bool def = true;
  for (size_t i : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(4), size_t(77), n - 1}) {
    double z[4];
    speed::philox_normal4(seed, offset + i / 4, z);
    def &= x1[i] == T(z[i % 4]);
  }
  expect(def, t + " normal: element i is normal i%4 of block offset + i/4");

  // n then m with the offset advanced by ceil(n/4) equals one draw of n + m (n % 4 == 0)
  const size_t a = 1000, m = 2001;
  std::vector<T> one(a + m), first(a), second(m);
  b2->normal(one.data(), a + m, seed, 42);
  b2->normal(first.data(), a, seed, 42);
  b2->normal(second.data(), m, seed, 42 + speed::philox_blocks(a));
  bool cont = true;
  for (size_t i = 0; i < a; ++i) cont &= first[i] == one[i];
  for (size_t i = 0; i < m; ++i) cont &= second[i] == one[a + i];
  expect(cont, t + " normal: draws of n then m continue one draw of n + m");

  std::vector<T> other(n);
  b2->normal(other.data(), n, seed + 1, offset);
  expect(!bitwise_equal(other, x1), t + " normal: another seed gives other numbers");

  double s = 0, s2 = 0, s4 = 0;
  for (T v : x1) {
    s += v;
    s2 += double(v) * v;
    s4 += double(v) * v * v * v;
  }
  double mean = s / n, var = s2 / n - mean * mean, kurt = s4 / n;
  // standard errors: mean 1/sqrt(n) = 0.0022, var sqrt(2/n) = 0.0032, E z^4 sqrt(96/n) = 0.022
  expect(std::fabs(mean) < 0.012 && std::fabs(var - 1) < 0.016 && std::fabs(kurt - 3) < 0.11,
         t + " normal: mean, variance and 4th moment of N(0, 1)",
         "mean " + fmt(mean) + " var " + fmt(var) + " m4 " + fmt(kurt));
}

}  // namespace

int main() {
  known_answers();
  stream<float>("float");
  stream<double>("double");
  return finish("test_philox");
}
