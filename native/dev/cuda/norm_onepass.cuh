// The one-pass norm kernels (a candidate, not in the product until a GPU run says so; native/bench/
// NOTES.md "LN+modulate and gated residual backward in one pass"). Included by norm.cu in this
// folder inside speed::cuda::{anonymous} after kernel_common.cuh's warp_sum, and by the host test
// test_norm_onepass_host.cpp, which compiles the same source as C++ (one
// std::thread per CUDA thread) and checks it against the CPU backend in every CPU build.
// So: no #include here; the includer provides float4, make_float4, min, warp_sum,
// __syncthreads, threadIdx/blockIdx/blockDim/gridDim, __global__/__device__/__shared__,
// __align__, __launch_bounds__, and SPEED_UNROLL (#pragma unroll on the device).

// ---- one-pass variants -------------------------------------------------------------------------
// Backward kernels: block (p, n) covers rows l in [p*TR, min(L, (p+1)*TR)) of sample n and all D
// columns; thread t owns the W consecutive columns [t*W, t*W + W) (W = 4: float4 accesses, needs
// D % 4 == 0, mod_stride % 4 == 0 and 16-byte aligned pointers; W = 1: scalar), so blockDim.x =
// round_up(D / W, 32) <= kMaxThreads1p. dy/x (dx/h) are read once from memory. The column sums
// over the block's rows stay in the thread's registers (rows added in increasing l) and are
// written once per block, to part[((n * P + p) * K + k) * D + d] (K outputs: LN dshift, dscale;
// gated dgate); colpart_sum_k then adds the P partials of each (n, d) in the order p = 0..P-1.
// No atomics: the bits depend only on (N, L, D, TR, W), never on timing.
constexpr int kRows1p = 4;           // LN backward: rows whose loads are in flight together
constexpr int kMaxThreads1p = 512;   // so W = 4 serves D <= 2048, W = 1 serves D <= 512

template <int W>
struct Pk {
  float v[W];
};
template <int W>
__device__ __forceinline__ Pk<W> ldpk(const float* p);
template <>
__device__ __forceinline__ Pk<4> ldpk<4>(const float* p) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  Pk<4> r;
  r.v[0] = t.x; r.v[1] = t.y; r.v[2] = t.z; r.v[3] = t.w;
  return r;
}
template <>
__device__ __forceinline__ Pk<1> ldpk<1>(const float* p) {
  Pk<1> r;
  r.v[0] = *p;
  return r;
}
__device__ __forceinline__ void stpk(float* p, const Pk<4>& a) {
  *reinterpret_cast<float4*>(p) = make_float4(a.v[0], a.v[1], a.v[2], a.v[3]);
}
__device__ __forceinline__ void stpk(float* p, const Pk<1>& a) { *p = a.v[0]; }

