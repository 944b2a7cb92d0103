// Device code of the tc2 attention kernels (not run on a GPU yet; native/bench/NOTES.md
// "Attention tc2"). Included after native/src/cuda/attention_tc_kernels.cuh (whose tile helpers,
// fragment loaders and online-softmax step it uses) by attention.cu in this folder and by
// test_attention_tc_host.cpp; the includer also provides the inline-PTX wrappers smem_u32,
// cp_async16 / cp_async_commit / cp_async_wait<N> (cp.async.cg 16 B) and ldsm_x4 / ldsm_x4_t
// (ldmatrix .x4 / .x4.trans).
// ---- the workspace (host code: the launchers in attention.cu and the host test size and split it)
constexpr int kPadRows = 128;  // Lp = L rounded up to this (>= every tile's rows, and a multiple of each)
inline int tc2_lp(int L) { return (L + kPadRows - 1) / kPadRows * kPadRows; }

// Workspace (bytes, 256-aligned parts): Q, K, V bf16 [N][heads][Lp][HDP] each; backward adds
// dO bf16 (same shape), lse2 and D float [N][heads][Lp].
struct Tc2Ws {
  __nv_bfloat16 *q, *k, *v, *dO;
  float *lse2, *D;
};
inline size_t tc2_ws_bytes(int N, int L, int heads, int hd, bool backward) {
  const size_t hdp = (size_t)(hd + 15) / 16 * 16, nhl = (size_t)N * heads * tc2_lp(L);
  const size_t e = nhl * hdp * 2;  // bytes of one bf16 matrix set (multiple of 256: Lp % 128 == 0)
  return backward ? 4 * e + 2 * nhl * 4 : 3 * e;
}
inline Tc2Ws tc2_ws(void* ws, int N, int L, int heads, int hd) {
  const size_t hdp = (size_t)(hd + 15) / 16 * 16, nhl = (size_t)N * heads * tc2_lp(L);
  char* p = static_cast<char*>(ws);
  Tc2Ws w;
  w.q = reinterpret_cast<__nv_bfloat16*>(p);
  w.k = w.q + nhl * hdp;
  w.v = w.k + nhl * hdp;
  w.dO = w.v + nhl * hdp;
  w.lse2 = reinterpret_cast<float*>(w.dO + nhl * hdp);
  w.D = w.lse2 + nhl;
  return w;
}

// ==== tc2: one bf16 copy per call + cp.async double buffering ====
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
    online_softmax_tile<HD>(s, o, m0, m1, l0, l1, j0, t, L, scale_log2);
    mma_k_rows_ldsm<HD, kKeys / 16>(o, s, Vs, lane);
    __syncthreads();  // stage jt&1 is refilled by the prefetch of iteration jt+1
  }
  store_out_lse<HD>(o, m0, m1, l0, l1, out, lse, n, h, heads, L, q0, warp, g, t);
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
