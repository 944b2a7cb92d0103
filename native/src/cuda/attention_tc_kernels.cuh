// Device code of the bf16 tensor-core attention kernels (tc and tc2; attention_tc.cu says
// what they compute, native/bench/NOTES.md "Attention" / "Attention tc2" why). Included by
// attention_tc.cu inside speed::cuda::{anonymous}, after the inline-PTX wrappers, and by the
// host test native/tests/test_attention_tc_host.cpp, which compiles the same source as C++
// (one std::thread per CUDA thread, warp-collective emulations of the wrappers) and checks it
// against the CPU backend in every CPU build. So: no #include here; the includer provides
//   types/functions: uint32_t, size_t, float2/float4/uint2/uint4 and make_*, __nv_bfloat16(2),
//     __floats2bfloat162_rn, __float2bfloat16_rn, __bfloat162float, __low2float, __high2float,
//     __ldg, __shfl_xor_sync, __syncthreads, memcpy, exp2f, logf, fmaxf, INFINITY,
//     threadIdx/blockIdx/blockDim;
//   inline-PTX wrappers: mma16816 (mma.sync m16n8k16 bf16), smem_u32 (shared address),
//     cp_async16 / cp_async_commit / cp_async_wait<N> (cp.async.cg 16 B), ldsm_x4 / ldsm_x4_t
//     (ldmatrix .x4 / .x4.trans);
//   keywords: __global__/__device__/__forceinline__/__shared__/__restrict__, __align__,
//     __launch_bounds__, and SPEED_UNROLL (SPEED_UNROLL on the device).

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kThreads = 128;  // 4 warps
constexpr int kRows = 64;      // query rows per block (fwd, dq); key rows per block (dkv)
constexpr int kKeys = 64;      // keys per tile (fwd, dq)
constexpr int kBq = 32;        // queries per tile (dkv)

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low 16 bits) = lo
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}


template <int HD>
struct Dims {
  static constexpr int HDP = (HD + 15) / 16 * 16;  // padded head dim (k16 steps)
  static constexpr int KT = HDP / 16;              // k-steps over the head dim
  static constexpr int NT = HDP / 8;               // n8 tiles over the head dim
  static constexpr int SW = HDP / 2 + 4;           // words per [row][d] row (4 or 12 mod 32)
};
// words per transposed [d][row] row holding R rows (R = 64: 36, R = 32: 20)
template <int R>
struct TW {
  static constexpr int value = R / 2 + 4;
};

// Reads rows [r0, r0 + ROWS) of a row-major float matrix (row stride ld floats),
// columns [0, HDP): rows >= L and columns >= HD read as 0. f(r, c, float4) per 4 columns.
// ROW_FAST = false: consecutive threads take consecutive 16-byte chunks of a row
// (coalesced; for row-major shared stores). ROW_FAST = true: consecutive threads take
// consecutive rows at the same columns, so that the transposed bf16 stores [d][row]
// of a warp land in consecutive words (the other order puts them 16-way into 2 banks).
template <int HD, int ROWS, bool ROW_FAST = false, class F>
__device__ __forceinline__ void load_tile(const float* __restrict__ base, size_t ld, int r0,
                                          int L, F&& f) {
  constexpr int HDP = Dims<HD>::HDP, C4 = HDP / 4;
  for (int e = threadIdx.x; e < ROWS * C4; e += blockDim.x) {
    const int r = ROW_FAST ? e % ROWS : e / C4;
    const int c = ROW_FAST ? (e / ROWS) * 4 : (e - r * C4) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r0 + r < L && c < HD) v = __ldg(reinterpret_cast<const float4*>(base + (size_t)(r0 + r) * ld + c));
    f(r, c, v);
  }
}

// row-major bf16 store: S[r][c..c+3] (S in words, SW words per row)
template <int SWW>
__device__ __forceinline__ void st_row(uint32_t* S, int r, int c, float4 v) {
  *reinterpret_cast<uint2*>(S + r * SWW + c / 2) = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
}
// transposed bf16 store: T[c+q][r] (T in words, TWW words per row)
template <int TWW>
__device__ __forceinline__ void st_col(uint32_t* T, int r, int c, float4 v) {
  __nv_bfloat16* Tb = reinterpret_cast<__nv_bfloat16*>(T);
  Tb[(c + 0) * (2 * TWW) + r] = __float2bfloat16_rn(v.x);
  Tb[(c + 1) * (2 * TWW) + r] = __float2bfloat16_rn(v.y);
  Tb[(c + 2) * (2 * TWW) + r] = __float2bfloat16_rn(v.z);
  Tb[(c + 3) * (2 * TWW) + r] = __float2bfloat16_rn(v.w);
}

// A fragments over the head dim for rows row0..row0+15 of a [row][d] word array.
template <int HD, int SWW>
__device__ __forceinline__ void load_a(uint32_t (&a)[Dims<HD>::KT][4], const uint32_t* S, int row0,
                                       int g, int t) {
SPEED_UNROLL
  for (int kt = 0; kt < Dims<HD>::KT; ++kt) {
    a[kt][0] = S[(row0 + g) * SWW + kt * 8 + t];
    a[kt][1] = S[(row0 + g + 8) * SWW + kt * 8 + t];
    a[kt][2] = S[(row0 + g) * SWW + kt * 8 + 4 + t];
    a[kt][3] = S[(row0 + g + 8) * SWW + kt * 8 + 4 + t];
  }
}

// c[nt] (nt < NTILES) = A (16 x HDP) . B^T where B rows are n (NTILES*8 of them) of a
// [n][d] word array: a product whose k is the head dim.
template <int HD, int NTILES, int SWW>
__device__ __forceinline__ void mma_k_hd(float (&c)[NTILES][4], const uint32_t (&a)[Dims<HD>::KT][4],
                                         const uint32_t* B, int g, int t) {
SPEED_UNROLL
  for (int nt = 0; nt < NTILES; ++nt) {
    c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
SPEED_UNROLL
    for (int kt = 0; kt < Dims<HD>::KT; ++kt) {
      const uint32_t* row = B + (nt * 8 + g) * SWW + kt * 8;
      mma16816(c[nt], a[kt], row[t], row[4 + t]);
    }
  }
}