// LN+modulate backward in one pass: dx (= or +=, skipped when dx is null) and the partial
// column sums of dy (k = 0) and dy * xhat (k = 1). Per group of kRows1p rows: each thread
// loads its columns of dy and x for all of them, the row sums sum(g), sum(g xhat) (g = dy
// (1 + scale)) go through warp shuffles and a [warp][8] table in shared memory (summed over
// warps in warp order by every thread), then dx is written from the registers. The table is
// double-buffered: one __syncthreads per group (a thread writes buffer b again only after the
// next group's barrier, which every thread reaches after its reads of b).
// Registers capped at 96 (ptxas sm_90, no spills: 96 for W = 4; 127 uncapped), so that two
// 288-thread blocks (D = 1152) share an SM and one's loads overlap the other's barrier;
// 96 x kMaxThreads1p fits the register file. (__maxnreg__ needs nvcc 12.4+; older ones get
// the launch bound alone.)
#if defined(__CUDACC_VER_MAJOR__) && (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 4))
#define SPEED_LN_BWD_1P_BOUNDS __maxnreg__(96)
#else
#define SPEED_LN_BWD_1P_BOUNDS __launch_bounds__(kMaxThreads1p)
#endif
template <int W>
__global__ void SPEED_LN_BWD_1P_BOUNDS
ln_mod_bwd_1p_k(const float* __restrict__ dy, const float* __restrict__ x,
                const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                const float* __restrict__ scale, int mod_stride, float* dx,
                float* __restrict__ part, int L, int D, int TR, bool accum) {
  constexpr int R = kRows1p;
  static_assert(R == 4, "the shared table is read as two float4 per warp");
  __shared__ __align__(16) float red[2][kMaxThreads1p / 32][2 * R];
  const int n = blockIdx.y, p = blockIdx.x, P = gridDim.x;
  const int c = threadIdx.x * W;  // first column of this thread
  const bool own = c < D;         // D % W == 0: all W columns or none
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  const int l0 = p * TR, l1 = min(L, l0 + TR);
  const float fD = (float)D;
  Pk<W> sc1, as, ac;  // 1 + scale; column sums of dy and dy * xhat
SPEED_UNROLL
  for (int i = 0; i < W; ++i) {
    sc1.v[i] = 1.0f;
    as.v[i] = 0.0f;
    ac.v[i] = 0.0f;
  }
  if (own) {
    const Pk<W> k = ldpk<W>(scale + (size_t)n * mod_stride + c);
SPEED_UNROLL
    for (int i = 0; i < W; ++i) sc1.v[i] = 1.0f + k.v[i];
  }
  const bool acc = dx && accum;
  int buf = 0;
  for (int lb = l0; lb < l1; lb += R) {
    // dy, x -> xhat and the old dx (when accumulating) of rows lb + r; zeros for rows past l1
    // and columns past D. All loads are issued (first loop) before any use (second loop), so
    // the 4 rows' loads are in flight together whatever the compiler does with the branches;
    // dx is not __restrict__, so its loads could not have moved above the dx stores by themselves.
    Pk<W> g[R], xh[R], old[R];
    float rs[R], mu[R];
    const size_t row0 = (size_t)n * L + lb;  // row of r = 0; element offset of row r: e0 + r D
    const size_t e0 = row0 * D + c;
SPEED_UNROLL
    for (int r = 0; r < R; ++r) {
      const size_t e = e0 + (size_t)r * D;
SPEED_UNROLL
      for (int i = 0; i < W; ++i) g[r].v[i] = xh[r].v[i] = old[r].v[i] = 0.0f;
      rs[r] = 0.0f;
      mu[r] = 0.0f;
      if (lb + r < l1) {
        rs[r] = rstd_in[row0 + r];
        mu[r] = mean_in[row0 + r];
        if (own) {
          g[r] = ldpk<W>(dy + e);
          xh[r] = ldpk<W>(x + e);
          if (acc) old[r] = ldpk<W>(dx + e);
        }
      }
    }
    if (own) {  // rows past l1: (0 - 0) * 0 = 0
SPEED_UNROLL
      for (int r = 0; r < R; ++r)
SPEED_UNROLL
        for (int i = 0; i < W; ++i) xh[r].v[i] = (xh[r].v[i] - mu[r]) * rs[r];
    }
    if (dx) {  // uniform over the grid: the barrier below is reached by all or none
      float sa[R], sb[R];
SPEED_UNROLL
      for (int r = 0; r < R; ++r) {
        sa[r] = 0.0f;
        sb[r] = 0.0f;
SPEED_UNROLL
        for (int i = 0; i < W; ++i) {
          const float gm = g[r].v[i] * sc1.v[i];
          sa[r] += gm;
          sb[r] += gm * xh[r].v[i];
        }
        sa[r] = warp_sum(sa[r]);
        sb[r] = warp_sum(sb[r]);
      }
      if (lane == 0) {
SPEED_UNROLL
        for (int r = 0; r < R; ++r) {
          red[buf][warp][r] = sa[r];
          red[buf][warp][R + r] = sb[r];
        }
      }
      __syncthreads();
      float4 A = make_float4(0.f, 0.f, 0.f, 0.f), B = A;
      for (int w = 0; w < nw; ++w) {  // fixed order: warp 0, 1, ...
        const float4 u = *reinterpret_cast<const float4*>(&red[buf][w][0]);
        const float4 v = *reinterpret_cast<const float4*>(&red[buf][w][R]);
        A.x += u.x; A.y += u.y; A.z += u.z; A.w += u.w;
        B.x += v.x; B.y += v.y; B.z += v.z; B.w += v.w;
      }
      const float a[R] = {A.x / fD, A.y / fD, A.z / fD, A.w / fD};
      const float b[R] = {B.x / fD, B.y / fD, B.z / fD, B.w / fD};
SPEED_UNROLL
      for (int r = 0; r < R; ++r) {
        const int l = lb + r;
        if (l < l1 && own) {
          float* q = dx + e0 + (size_t)r * D;
          Pk<W> o;
SPEED_UNROLL
          for (int i = 0; i < W; ++i) o.v[i] = rs[r] * (g[r].v[i] * sc1.v[i] - a[r] - xh[r].v[i] * b[r]);
          if (acc) {
SPEED_UNROLL
            for (int i = 0; i < W; ++i) o.v[i] += old[r].v[i];
          }
          stpk(q, o);
        }
      }
      buf ^= 1;
    }
SPEED_UNROLL
    for (int r = 0; r < R; ++r)
SPEED_UNROLL
      for (int i = 0; i < W; ++i) {
        as.v[i] += g[r].v[i];
        ac.v[i] += g[r].v[i] * xh[r].v[i];
      }
  }
  if (own) {
    float* q = part + ((size_t)n * P + p) * 2 * D + c;
    stpk(q, as);
    stpk(q + D, ac);
  }
}

