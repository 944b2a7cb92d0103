// Device code of the bf16 tensor-core attention kernels (attention_tc.cu says what they
// compute, native/bench/NOTES.md "Attention" why). Included by attention_tc.cu inside
// speed::cuda::{anonymous}, after the inline-PTX wrapper, by native/dev/cuda/attention.cu (the
// tc2 variant reuses these helpers), and by the host test native/dev/cuda/test_attention_tc_host.cpp,
// which compiles the same source as C++ (one std::thread per CUDA thread, warp-collective
// emulations of the wrappers) and checks it against the CPU backend in every CPU build.
// So: no #include here; the includer provides
//   types/functions: uint32_t, size_t, float2/float4/uint2/uint4 and make_*, __nv_bfloat16(2),
//     __floats2bfloat162_rn, __float2bfloat16_rn, __bfloat162float, __low2float, __high2float,
//     __ldg, __shfl_xor_sync, __syncthreads, memcpy, exp2f, logf, fmaxf, INFINITY,
//     threadIdx/blockIdx/blockDim;
//   the inline-PTX wrapper mma16816 (mma.sync m16n8k16 bf16, mma_ptx.cuh);
//   keywords: __global__/__device__/__forceinline__/__shared__/__restrict__, __align__,
//     __launch_bounds__, and SPEED_UNROLL (#pragma unroll on the device).
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

// One key tile of the forward's online softmax (the tc and the dev/cuda tc2 forward share it),
// for rows g and g + 8 of the warp's 16 (log2 units): s holds S = Q K^T of keys j0 .. j0 + kKeys - 1
// as accumulators; keys >= L are masked, the running max m and sum l are updated, o is rescaled
// by exp2(m_old - m_new), and s is left holding P = exp2(S - m) for the P V product.
template <int HD>
__device__ __forceinline__ void online_softmax_tile(float (&s)[kKeys / 8][4], float (&o)[Dims<HD>::NT][4],
                                                    float& m0, float& m1, float& l0, float& l1, int j0,
                                                    int t, int L, float scale_log2) {
  constexpr int NT = Dims<HD>::NT;
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
}

// The forward's epilogue: rows i0 = q0 + warp * 16 + g and i0 + 8 of out = o / l, and (lane
// t == 0) their log-sum-exp in natural-log units; rows >= L are not written.
template <int HD>
__device__ __forceinline__ void store_out_lse(const float (&o)[Dims<HD>::NT][4], float m0, float m1,
                                              float l0, float l1, float* __restrict__ out,
                                              float* __restrict__ lse, int n, int h, int heads, int L,
                                              int q0, int warp, int g, int t) {
  constexpr int NT = Dims<HD>::NT;
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
    online_softmax_tile<HD>(s, o, m0, m1, l0, l1, j0, t, L, scale_log2);
    mma_k_rows<HD, kKeys / 16, VW>(o, s, Vt, g, t);
  }
  store_out_lse<HD>(o, m0, m1, l0, l1, out, lse, n, h, heads, L, q0, warp, g, t);
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