// acc[nt] (nt < NT over the head dim) += P (16 x 16*KSTEPS, from accumulator pairs p)
// . B where B is stored transposed [d][k] (TWW words per row).
template <int HD, int KSTEPS, int TWW>
__device__ __forceinline__ void mma_k_rows(float (&acc)[Dims<HD>::NT][4], const float (&p)[2 * KSTEPS][4],
                                           const uint32_t* BT, int g, int t) {
SPEED_UNROLL
  for (int kk = 0; kk < KSTEPS; ++kk) {
    uint32_t a[4];
    a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
    a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
    a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
SPEED_UNROLL
    for (int nt = 0; nt < Dims<HD>::NT; ++nt) {
      const uint32_t* row = BT + (nt * 8 + g) * TWW + kk * 8;
      mma16816(acc[nt], a, row[t], row[4 + t]);
    }
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// ---- forward ---------------------------------------------------------------------------
template <int HD, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) attn_tc_fwd_k(const float* __restrict__ qkv,
                                                          float* __restrict__ out,
                                                          float* __restrict__ lse, int L,
                                                          int heads, float scale_log2) {
  using Dm = Dims<HD>;
  constexpr int SW = Dm::SW, NT = Dm::NT, KT = Dm::KT, VW = TW<kKeys>::value;
  constexpr int ROWS = 16 * WARPS;                     // query rows per block
  __shared__ __align__(16) uint32_t Qs[ROWS * SW];
  __shared__ __align__(16) uint32_t Ks[kKeys * SW];
  __shared__ __align__(16) uint32_t Vt[Dm::HDP * VW];  // V^T [d][key]
  const int n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ROWS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t hs = (size_t)heads * HD, ld = 3 * hs;
  const float* base = qkv + (size_t)n * L * ld + (size_t)h * HD;

  load_tile<HD, ROWS>(base, ld, q0, L, [&](int r, int c, float4 v) { st_row<SW>(Qs, r, c, v); });
  __syncthreads();
  uint32_t qa[KT][4];
  load_a<HD, SW>(qa, Qs, warp * 16, g, t);

  float o[NT][4];
SPEED_UNROLL
  for (int i = 0; i < NT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows g, g+8 (log2 units)

  for (int j0 = 0; j0 < L; j0 += kKeys) {
    __syncthreads();  // previous tile fully consumed
    load_tile<HD, kKeys>(base + hs, ld, j0, L, [&](int r, int c, float4 v) { st_row<SW>(Ks, r, c, v); });
    load_tile<HD, kKeys, true>(base + 2 * hs, ld, j0, L, [&](int r, int c, float4 v) { st_col<VW>(Vt, r, c, v); });
    __syncthreads();
    float s[kKeys / 8][4];
    mma_k_hd<HD, kKeys / 8, SW>(s, qa, Ks, g, t);
    float mx0 = -INFINITY, mx1 = -INFINITY;
SPEED_UNROLL
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      const int j = j0 + nt * 8 + 2 * t;
SPEED_UNROLL
      for (int e = 0; e < 4; ++e) {
        const bool ok = j + (e & 1) < L;
        s[nt][e] = ok ? s[nt][e] * scale_log2 : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    const float mn0 = fmaxf(m0, quad_max(mx0)), mn1 = fmaxf(m1, quad_max(mx1));
    const float c0 = exp2f(m0 - mn0), c1 = exp2f(m1 - mn1);  // 0 on the first tile
    m0 = mn0;
    m1 = mn1;
    l0 *= c0;
    l1 *= c1;
SPEED_UNROLL
    for (int i = 0; i < NT; ++i) {
      o[i][0] *= c0;
      o[i][1] *= c0;
      o[i][2] *= c1;
      o[i][3] *= c1;
    }
SPEED_UNROLL
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - m0);
      s[nt][1] = exp2f(s[nt][1] - m0);
      s[nt][2] = exp2f(s[nt][2] - m1);
      s[nt][3] = exp2f(s[nt][3] - m1);
      l0 += s[nt][0] + s[nt][1];
      l1 += s[nt][2] + s[nt][3];
    }
    mma_k_rows<HD, kKeys / 16, VW>(o, s, Vt, g, t);
  }
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const int i0 = q0 + warp * 16 + g, i1 = i0 + 8;
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
SPEED_UNROLL
  for (int nt = 0; nt < NT; ++nt) {
    const int d = nt * 8 + 2 * t;
    if (d < HD) {
      if (i0 < L)
        *reinterpret_cast<float2*>(out + (((size_t)n * L + i0) * heads + h) * HD + d) =
            make_float2(o[nt][0] * inv0, o[nt][1] * inv0);
      if (i1 < L)
        *reinterpret_cast<float2*>(out + (((size_t)n * L + i1) * heads + h) * HD + d) =
            make_float2(o[nt][2] * inv1, o[nt][3] * inv1);
    }
  }
  if (t == 0) {
    float* lrow = lse + ((size_t)n * heads + h) * L;
    if (i0 < L) lrow[i0] = m0 * kLn2 + logf(l0);
    if (i1 < L) lrow[i1] = m1 * kLn2 + logf(l1);
  }
}

// ---- backward, dQ (and D) ------------------------------------------------------------------
template <int HD>
__global__ void __launch_bounds__(kThreads) attn_tc_bwd_dq_k(
    const float* __restrict__ qkv, const float* __restrict__ out, const float* __restrict__ dout,
    const float* __restrict__ lse, float* __restrict__ dqkv, float* __restrict__ Dterm, int L,
    int heads, float scale, float scale_log2) {
  using Dm = Dims<HD>;
  constexpr int SW = Dm::SW, NT = Dm::NT, KT = Dm::KT, KW = TW<kKeys>::value;
  __shared__ __align__(16) uint32_t Ks[kKeys * SW];    // first Q, then K [key][d]
  __shared__ __align__(16) uint32_t Vs[kKeys * SW];    // first dO, then V [key][d]
  __shared__ __align__(16) uint32_t Kt[Dm::HDP * KW];  // K^T [d][key]
  __shared__ float Dsh[kRows], Lsh[kRows];
  const int n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kRows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t hs = (size_t)heads * HD, ld = 3 * hs;
  const float* base = qkv + (size_t)n * L * ld + (size_t)h * HD;
  const float* obase = out + (size_t)n * L * hs + (size_t)h * HD;
  const float* dobase = dout + (size_t)n * L * hs + (size_t)h * HD;

  // D_i = dO_i . O_i (one warp per row, 16 rows per warp), float32 sums of the
  // bf16-rounded values that dP = dO V^T multiplies, so that dP - D cancels as it
  // should (at L = 1, O = V and dS must be 0); lse in log2 units
  for (int rr = 0; rr < kRows / 4; ++rr) {
    const int r = warp * (kRows / 4) + rr, i = q0 + r;
    float acc = 0.f;
    if (i < L)
      for (int d = lane; d < HD; d += 32)
        acc += __bfloat162float(__float2bfloat16_rn(obase[(size_t)i * hs + d])) *
               __bfloat162float(__float2bfloat16_rn(dobase[(size_t)i * hs + d]));
SPEED_UNROLL
    for (int off = 16; off; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
      Dsh[r] = acc;
      Lsh[r] = i < L ? lse[((size_t)n * heads + h) * L + i] * kLog2e : 0.f;
      if (i < L) Dterm[((size_t)n * heads + h) * L + i] = acc;
    }
  }
  load_tile<HD, kRows>(base, ld, q0, L, [&](int r, int c, float4 v) { st_row<SW>(Ks, r, c, v); });
  load_tile<HD, kRows>(dobase, hs, q0, L, [&](int r, int c, float4 v) { st_row<SW>(Vs, r, c, v); });
  __syncthreads();
  uint32_t qa[KT][4], da[KT][4];
  load_a<HD, SW>(qa, Ks, warp * 16, g, t);
  load_a<HD, SW>(da, Vs, warp * 16, g, t);
  const int r0 = warp * 16 + g;
  const float D0 = Dsh[r0], D1 = Dsh[r0 + 8], L0 = Lsh[r0], L1 = Lsh[r0 + 8];

  float dq[NT][4];
SPEED_UNROLL
  for (int i = 0; i < NT; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

  for (int j0 = 0; j0 < L; j0 += kKeys) {
    __syncthreads();
    load_tile<HD, kKeys, true>(base + hs, ld, j0, L, [&](int r, int c, float4 v) {
      st_row<SW>(Ks, r, c, v);
      st_col<KW>(Kt, r, c, v);
    });
    load_tile<HD, kKeys>(base + 2 * hs, ld, j0, L, [&](int r, int c, float4 v) { st_row<SW>(Vs, r, c, v); });
    __syncthreads();
    float s[kKeys / 8][4], dp[kKeys / 8][4];
    mma_k_hd<HD, kKeys / 8, SW>(s, qa, Ks, g, t);
    mma_k_hd<HD, kKeys / 8, SW>(dp, da, Vs, g, t);
SPEED_UNROLL
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      const int j = j0 + nt * 8 + 2 * t;
SPEED_UNROLL
      for (int e = 0; e < 4; ++e) {
        const bool ok = j + (e & 1) < L;
        const float p = ok ? exp2f(s[nt][e] * scale_log2 - (e < 2 ? L0 : L1)) : 0.f;
        s[nt][e] = p * (dp[nt][e] - (e < 2 ? D0 : D1));  // dS
      }
    }
    mma_k_rows<HD, kKeys / 16, KW>(dq, s, Kt, g, t);
  }
  const int i0 = q0 + r0, i1 = i0 + 8;
SPEED_UNROLL
  for (int nt = 0; nt < NT; ++nt) {
    const int d = nt * 8 + 2 * t;
    if (d < HD) {
      if (i0 < L)
        *reinterpret_cast<float2*>(dqkv + ((size_t)n * L + i0) * ld + (size_t)h * HD + d) =
            make_float2(dq[nt][0] * scale, dq[nt][1] * scale);
      if (i1 < L)
        *reinterpret_cast<float2*>(dqkv + ((size_t)n * L + i1) * ld + (size_t)h * HD + d) =
            make_float2(dq[nt][2] * scale, dq[nt][3] * scale);
    }
  }
}

// ---- backward, dK and dV ---------------------------------------------------------------------
template <int HD, int ROWS>
struct DkvSmem {
  using Dm = Dims<HD>;
  static constexpr int QW = TW<kBq>::value;
  static constexpr int stage = 2 * ROWS * Dm::SW;                      // K, V [key][d]
  static constexpr int tiles = 2 * kBq * Dm::SW + 2 * Dm::HDP * QW;    // Q, dO, Q^T, dO^T
  static constexpr int words = stage > tiles ? stage : tiles;
};

template <int HD, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) attn_tc_bwd_dkv_k(
    const float* __restrict__ qkv, const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ Dterm, float* __restrict__ dqkv, int L, int heads, float scale,
    float scale_log2) {
  using Dm = Dims<HD>;
  constexpr int ROWS = 16 * WARPS;  // key rows per block
  using Sm = DkvSmem<HD, ROWS>;
  constexpr int SW = Dm::SW, NT = Dm::NT, KT = Dm::KT, QW = Sm::QW;
  __shared__ __align__(16) uint32_t sm[Sm::words];
  __shared__ float Lsh[kBq], Dsh[kBq];
  uint32_t* Qs = sm;                    // [q][d]
  uint32_t* dOs = Qs + kBq * SW;        // [q][d]
  uint32_t* Qt = dOs + kBq * SW;        // [d][q]
  uint32_t* dOt = Qt + Dm::HDP * QW;    // [d][q]
  const int n = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * ROWS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t hs = (size_t)heads * HD, ld = 3 * hs;
  const float* base = qkv + (size_t)n * L * ld + (size_t)h * HD;
  const float* dobase = dout + (size_t)n * L * hs + (size_t)h * HD;
  const float* lrow = lse + ((size_t)n * heads + h) * L;
  const float* drow = Dterm + ((size_t)n * heads + h) * L;

  // K and V A fragments (this warp's 16 keys), staged through shared memory
  load_tile<HD, ROWS>(base + hs, ld, k0, L, [&](int r, int c, float4 v) { st_row<SW>(sm, r, c, v); });
  load_tile<HD, ROWS>(base + 2 * hs, ld, k0, L,
                      [&](int r, int c, float4 v) { st_row<SW>(sm + ROWS * SW, r, c, v); });
  __syncthreads();
  uint32_t ka[KT][4], va[KT][4];
  load_a<HD, SW>(ka, sm, warp * 16, g, t);
  load_a<HD, SW>(va, sm + ROWS * SW, warp * 16, g, t);

  float dk[NT][4], dv[NT][4];
SPEED_UNROLL
  for (int i = 0; i < NT; ++i) {
    dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.f;
    dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;
  }

  for (int i0 = 0; i0 < L; i0 += kBq) {
    __syncthreads();  // staging / previous tile consumed
    load_tile<HD, kBq, true>(base, ld, i0, L, [&](int r, int c, float4 v) {
      st_row<SW>(Qs, r, c, v);
      st_col<QW>(Qt, r, c, v);
    });
    load_tile<HD, kBq, true>(dobase, hs, i0, L, [&](int r, int c, float4 v) {
      st_row<SW>(dOs, r, c, v);
      st_col<QW>(dOt, r, c, v);
    });
    for (int r = threadIdx.x; r < kBq; r += blockDim.x) {
      const bool ok = i0 + r < L;
      Lsh[r] = ok ? lrow[i0 + r] * kLog2e : INFINITY;  // P^T = 0 for rows past L
      Dsh[r] = ok ? drow[i0 + r] : 0.f;
    }
    __syncthreads();
    float s[kBq / 8][4], dp[kBq / 8][4];
    mma_k_hd<HD, kBq / 8, SW>(s, ka, Qs, g, t);   // S^T [key][q]
    mma_k_hd<HD, kBq / 8, SW>(dp, va, dOs, g, t); // dP^T [key][q]
SPEED_UNROLL
    for (int nt = 0; nt < kBq / 8; ++nt) {
      const int q = nt * 8 + 2 * t;
SPEED_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int qq = q + (e & 1);
        const float p = exp2f(s[nt][e] * scale_log2 - Lsh[qq]);
        s[nt][e] = p;
        dp[nt][e] = p * (dp[nt][e] - Dsh[qq]);  // dS^T
      }
    }
    mma_k_rows<HD, kBq / 16, QW>(dv, s, dOt, g, t);
    mma_k_rows<HD, kBq / 16, QW>(dk, dp, Qt, g, t);
  }
  const int j0 = k0 + warp * 16 + g, j1 = j0 + 8;