// Gated residual backward in one pass with partials: dh = gate * dx (=), partial column sums
// of dx * h. No row reduction, so no barrier: 2 * kRows1p rows' loads in flight per thread.
template <int W>
__global__ void __launch_bounds__(kMaxThreads1p)
gated_res_bwd_1p_k(const float* __restrict__ dx, const float* __restrict__ gate, int mod_stride,
                   const float* __restrict__ h, float* __restrict__ dh, float* __restrict__ part,
                   int L, int D, int TR) {
  constexpr int R = 2 * kRows1p;
  const int n = blockIdx.y, p = blockIdx.x, P = gridDim.x;
  const int c = threadIdx.x * W;
  if (c >= D) return;  // no block-wide synchronisation below
  const int l0 = p * TR, l1 = min(L, l0 + TR);
  const Pk<W> g = ldpk<W>(gate + (size_t)n * mod_stride + c);
  Pk<W> acc;
SPEED_UNROLL
  for (int i = 0; i < W; ++i) acc.v[i] = 0.0f;
  for (int lb = l0; lb < l1; lb += R) {
    Pk<W> v[R], u[R];
SPEED_UNROLL
    for (int r = 0; r < R; ++r) {
SPEED_UNROLL
      for (int i = 0; i < W; ++i) v[r].v[i] = u[r].v[i] = 0.0f;
      if (lb + r < l1) {
        const size_t e = ((size_t)n * L + lb + r) * D + c;
        v[r] = ldpk<W>(dx + e);
        u[r] = ldpk<W>(h + e);
      }
    }
SPEED_UNROLL
    for (int r = 0; r < R; ++r) {
      if (lb + r < l1) {
        Pk<W> o;
SPEED_UNROLL
        for (int i = 0; i < W; ++i) o.v[i] = g.v[i] * v[r].v[i];
        stpk(dh + ((size_t)n * L + lb + r) * D + c, o);
      }
SPEED_UNROLL
      for (int i = 0; i < W; ++i) acc.v[i] += v[r].v[i] * u[r].v[i];
    }
  }
  stpk(part + ((size_t)n * P + p) * D + c, acc);
}