SPEED_UNROLL
  for (int nt = 0; nt < NT; ++nt) {
    const int d = nt * 8 + 2 * t;
    if (d < HD) {
      if (j0 < L) {
        float* row = dqkv + ((size_t)n * L + j0) * ld + (size_t)h * HD + d;
        *reinterpret_cast<float2*>(row + hs) = make_float2(dk[nt][0] * scale, dk[nt][1] * scale);
        *reinterpret_cast<float2*>(row + 2 * hs) = make_float2(dv[nt][0], dv[nt][1]);
      }
      if (j1 < L) {
        float* row = dqkv + ((size_t)n * L + j1) * ld + (size_t)h * HD + d;
        *reinterpret_cast<float2*>(row + hs) = make_float2(dk[nt][2] * scale, dk[nt][3] * scale);
        *reinterpret_cast<float2*>(row + 2 * hs) = make_float2(dv[nt][2], dv[nt][3]);
      }
    }
  }
}

// ==== tc2: one bf16 copy per call + cp.async double buffering (SPEED_CUDA_ATTENTION=tc2) ====
//
// A conversion pass writes Q, K, V (and, for the backward, dO) once per call into a bf16
// workspace laid out per (n, head) as contiguous [Lp][HDP] matrices: Lp = L rounded up to
// 128 (the largest tile), HDP = head dim padded to 16; padded rows and columns are zero
// (finite, so that masked keys times V stay 0). The backward pass also writes, per (n, head),
// lse2 = lse * log2(e) ([Lp], +inf past L so that P = 0 there) and D = rowsum(bf16(dO) *
// bf16(O)) ([Lp], 0 past L). Tiles never need bounds checks: every tile lies inside [0, Lp).
//
// Kernels: the same products and block shapes as above, but
//   - A fragments (Q / dO rows of the block, K / V rows in dK/dV) are loaded once, straight
//     from the bf16 copy in global memory (32-bit loads, same index math as load_a);
//   - streamed tiles (K and V in fwd and dq; Q, dO, lse2, D in dkv) arrive by 16-byte
//     cp.async.cg into two shared stages: tile j+1 is in flight while tile j is multiplied;
//   - every B fragment comes from row-major [row][d] shared tiles (row stride SW words,
//     4 or 12 mod 32: the 8 rows x 16 bytes of one ldmatrix phase hit 32 distinct banks):
//     ldmatrix.x4 for products whose k is the head dim (S = Q K^T, dP = dO V^T, S^T, dP^T),
//     ldmatrix.x4.trans for products whose k is the key/query index (P V, dS K, P^T dO,
//     dS^T Q), so no transposed copies are stored.

// Queues the copy of R rows x HDP bf16 (contiguous in global: R * HDP * 2 bytes) into
// shared rows of SW words at byte address sdst, 16 bytes per cp.async. Each thread keeps one
// (row, 16-byte column) position, rr = tid / C8, c = tid % C8, and steps by RPP = NTHR / C8
// rows per pass (threads with rr >= RPP idle), so that per pass only immediates change.
template <int HD, int R, int NTHR>
__device__ __forceinline__ void cp_tile(uint32_t sdst, const __nv_bfloat16* __restrict__ gsrc) {
  constexpr int HDP = Dims<HD>::HDP, C8 = HDP / 8, SWB = Dims<HD>::SW * 4, RPP = NTHR / C8;
  static_assert(RPP >= 1, "a pass covers at least one row");
  const int rr = threadIdx.x / C8, c = threadIdx.x - rr * C8;
  if (rr >= RPP) return;
  const uint32_t sd = sdst + rr * SWB + c * 16;
  const __nv_bfloat16* gs = gsrc + rr * HDP + c * 8;
SPEED_UNROLL
  for (int k = 0; k < (R + RPP - 1) / RPP; ++k)
    if (rr + k * RPP < R) cp_async16(sd + k * RPP * SWB, gs + k * RPP * HDP);
}