// out_k[n * mod_stride + d] = sum over p = 0..P-1, in that order, of part[((n P + p) K + k) D + d]
// for k < K (K = 1 or 2). Grid (ceil(D / 128), N), 128 threads.
__global__ void colpart_sum_k(const float* __restrict__ part, int P, int K, int D,
                              float* __restrict__ out0, float* __restrict__ out1, int mod_stride) {
  const int n = blockIdx.y;
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  const size_t step = (size_t)K * D;
  const float* q = part + (size_t)n * P * step + d;
  float s0 = 0.0f, s1 = 0.0f;
  for (int p = 0; p < P; ++p, q += step) {
    s0 += q[0];
    if (K > 1) s1 += q[D];
  }
  out0[(size_t)n * mod_stride + d] = s0;
  if (K > 1) out1[(size_t)n * mod_stride + d] = s1;
}

// LN+modulate forward with the row in registers: one warp per row, VPL float4 per lane
// (D4 <= 32 VPL), one read of x from memory (ln_mod_fwd4_k reads it three times, the second and
// third from L1/L2). Same per-lane order of the float32 sums as ln_mod_fwd4_k.
template <int VPL>
__global__ void __launch_bounds__(256)
ln_mod_fwd_reg_k(const float4* __restrict__ x, const float* __restrict__ shift,
                 const float* __restrict__ scale, int mod_stride, float4* __restrict__ y,
                 float* __restrict__ mean_out, float* __restrict__ rstd_out, int N, int L, int D4,
                 float eps) {
  const int warps = blockDim.x / 32;
  const size_t row = (size_t)blockIdx.x * warps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= (size_t)N * L) return;  // the whole warp: the shuffles below stay warp-uniform
  const int n = (int)(row / L);
  const float D = 4.0f * D4;
  const float4* xr = x + row * D4;
  float4 v[VPL];
SPEED_UNROLL
  for (int k = 0; k < VPL; ++k) {
    const int d = lane + 32 * k;
    v[k] = d < D4 ? xr[d] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float s = 0.f;
SPEED_UNROLL
  for (int k = 0; k < VPL; ++k)
    if (lane + 32 * k < D4) s += (v[k].x + v[k].y) + (v[k].z + v[k].w);
  const float mean = warp_sum(s) / D;
  float s2 = 0.f;
SPEED_UNROLL
  for (int k = 0; k < VPL; ++k) {
    if (lane + 32 * k < D4) {
      const float a = v[k].x - mean, b = v[k].y - mean, c = v[k].z - mean, e = v[k].w - mean;
      s2 += (a * a + b * b) + (c * c + e * e);
    }
  }
  const float var = warp_sum(s2) / D;
  const float rstd = rsqrtf(var + eps);
  const float4* sh = reinterpret_cast<const float4*>(shift + (size_t)n * mod_stride);
  const float4* sc = reinterpret_cast<const float4*>(scale + (size_t)n * mod_stride);
  float4* yr = y + row * D4;
SPEED_UNROLL
  for (int k = 0; k < VPL; ++k) {
    const int d = lane + 32 * k;
    if (d < D4) {
      const float4 hh = sh[d], kk = sc[d];
      float4 o;
      o.x = (v[k].x - mean) * rstd * (1.0f + kk.x) + hh.x;
      o.y = (v[k].y - mean) * rstd * (1.0f + kk.y) + hh.y;
      o.z = (v[k].z - mean) * rstd * (1.0f + kk.z) + hh.z;
      o.w = (v[k].w - mean) * rstd * (1.0f + kk.w) + hh.w;
      yr[d] = o;
    }
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}
constexpr int kMaxVplReg = 12;  // ln_mod_fwd_reg_k serves D <= 1536

// Rows per block of the one-pass backward kernels: the largest of 64, 32, 16, 8 that still
// gives enough blocks for ~128K resident threads (about half of an H100's 132 x 2048), at least
// 2 blocks per SM. A function of (N, L, D) only, so the summation order does not depend on the
// device. Partials cost 2 K / TR floats per element (K = 2: 0.125 B/elem written and read at 64).
inline int norm_onepass_rows_policy(int N, int L, int D) {
  const long threads = ((D + 3) / 4 + 31) / 32 * 32;
  long want = (131072L + threads - 1) / threads;
  if (want < 264) want = 264;
  int tr = 64;
  while (tr > 8 && (long)N * ((L + tr - 1) / tr) < want) tr /= 2;
  return tr;
}