// c[nt] = A (16 x HDP) . B^T, B = NTILES*8 rows [n][d] at shared byte address Bs (SW words
// per row). One ldmatrix.x4 gives b0, b1 of tiles nt and nt+1 for one k16 step:
// matrix i = lane / 8: rows (nt + i/2)*8 + lane%8, columns kt*16 + (i%2)*8.
template <int HD, int NTILES>
__device__ __forceinline__ void mma_k_hd_ldsm(float (&c)[NTILES][4], const uint32_t (&a)[Dims<HD>::KT][4],
                                              uint32_t Bs, int lane) {
  static_assert(NTILES % 2 == 0, "n8 tiles go in pairs");
  constexpr int SW = Dims<HD>::SW;
  const uint32_t base = Bs + ((((lane >> 4) & 1) * 8 + (lane & 7)) * SW + ((lane >> 3) & 1) * 4) * 4;
SPEED_UNROLL
  for (int nt = 0; nt < NTILES; ++nt) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
SPEED_UNROLL
  for (int nt = 0; nt < NTILES; nt += 2) {
SPEED_UNROLL
    for (int kt = 0; kt < Dims<HD>::KT; ++kt) {
      uint32_t b[4];
      ldsm_x4(b, base + (nt * 8 * SW + kt * 8) * 4);
      mma16816(c[nt], a[kt], b[0], b[1]);
      mma16816(c[nt + 1], a[kt], b[2], b[3]);
    }
  }
}

// acc[nt] (NT over the head dim) += P (16 x 16*KSTEPS, accumulator pairs p) . B, where B is
// [k][d] row-major at shared byte address Bs (k = key or query index). ldmatrix.x4.trans:
// matrix i = lane / 8: rows kk*16 + (i%2)*8 + lane%8, columns (nt + i/2)*8.
template <int HD, int KSTEPS>
__device__ __forceinline__ void mma_k_rows_ldsm(float (&acc)[Dims<HD>::NT][4], const float (&p)[2 * KSTEPS][4],
                                                uint32_t Bs, int lane) {
  constexpr int SW = Dims<HD>::SW, NT = Dims<HD>::NT;
  static_assert(NT % 2 == 0, "n8 tiles go in pairs");
  const uint32_t base = Bs + ((((lane >> 3) & 1) * 8 + (lane & 7)) * SW + ((lane >> 4) & 1) * 4) * 4;
SPEED_UNROLL
  for (int kk = 0; kk < KSTEPS; ++kk) {
    uint32_t a[4];
    a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
    a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
    a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
SPEED_UNROLL
    for (int nt = 0; nt < NT; nt += 2) {
      uint32_t b[4];
      ldsm_x4_t(b, base + (kk * 16 * SW + nt * 4) * 4);
      mma16816(acc[nt], a, b[0], b[1]);
      mma16816(acc[nt + 1], a, b[2], b[3]);
    }
  }
}

// qkv float32 [N, L, 3, heads, HD] -> dst bf16 [3][N][heads][Lp][HDP] (zero past L / HD), for
// which = which0..2 (the forward converts K and V only: its Q rows are read once, from float32).
// grid (ceil(Lp*HDP/8 / 256), (3 - which0)*heads, N), 256 threads, one 8-element chunk per thread.
template <int HD>
__global__ void __launch_bounds__(256) attn_tc2_qkv_bf16_k(const float* __restrict__ qkv,
                                                           __nv_bfloat16* __restrict__ dst, int N, int L,
                                                           int Lp, int heads, int which0) {
  constexpr int HDP = Dims<HD>::HDP, C8 = HDP / 8;
  const int idx = blockIdx.x * 256 + threadIdx.x;
  if (idx >= Lp * C8) return;
  const int wy = blockIdx.y / heads, h = blockIdx.y - wy * heads, n = blockIdx.z, which = which0 + wy;
  const int l = idx / C8, c = idx - l * C8;
  uint4 w = make_uint4(0u, 0u, 0u, 0u);
  if (l < L && c * 8 < HD) {
    const float4* src = reinterpret_cast<const float4*>(
        qkv + (((size_t)n * L + l) * 3 + which) * heads * HD + (size_t)h * HD + c * 8);
    const float4 v0 = __ldg(src), v1 = __ldg(src + 1);
    w = make_uint4(pack_bf16(v0.x, v0.y), pack_bf16(v0.z, v0.w), pack_bf16(v1.x, v1.y), pack_bf16(v1.z, v1.w));
  }
  *reinterpret_cast<uint4*>(dst + (((size_t)which * N + n) * heads + h) * Lp * HDP + (size_t)idx * 8) = w;
}

// Backward prologue, one warp per (n, head, row l < Lp), lane q < HD/4 owning columns 4q..4q+3
// (coalesced 16-byte loads of O and dO, 8-byte bf16 stores of a 2*HDP-byte row):
// dob[n][h][l][:] = bf16(dO) (zero past L / HD); D[n][h][l] = sum_d bf16(dO) bf16(O) (float32,
// per-lane sums, then a fixed xor-shuffle tree: deterministic; 0 past L); lse2[n][h][l] =
// lse * log2(e) (+inf past L). grid (Lp / 8, heads, N), 256 threads (8 rows per block).
template <int HD>
__global__ void __launch_bounds__(256) attn_tc2_dout_prep_k(
    const float* __restrict__ out, const float* __restrict__ dout, const float* __restrict__ lse,
    __nv_bfloat16* __restrict__ dob, float* __restrict__ lse2, float* __restrict__ Dt, int L, int Lp,
    int heads) {
  constexpr int HDP = Dims<HD>::HDP;
  static_assert(HDP / 4 <= 32, "one float4 of the row per lane");
  const int lane = threadIdx.x & 31, l = blockIdx.x * 8 + (threadIdx.x >> 5), h = blockIdx.y, n = blockIdx.z;
  const size_t nh = (size_t)n * heads + h;  // l < Lp: Lp % 8 == 0 and the grid is Lp / 8
  float acc = 0.f;
  uint2 w = make_uint2(0u, 0u);
  if (l < L && lane < HD / 4) {
    const size_t off = (((size_t)n * L + l) * heads + h) * HD + lane * 4;
    const float4 o = __ldg(reinterpret_cast<const float4*>(out + off));
    const float4 d = __ldg(reinterpret_cast<const float4*>(dout + off));
    const __nv_bfloat162 d01 = __floats2bfloat162_rn(d.x, d.y), d23 = __floats2bfloat162_rn(d.z, d.w);
    const __nv_bfloat162 o01 = __floats2bfloat162_rn(o.x, o.y), o23 = __floats2bfloat162_rn(o.z, o.w);
    acc = __low2float(o01) * __low2float(d01);
    acc += __high2float(o01) * __high2float(d01);
    acc += __low2float(o23) * __low2float(d23);
    acc += __high2float(o23) * __high2float(d23);
    memcpy(&w.x, &d01, 4);
    memcpy(&w.y, &d23, 4);
  }
SPEED_UNROLL
  for (int off = 16; off; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane < HDP / 4) *reinterpret_cast<uint2*>(dob + (nh * Lp + l) * HDP + lane * 4) = w;
  if (lane == 0) {
    lse2[nh * Lp + l] = l < L ? lse[nh * L + l] * kLog2e : INFINITY;
    Dt[nh * Lp + l] = acc;
  }
}

// A fragments (as load_a) of rows row0..row0+15 straight from a float32 [row][ld] matrix,
// rounded to bf16 in registers; rows >= L and columns >= HD read as 0 (8-byte loads).
template <int HD>
__device__ __forceinline__ void load_a_f32(uint32_t (&a)[Dims<HD>::KT][4], const float* __restrict__ base,
                                           size_t ld, int row0, int L, int g, int t) {
SPEED_UNROLL
  for (int kt = 0; kt < Dims<HD>::KT; ++kt)
SPEED_UNROLL
    for (int i = 0; i < 4; ++i) {  // a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+8), a3 (g+8, 2t+8)
      const int r = row0 + g + 8 * (i & 1), d = kt * 16 + 8 * (i >> 1) + 2 * t;
      float2 v = make_float2(0.f, 0.f);
      if (r < L && d < HD) v = __ldg(reinterpret_cast<const float2*>(base + (size_t)r * ld + d));
      a[kt][i] = pack_bf16(v.x, v.y);
    }
}

// ---- tc2 forward: block = 16*WARPS query rows, 64-key tiles in two cp.async stages ----------
template <int HD, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 16 / WARPS) attn_tc2_fwd_k(const float* __restrict__ qkv,
                                                           const __nv_bfloat16* __restrict__ kb,
                                                           const __nv_bfloat16* __restrict__ vb,
                                                           float* __restrict__ out, float* __restrict__ lse,
                                                           int L, int Lp, int heads, float scale_log2) {
  using Dm = Dims<HD>;
  constexpr int SW = Dm::SW, NT = Dm::NT, KT = Dm::KT, HDP = Dm::HDP;
  constexpr int ROWS = 16 * WARPS, NTHR = WARPS * 32;
  constexpr int TILEB = kKeys * SW * 4;  // bytes of one [64][SW] tile
  __shared__ __align__(16) uint32_t sm[4 * kKeys * SW];  // stage s: K at 2s, V at 2s+1
  const int n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ROWS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t hoff = ((size_t)n * heads + h) * Lp * HDP;
  const __nv_bfloat16* Kg = kb + hoff;
  const __nv_bfloat16* Vg = vb + hoff;
  const uint32_t s0 = smem_u32(sm);

  cp_tile<HD, kKeys, NTHR>(s0, Kg);
  cp_tile<HD, kKeys, NTHR>(s0 + TILEB, Vg);
  cp_async_commit();
  uint32_t qa[KT][4];  // rows q0 + warp*16 .. +15, straight from the float32 qkv (Q: which = 0)
  load_a_f32<HD>(qa, qkv + (size_t)n * L * 3 * heads * HD + (size_t)h * HD, (size_t)3 * heads * HD,
                 q0 + warp * 16, L, g, t);

  float o[NT][4];
SPEED_UNROLL
  for (int i = 0; i < NT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows g, g+8 (log2 units)

  const int ntiles = (L + kKeys - 1) / kKeys;
  for (int jt = 0; jt < ntiles; ++jt) {
    const int j0 = jt * kKeys;
    if (jt + 1 < ntiles) {  // prefetch tile jt+1 into the other stage (freed at the end of jt-1)
      const uint32_t nb = s0 + ((jt + 1) & 1) * 2 * TILEB;
      cp_tile<HD, kKeys, NTHR>(nb, Kg + (size_t)(j0 + kKeys) * HDP);
      cp_tile<HD, kKeys, NTHR>(nb + TILEB, Vg + (size_t)(j0 + kKeys) * HDP);
      cp_async_commit();
      cp_async_wait<1>();  // tile jt has landed (this thread's copies)
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // ... and everyone's
    const uint32_t Ks = s0 + (jt & 1) * 2 * TILEB, Vs = Ks + TILEB;
    float s[kKeys / 8][4];
    mma_k_hd_ldsm<HD, kKeys / 8>(s, qa, Ks, lane);
    float mx0 = -INFINITY, mx1 = -INFINITY;
SPEED_UNROLL
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      const int j = j0 + nt * 8 + 2 * t;
SPEED_UNROLL
      for (int e = 0; e < 4; ++e) {
        const bool ok = j + (e & 1) < L;
        s[nt][e] = ok ? s[nt][e] * scale_log2 : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    const float mn0 = fmaxf(m0, quad_max(mx0)), mn1 = fmaxf(m1, quad_max(mx1));
    const float c0 = exp2f(m0 - mn0), c1 = exp2f(m1 - mn1);  // 0 on the first tile
    m0 = mn0;
    m1 = mn1;
    l0 *= c0;
    l1 *= c1;
SPEED_UNROLL
    for (int i = 0; i < NT; ++i) {
      o[i][0] *= c0;
      o[i][1] *= c0;
      o[i][2] *= c1;
      o[i][3] *= c1;
    }
SPEED_UNROLL
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - m0);
      s[nt][1] = exp2f(s[nt][1] - m0);
      s[nt][2] = exp2f(s[nt][2] - m1);
      s[nt][3] = exp2f(s[nt][3] - m1);
      l0 += s[nt][0] + s[nt][1];
      l1 += s[nt][2] + s[nt][3];
    }
    mma_k_rows_ldsm<HD, kKeys / 16>(o, s, Vs, lane);
    __syncthreads();  // stage jt&1 is refilled by the prefetch of iteration jt+1
  }
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const int i0 = q0 + warp * 16 + g, i1 = i0 + 8;
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
SPEED_UNROLL
  for (int nt = 0; nt < NT; ++nt) {
    const int d = nt * 8 + 2 * t;
    if (d < HD) {
      if (i0 < L)
        *reinterpret_cast<float2*>(out + (((size_t)n * L + i0) * heads + h) * HD + d) =
            make_float2(o[nt][0] * inv0, o[nt][1] * inv0);
      if (i1 < L)
        *reinterpret_cast<float2*>(out + (((size_t)n * L + i1) * heads + h) * HD + d) =
            make_float2(o[nt][2] * inv1, o[nt][3] * inv1);
    }
  }
  if (t == 0) {
    float* lrow = lse + ((size_t)n * heads + h) * L;
    if (i0 < L) lrow[i0] = m0 * kLn2 + logf(l0);
    if (i1 < L) lrow[i1] = m1 * kLn2 + logf(l1);
  }
}

// ---- tc2 backward, dQ: block = 64 query rows (4 warps), 64-key tiles (K, V) in two stages ----
template <int HD>
__global__ void __launch_bounds__(kThreads) attn_tc2_bwd_dq_k(
    const __nv_bfloat16* __restrict__ qb, const __nv_bfloat16* __restrict__ kb,
    const __nv_bfloat16* __restrict__ vb, const __nv_bfloat16* __restrict__ dob,
    const float* __restrict__ lse2, const float* __restrict__ Dt, float* __restrict__ dqkv, int L,
    int Lp, int heads, float scale, float scale_log2) {
  using Dm = Dims<HD>;
  constexpr int SW = Dm::SW, NT = Dm::NT, KT = Dm::KT, HDP = Dm::HDP;
  constexpr int TILEB = kKeys * SW * 4;
  __shared__ __align__(16) uint32_t sm[4 * kKeys * SW];  // stage s: K at 2s, V at 2s+1
  const int n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kRows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t nh = (size_t)n * heads + h, hoff = nh * Lp * HDP;
  const __nv_bfloat16* Kg = kb + hoff;
  const __nv_bfloat16* Vg = vb + hoff;
  const uint32_t s0 = smem_u32(sm);

  cp_tile<HD, kKeys, kThreads>(s0, Kg);
  cp_tile<HD, kKeys, kThreads>(s0 + TILEB, Vg);
  cp_async_commit();
  const int r0 = q0 + warp * 16 + g;  // this thread's rows r0, r0 + 8 (< Lp)
  uint32_t qa[KT][4], da[KT][4];
  load_a<HD, HDP / 2>(qa, reinterpret_cast<const uint32_t*>(qb + hoff), q0 + warp * 16, g, t);
  load_a<HD, HDP / 2>(da, reinterpret_cast<const uint32_t*>(dob + hoff), q0 + warp * 16, g, t);
  const float L0 = lse2[nh * Lp + r0], L1 = lse2[nh * Lp + r0 + 8];
  const float D0 = Dt[nh * Lp + r0], D1 = Dt[nh * Lp + r0 + 8];

  float dq[NT][4];
SPEED_UNROLL
  for (int i = 0; i < NT; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

  const int ntiles = (L + kKeys - 1) / kKeys;
  for (int jt = 0; jt < ntiles; ++jt) {
    const int j0 = jt * kKeys;
    if (jt + 1 < ntiles) {
      const uint32_t nb = s0 + ((jt + 1) & 1) * 2 * TILEB;
      cp_tile<HD, kKeys, kThreads>(nb, Kg + (size_t)(j0 + kKeys) * HDP);
      cp_tile<HD, kKeys, kThreads>(nb + TILEB, Vg + (size_t)(j0 + kKeys) * HDP);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint32_t Ks = s0 + (jt & 1) * 2 * TILEB, Vs = Ks + TILEB;
    float s[kKeys / 8][4], dp[kKeys / 8][4];
    mma_k_hd_ldsm<HD, kKeys / 8>(s, qa, Ks, lane);
    mma_k_hd_ldsm<HD, kKeys / 8>(dp, da, Vs, lane);
SPEED_UNROLL
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      const int j = j0 + nt * 8 + 2 * t;
SPEED_UNROLL
      for (int e = 0; e < 4; ++e) {
        const bool ok = j + (e & 1) < L;
        const float p = ok ? exp2f(s[nt][e] * scale_log2 - (e < 2 ? L0 : L1)) : 0.f;
        s[nt][e] = p * (dp[nt][e] - (e < 2 ? D0 : D1));  // dS
      }
    }
    mma_k_rows_ldsm<HD, kKeys / 16>(dq, s, Ks, lane);  // dQ += dS K (K [key][d], .trans)
    __syncthreads();
  }
  const int i0 = r0, i1 = r0 + 8;
  const size_t ld = (size_t)3 * heads * HD;
SPEED_UNROLL
  for (int nt = 0; nt < NT; ++nt) {
    const int d = nt * 8 + 2 * t;
    if (d < HD) {
      if (i0 < L)
        *reinterpret_cast<float2*>(dqkv + ((size_t)n * L + i0) * ld + (size_t)h * HD + d) =
            make_float2(dq[nt][0] * scale, dq[nt][1] * scale);
      if (i1 < L)
        *reinterpret_cast<float2*>(dqkv + ((size_t)n * L + i1) * ld + (size_t)h * HD + d) =
            make_float2(dq[nt][2] * scale, dq[nt][3] * scale);
    }
  }
}

// ---- tc2 backward, dK and dV: block = 16*WARPS key rows, 32-query tiles (Q, dO, lse2, D) -------
template <int HD>
struct Tc2DkvStage {
  static constexpr int SW = Dims<HD>::SW;
  static constexpr int QB = kBq * SW * 4;           // bytes of a [32][SW] tile
  static constexpr int bytes = 2 * QB + 2 * kBq * 4;  // Q, dO, lse2[32], D[32]
};

template <int HD, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 12 / WARPS) attn_tc2_bwd_dkv_k(
    const __nv_bfloat16* __restrict__ qb, const __nv_bfloat16* __restrict__ kb,
    const __nv_bfloat16* __restrict__ vb, const __nv_bfloat16* __restrict__ dob,
    const float* __restrict__ lse2, const float* __restrict__ Dt, float* __restrict__ dqkv, int L,
    int Lp, int heads, float scale, float scale_log2) {
  using Dm = Dims<HD>;
  using St = Tc2DkvStage<HD>;
  constexpr int NT = Dm::NT, KT = Dm::KT, HDP = Dm::HDP;
  constexpr int ROWS = 16 * WARPS, NTHR = WARPS * 32;
  static_assert(St::bytes % 16 == 0, "stages stay 16-byte aligned");
  __shared__ __align__(16) uint32_t sm[2 * St::bytes / 4];
  const int n = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * ROWS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t nh = (size_t)n * heads + h, hoff = nh * Lp * HDP;
  const __nv_bfloat16* Qg = qb + hoff;
  const __nv_bfloat16* dOg = dob + hoff;
  const float* Lg = lse2 + nh * Lp;
  const float* Dg = Dt + nh * Lp;
  const uint32_t s0 = smem_u32(sm);

  // stage layout (bytes): Q [32][SW] at 0, dO at QB, lse2[32] at 2 QB, D[32] at 2 QB + 128
  auto load_stage = [&](int st, int i0) {
    const uint32_t b = s0 + st * St::bytes;
    cp_tile<HD, kBq, NTHR>(b, Qg + (size_t)i0 * HDP);
    cp_tile<HD, kBq, NTHR>(b + St::QB, dOg + (size_t)i0 * HDP);
    const int e = threadIdx.x;  // 8 chunks of lse2, then 8 of D (NTHR >= 16)
    if (e < 8)
      cp_async16(b + 2 * St::QB + e * 16, Lg + i0 + e * 4);
    else if (e < 16)
      cp_async16(b + 2 * St::QB + kBq * 4 + (e - 8) * 16, Dg + i0 + (e - 8) * 4);
  };
  load_stage(0, 0);
  cp_async_commit();
  uint32_t ka[KT][4], va[KT][4];  // key rows k0 + warp*16 .. +15 (< Lp), from global
  load_a<HD, HDP / 2>(ka, reinterpret_cast<const uint32_t*>(kb + hoff), k0 + warp * 16, g, t);
  load_a<HD, HDP / 2>(va, reinterpret_cast<const uint32_t*>(vb + hoff), k0 + warp * 16, g, t);

  float dk[NT][4], dv[NT][4];
SPEED_UNROLL
  for (int i = 0; i < NT; ++i) {
    dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.f;
    dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;
  }

  const int ntiles = (L + kBq - 1) / kBq;
  for (int it = 0; it < ntiles; ++it) {
    if (it + 1 < ntiles) {
      load_stage((it + 1) & 1, (it + 1) * kBq);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int st = it & 1;
    const uint32_t Qs = s0 + st * St::bytes, dOs = Qs + St::QB;
    const float* Lsh = reinterpret_cast<const float*>(reinterpret_cast<const char*>(sm) + st * St::bytes + 2 * St::QB);
    const float* Dsh = Lsh + kBq;
    float s[kBq / 8][4], dp[kBq / 8][4];
    mma_k_hd_ldsm<HD, kBq / 8>(s, ka, Qs, lane);    // S^T [key][q]
    mma_k_hd_ldsm<HD, kBq / 8>(dp, va, dOs, lane);  // dP^T [key][q]
SPEED_UNROLL
    for (int nt = 0; nt < kBq / 8; ++nt) {
      const int q = nt * 8 + 2 * t;
SPEED_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int qq = q + (e & 1);
        const float p = exp2f(s[nt][e] * scale_log2 - Lsh[qq]);  // 0 past L (lse2 = +inf)
        s[nt][e] = p;
        dp[nt][e] = p * (dp[nt][e] - Dsh[qq]);  // dS^T
      }
    }
    mma_k_rows_ldsm<HD, kBq / 16>(dv, s, dOs, lane);  // dV += P^T dO  (dO [q][d], .trans)
    mma_k_rows_ldsm<HD, kBq / 16>(dk, dp, Qs, lane);  // dK += dS^T Q  (Q [q][d], .trans)
    __syncthreads();
  }
  const size_t hs = (size_t)heads * HD, ld = 3 * hs;
  const int j0 = k0 + warp * 16 + g, j1 = j0 + 8;
SPEED_UNROLL
  for (int nt = 0; nt < NT; ++nt) {
    const int d = nt * 8 + 2 * t;
    if (d < HD) {
      if (j0 < L) {
        float* row = dqkv + ((size_t)n * L + j0) * ld + (size_t)h * HD + d;
        *reinterpret_cast<float2*>(row + hs) = make_float2(dk[nt][0] * scale, dk[nt][1] * scale);
        *reinterpret_cast<float2*>(row + 2 * hs) = make_float2(dv[nt][0], dv[nt][1]);
      }
      if (j1 < L) {
        float* row = dqkv + ((size_t)n * L + j1) * ld + (size_t)h * HD + d;
        *reinterpret_cast<float2*>(row + hs) = make_float2(dk[nt][2] * scale, dk[nt][3] * scale);
        *reinterpret_cast<float2*>(row + 2 * hs) = make_float2(dv[nt][2], dv[nt][3]);
      }
    }
  }
}
