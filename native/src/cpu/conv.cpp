// CPU kernels of the VAE ops; see conv.h for the determinism rule.
//
// conv2d: for each sample and each tile of `tile` consecutive output pixels
// (flattened Ho*Wo index), one task gathers the tile's receptive fields into an
// im2col block col [K = Ci*kh*kw, tile] (zero where the window leaves the
// padded input) and multiplies W [Co, K] · col on its own thread
// (gemm_serial: single-threaded BLAS or the built-in kernel), writing the
// [Co, tile] result straight into y at row stride Ho*Wo. A 1x1 stride-1 conv
// without padding needs no gather: x itself is the [Ci, HW] operand.
// Bias: y is preset to the bias (or kept, for accum) and the GEMM adds onto it.
#include "conv.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "fastmath.h"
#include "gemm.h"

namespace speed::cpu {

int conv_tile_pixels(int K) {
  int t = (512 * 1024) / std::max(K, 1);  // ~2 MiB of float32 im2col per task
  t = std::max(64, std::min(1024, t));
  return (t / 16) * 16;
}

namespace {
std::atomic<bool> g_force_im2col{false};
// The weight transform (16 Co Ci values, written every call) pays off only over enough
// pixels of ONE image (a per-image bound, so the choice never depends on the chunk size);
// at SD's 512 channels, 32x32 is already well past the break-even (bench_vae_ops times
// both; native/bench/NOTES.md "CPU GEMM and convolution").
constexpr int64_t kWinogradMinPixels = 1024;
}  // namespace

void conv_force_im2col(bool on) { g_force_im2col.store(on); }
bool conv_uses_winograd(const Conv2dShape& s) {
  return !g_force_im2col.load() && s.kh == 3 && s.kw == 3 && s.stride == 1 && s.pad_t == 1 && s.pad_l == 1 &&
         s.pad_b == 1 && s.pad_r == 1 && s.Ci >= 16 && s.Co >= 16 &&
         static_cast<int64_t>(s.H) * s.W >= kWinogradMinPixels;
}
int winograd_tile_block(int Ci, int Co) {
  int t = (1 << 18) / std::max(Ci + Co, 1);  // V [16, Ci, tb] + M [16, Co, tb] near 16 MiB of float32
  t = std::max(16, std::min(2048, t));
  return (t / 16) * 16;
}

namespace {

inline void fail(const char* op, const std::string& m) { throw Error(std::string("cpu backend: ") + op + ": " + m); }

template <typename T>
inline T silu(T v) {
  return v / (T(1) + vexp(-v));
}

// col [K, cols] for output pixels [p0, p0 + cols) of one sample xs [Ci, H, W]
template <typename T>
void im2col_tile(const T* xs, T* col, const Conv2dShape& s, int Ho_unused, int Wo, int64_t p0, int cols) {
  const int H = s.H, W = s.W, st = s.stride;
  int k = 0;
  for (int ci = 0; ci < s.Ci; ++ci)
    for (int ky = 0; ky < s.kh; ++ky)
      for (int kx = 0; kx < s.kw; ++kx, ++k) {
        T* dst = col + static_cast<size_t>(k) * cols;
        const T* plane = xs + static_cast<size_t>(ci) * H * W;
        int64_t p = p0;
        const int64_t p1 = p0 + cols;
        while (p < p1) {
          const int oy = static_cast<int>(p / Wo), ox0 = static_cast<int>(p % Wo);
          const int ox1 = static_cast<int>(std::min<int64_t>(Wo, ox0 + (p1 - p)));
          const int iy = oy * st - s.pad_t + ky;
          const int n = ox1 - ox0;
          if (iy < 0 || iy >= H) {
            std::memset(dst, 0, sizeof(T) * n);
          } else {
            const T* src = plane + static_cast<size_t>(iy) * W;
            const int off = kx - s.pad_l;
            if (st == 1) {
              // ix = ox + off: zero on the left/right borders, a copy in between
              int a = ox0, e = ox1;
              int lo = std::max(a, -off), hi = std::min(e, W - off);  // valid ox range
              if (hi < lo) hi = lo = a;
              T* d = dst;
              for (int ox = a; ox < lo; ++ox) *d++ = T(0);
              if (hi > lo) {
                std::memcpy(d, src + lo + off, sizeof(T) * (hi - lo));
                d += hi - lo;
              }
              for (int ox = std::max(hi, lo); ox < e; ++ox) *d++ = T(0);
            } else {
              // ix = ox * st + off is inside [0, W) for ox in [lo, hi): zeros around a
              // strided copy without a branch per element
              int lo = off >= 0 ? 0 : (-off + st - 1) / st;
              int hi = W - 1 - off >= 0 ? (W - 1 - off) / st + 1 : 0;
              lo = std::max(lo, ox0);
              hi = std::min(hi, ox1);
              if (hi < lo) hi = lo = ox0;
              T* d = dst - ox0;
              for (int ox = ox0; ox < lo; ++ox) d[ox] = T(0);
              const T* sp = src + off;
              for (int ox = lo; ox < hi; ++ox) d[ox] = sp[ox * st];
              for (int ox = std::max(hi, lo); ox < ox1; ++ox) d[ox] = T(0);
            }
          }
          dst += n;
          p += n;
        }
      }
}

// The adjoint of im2col_tile: dxs [Ci, H, W] (+=) gets every col [K, cols] value at the
// input position im2col_tile read it from (padding positions are dropped).
template <typename T>
void col2im_tile(const T* col, T* dxs, const Conv2dShape& s, int Wo, int64_t p0, int cols) {
  const int H = s.H, W = s.W, st = s.stride;
  const int oy0 = static_cast<int>(p0 / Wo), ox0 = static_cast<int>(p0 % Wo);
  int k = 0;
  for (int ci = 0; ci < s.Ci; ++ci)
    for (int ky = 0; ky < s.kh; ++ky)
      for (int kx = 0; kx < s.kw; ++kx, ++k) {
        const T* src = col + static_cast<size_t>(k) * cols;
        T* plane = dxs + static_cast<size_t>(ci) * H * W;
        int oy = oy0, ox = ox0;
        for (int j = 0; j < cols; ++j) {
          const int iy = oy * st - s.pad_t + ky, ix = ox * st - s.pad_l + kx;
          if (iy >= 0 && iy < H && ix >= 0 && ix < W) plane[static_cast<size_t>(iy) * W + ix] += src[j];
          if (++ox == Wo) {
            ox = 0;
            ++oy;
          }
        }
      }
}

// Sample groups of conv2d_backward_cpu: enough tasks for any pool, few dw partials to sum.
constexpr int kConvBackwardGroups = 16;

}  // namespace

// ---- Winograd F(2x2, 3x3) ----------------------------------------------------------------
// Cross-correlation y[i][j] = sum g[u][v] d[i+u][j+v] over a 4x4 input tile d starting at
// (2ty - 1, 2tx - 1): Y = A^T [(G g G^T) .* (B^T d B)] A with
//   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// U [16][Ci][Co] (weights, stored as the GEMMs' transposed A: packing a transposed A
// copies MR contiguous values per k), per task V [16][Ci][tb] (inputs) and
// M [16][Co][tb] = U^T V (16 GEMMs).
template <typename T>
void winograd_weights(ThreadPool& pool, const T* w, T* U, int Co, int Ci) {
  const size_t plane = static_cast<size_t>(Co) * Ci;
  // by input channel: each task writes 16 contiguous runs of Co values
  parallel_for(pool, Ci, 8, [&](int64_t c0, int64_t c1, int) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      T* u = U + static_cast<size_t>(ci) * Co;
      for (int co = 0; co < Co; ++co) {
        const T* g = w + (static_cast<size_t>(co) * Ci + ci) * 9;
        T t[4][3];
        for (int j = 0; j < 3; ++j) {
          t[0][j] = g[j];
          t[1][j] = T(0.5) * (g[j] + g[3 + j] + g[6 + j]);
          t[2][j] = T(0.5) * (g[j] - g[3 + j] + g[6 + j]);
          t[3][j] = g[6 + j];
        }
        for (int i = 0; i < 4; ++i) {
          u[(i * 4 + 0) * plane + co] = t[i][0];
          u[(i * 4 + 1) * plane + co] = T(0.5) * (t[i][0] + t[i][1] + t[i][2]);
          u[(i * 4 + 2) * plane + co] = T(0.5) * (t[i][0] - t[i][1] + t[i][2]);
          u[(i * 4 + 3) * plane + co] = t[i][2];
        }
      }
    }
  });
}

// The transforms run row-wise so that they vectorise: a task owns whole tile rows.
// Input: the 4 input rows of a tile row are combined by B^T's rows first (elementwise
// over the padded row), then split into even / odd columns, after which B's column
// combination is contiguous over the tiles (tile tx reads padded columns 2tx..2tx+3,
// i.e. E[tx], O[tx], E[tx+1], O[tx+1]). Output: A^T's combinations are contiguous
// over the tiles of M, then the two output columns of each tile are interleaved.
// Every value is the same expression, in the same order, as the scalar 4x4 form.
template <typename T>
void winograd_conv(ThreadPool& pool, std::vector<std::vector<T>>& scratch, std::vector<T>& shared, const T* x,
                   const T* w, const T* b, T* y, const Conv2dShape& s, bool accum) {
  const int Ci = s.Ci, Co = s.Co, H = s.H, W = s.W;
  const int th = (H + 1) / 2, tw = (W + 1) / 2;
  // tile rows per task: the block size, but at least 4 tasks per image (one 32x32 image
  // of 512 channels is 16 tile rows, a single block, which left one thread idle)
  const int rows = std::max(1, std::min(winograd_tile_block(Ci, Co) / tw, (th + 3) / 4));
  const int tb = rows * tw;
  const int64_t blocks = (th + rows - 1) / rows;
  const size_t plane = static_cast<size_t>(Co) * Ci;
  // the built-in GEMM takes the 16 U matrices packed once here, not once per task
  const bool packed = !gemm_uses_blas();
  const size_t psz = packed ? gemm_packed_a_size<T>(Co, Ci) : 0;
  if (shared.size() < 16 * (plane + psz)) shared.resize(16 * (plane + psz));
  T* U = shared.data();
  T* Up = U + 16 * plane;
  winograd_weights(pool, w, U, Co, Ci);
  if (packed)
    for (int xi = 0; xi < 16; ++xi) gemm_pack_a<T>(&pool, true, Co, Ci, U + xi * plane, Co, Up + xi * psz);
  const size_t P = static_cast<size_t>(2) * tw + 2;  // padded row: input columns -1 .. 2tw
  const size_t vsz = static_cast<size_t>(16) * Ci * tb, msz = static_cast<size_t>(16) * Co * tb;
  const size_t need = vsz + msz + 4 * P + 8 * static_cast<size_t>(tw + 1) + P;
  for (auto& v : scratch)
    if (v.size() < need) v.resize(need);
  const size_t in_per = static_cast<size_t>(Ci) * H * W, out_per = static_cast<size_t>(Co) * H * W;
  pool.run(static_cast<int64_t>(s.N) * blocks, [&](int64_t task, int thr) {
    const int n = static_cast<int>(task / blocks);
    const int ty0 = static_cast<int>(task % blocks) * rows;
    const int nrows = std::min(rows, th - ty0);
    const int cols = nrows * tw;
    T* V = scratch[thr].data();
    T* M = V + vsz;
    T* pad = M + msz;     // 4 padded input rows, then combined in place
    T* eo = pad + 4 * P;  // E0 O0 E1 O1 .. E3 O3, tw + 1 each
    T* orow2 = eo + 8 * static_cast<size_t>(tw + 1);
    const T* xs = x + n * in_per;
    const size_t cstride = static_cast<size_t>(Ci) * tb;
    // input transform
    for (int ci = 0; ci < Ci; ++ci) {
      const T* pl = xs + static_cast<size_t>(ci) * H * W;
      for (int r = 0; r < nrows; ++r) {
        const int ty = ty0 + r;
        for (int k = 0; k < 4; ++k) {
          T* d = pad + k * P;
          const int iy = 2 * ty - 1 + k;
          if (iy < 0 || iy >= H) {
            std::fill(d, d + P, T(0));
          } else {
            d[0] = T(0);
            std::memcpy(d + 1, pl + static_cast<size_t>(iy) * W, sizeof(T) * W);
            std::fill(d + 1 + W, d + P, T(0));
          }
        }
        T* d0 = pad;
        T* d1 = pad + P;
        T* d2 = pad + 2 * P;
        T* d3 = pad + 3 * P;
        for (size_t c = 0; c < P; ++c) {  // q0 = d0 - d2, q1 = d1 + d2, q2 = d2 - d1, q3 = d1 - d3
          const T a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c];
          d0[c] = a0 - a2;
          d1[c] = a1 + a2;
          d2[c] = a2 - a1;
          d3[c] = a1 - a3;
        }
        for (int k = 0; k < 4; ++k) {
          const T* q = pad + k * P;
          T* E = eo + (2 * k) * static_cast<size_t>(tw + 1);
          T* O = E + (tw + 1);
          for (int i = 0; i <= tw; ++i) {
            E[i] = q[2 * i];
            O[i] = q[2 * i + 1];
          }
          T* v = V + static_cast<size_t>(k * 4) * cstride + static_cast<size_t>(ci) * tb + static_cast<size_t>(r) * tw;
          T* v1 = v + cstride;
          T* v2 = v1 + cstride;
          T* v3 = v2 + cstride;
          for (int t = 0; t < tw; ++t) {
            v[t] = E[t] - E[t + 1];
            v1[t] = O[t] + E[t + 1];
            v2[t] = E[t + 1] - O[t];
            v3[t] = O[t] - O[t + 1];
          }
        }
      }
    }
    // the 16 products
    for (int xi = 0; xi < 16; ++xi) {
      const T* v = V + static_cast<size_t>(xi) * cstride;
      T* m = M + static_cast<size_t>(xi) * Co * tb;
      if (packed)
        gemm_serial_packed_a<T>(Co, cols, Ci, T(1), Up + xi * psz, false, v, tb, T(0), m, tb);
      else
        gemm_serial<T>(true, false, Co, cols, Ci, T(1), U + xi * plane, Co, v, tb, T(0), m, tb);
    }
    // output transform (+ bias, + the existing output for accum)
    T* ys = y + n * out_per;
    const size_t mstep = static_cast<size_t>(Co) * tb;
    for (int co = 0; co < Co; ++co) {
      const T bc = b ? b[co] : T(0);
      T* yp = ys + static_cast<size_t>(co) * H * W;
      for (int r = 0; r < nrows; ++r) {
        const T* m = M + static_cast<size_t>(co) * tb + static_cast<size_t>(r) * tw;
        for (int half = 0; half < 2; ++half) {
          const int oy = 2 * (ty0 + r) + half;
          if (oy >= H) break;
          // a[half][c] over the 4 rows i of mm[i][c] = m[(4i + c) * mstep]
          for (int t = 0; t < tw; ++t) {
            T a[4];
            for (int c = 0; c < 4; ++c) {
              const T m0 = m[(0 + c) * mstep + t], m1 = m[(4 + c) * mstep + t], m2 = m[(8 + c) * mstep + t],
                      m3 = m[(12 + c) * mstep + t];
              a[c] = half == 0 ? m0 + m1 + m2 : m1 - m2 - m3;
            }
            orow2[2 * t] = a[0] + a[1] + a[2] + bc;
            orow2[2 * t + 1] = a[1] - a[2] - a[3] + bc;
          }
          T* orow = yp + static_cast<size_t>(oy) * W;
          if (accum)
            for (int c = 0; c < W; ++c) orow[c] += orow2[c];
          else
            std::memcpy(orow, orow2, sizeof(T) * W);
        }
      }
    }
  });
}

template <typename T>
void conv2d_cpu(ThreadPool& pool, std::vector<std::vector<T>>& scratch, std::vector<T>& shared, const T* x,
                const T* w, const T* b, T* y, const Conv2dShape& s, bool accum) {
  s.validate("cpu backend: conv2d_forward");
  if (s.N == 0) return;
  if (conv_uses_winograd(s)) {
    winograd_conv(pool, scratch, shared, x, w, b, y, s, accum);
    return;
  }
  const int Ho = s.Ho(), Wo = s.Wo();
  const int64_t HWo = static_cast<int64_t>(Ho) * Wo;
  const int K = s.Ci * s.kh * s.kw;
  const bool direct = s.kh == 1 && s.kw == 1 && s.stride == 1 && s.pad_t == 0 && s.pad_l == 0 &&
                      s.pad_b == 0 && s.pad_r == 0;
  const int tile = conv_tile_pixels(K);
  const int64_t tiles = (HWo + tile - 1) / tile;
  const size_t need = direct ? 0 : static_cast<size_t>(K) * tile;
  if (need)
    for (auto& v : scratch)
      if (v.size() < need) v.resize(need);
  const size_t in_per = static_cast<size_t>(s.Ci) * s.H * s.W;
  // the built-in GEMM takes the weights packed once here, not once per tile
  const bool packed = !gemm_uses_blas();
  if (packed) {
    const size_t psz = gemm_packed_a_size<T>(s.Co, K);
    if (shared.size() < psz) shared.resize(psz);
    gemm_pack_a<T>(&pool, false, s.Co, K, w, K, shared.data());
  }
  const T* wp = shared.data();
  auto mul = [&](const T* bm, int ldb, int cols, T beta, T* ys) {
    if (packed)
      gemm_serial_packed_a<T>(s.Co, cols, K, T(1), wp, false, bm, ldb, beta, ys, static_cast<int>(HWo));
    else
      gemm_serial<T>(false, false, s.Co, cols, K, T(1), w, K, bm, ldb, beta, ys, static_cast<int>(HWo));
  };
  pool.run(static_cast<int64_t>(s.N) * tiles, [&](int64_t task, int th) {
    const int n = static_cast<int>(task / tiles);
    const int64_t p0 = (task % tiles) * tile;
    const int cols = static_cast<int>(std::min<int64_t>(tile, HWo - p0));
    const T* xs = x + n * in_per;
    T* ys = y + static_cast<size_t>(n) * s.Co * HWo + p0;
    // preset the tile to the bias (or keep it: accum), then GEMM adds onto it
    T beta = T(1);
    if (!accum) {
      if (b)
        for (int co = 0; co < s.Co; ++co) std::fill(ys + co * HWo, ys + co * HWo + cols, b[co]);
      else
        beta = T(0);
    }
    if (direct) {
      mul(xs + p0, static_cast<int>(HWo), cols, beta, ys);
    } else {
      T* col = scratch[th].data();
      im2col_tile(xs, col, s, Ho, Wo, p0, cols);
      mul(col, cols, cols, beta, ys);
    }
    if (accum && b)
      for (int co = 0; co < s.Co; ++co) {
        T* r = ys + co * HWo;
        const T bc = b[co];
        for (int j = 0; j < cols; ++j) r[j] += bc;
      }
  });
}

template <typename T>
void conv2d_backward_cpu(ThreadPool& pool, std::vector<std::vector<T>>& scratch, std::vector<T>& shared, const T* x,
                         const T* w, const T* dy, T* dx, T* dw, T* db, const Conv2dShape& s) {
  s.validate("cpu backend: conv2d_backward");
  if (!x || !w || !dy || !dw) fail("conv2d_backward", "x, w, dy and dw must not be null");
  const int Ho = s.Ho(), Wo = s.Wo();
  const int64_t HWo = static_cast<int64_t>(Ho) * Wo;
  const int K = s.Ci * s.kh * s.kw, Co = s.Co;
  const size_t wsz = static_cast<size_t>(Co) * K;
  // db[co]: one task per channel, summed in float64 over samples and pixels in order
  if (db)
    parallel_for(pool, Co, 1, [&](int64_t c0, int64_t c1, int) {
      for (int64_t co = c0; co < c1; ++co) {
        double acc = 0;
        for (int n = 0; n < s.N; ++n) {
          const T* r = dy + (static_cast<size_t>(n) * Co + co) * HWo;
          for (int64_t j = 0; j < HWo; ++j) acc += static_cast<double>(r[j]);
        }
        db[co] = T(acc);
      }
    });
  if (s.N == 0) {
    std::fill(dw, dw + wsz, T(0));
    return;
  }
  const int groups = std::min(s.N, kConvBackwardGroups);
  const int tile = conv_tile_pixels(K);
  const int64_t tiles = (HWo + tile - 1) / tile;
  const size_t need = 2 * static_cast<size_t>(K) * tile;  // col, dcol
  for (auto& v : scratch)
    if (v.size() < need) v.resize(need);
  if (shared.size() < groups * wsz) shared.resize(groups * wsz);
  const size_t in_per = static_cast<size_t>(s.Ci) * s.H * s.W, out_per = static_cast<size_t>(Co) * HWo;
  const int ld = static_cast<int>(HWo);
  pool.run(groups, [&](int64_t g, int th) {
    const int n0 = static_cast<int>(g * s.N / groups), n1 = static_cast<int>((g + 1) * s.N / groups);
    T* part = shared.data() + g * wsz;
    std::fill(part, part + wsz, T(0));
    T* col = scratch[th].data();
    T* dcol = col + static_cast<size_t>(K) * tile;
    for (int n = n0; n < n1; ++n) {
      const T* xs = x + n * in_per;
      T* dxs = dx ? dx + n * in_per : nullptr;
      if (dxs) std::fill(dxs, dxs + in_per, T(0));
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t p0 = t * tile;
        const int cols = static_cast<int>(std::min<int64_t>(tile, HWo - p0));
        const T* dys = dy + n * out_per + p0;  // [Co, cols] at row stride HWo
        im2col_tile(xs, col, s, Ho, Wo, p0, cols);
        // part [Co, K] += dy [Co, cols] · col [K, cols]ᵀ
        gemm_serial<T>(false, true, Co, K, cols, T(1), dys, ld, col, cols, T(1), part, K);
        if (dxs) {
          // dcol [K, cols] = W [Co, K]ᵀ · dy [Co, cols]
          gemm_serial<T>(true, false, K, cols, Co, T(1), w, K, dys, ld, T(0), dcol, cols);
          col2im_tile(dcol, dxs, s, Wo, p0, cols);
        }
      }
    }
  });
  parallel_for(pool, static_cast<int64_t>(wsz), 1 << 12, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      T acc = shared[i];
      for (int g = 1; g < groups; ++g) acc += shared[g * wsz + i];
      dw[i] = acc;
    }
  });
}

template <typename T>
void group_norm_cpu(ThreadPool& pool, const T* x, const T* gamma, const T* beta, T* y, int N, int C,
                    int HW, int groups, double eps, bool silu_after) {
  if (N < 0 || C < 1 || HW < 1 || groups < 1 || C % groups != 0)
    fail("group_norm_forward", "expected N >= 0, C, HW >= 1 and groups dividing C; got N=" + std::to_string(N) +
                                   " C=" + std::to_string(C) + " HW=" + std::to_string(HW) +
                                   " groups=" + std::to_string(groups));
  if (!(eps > 0) || !std::isfinite(eps)) fail("group_norm_forward", "eps must be > 0, got " + std::to_string(eps));
  const int cpg = C / groups;
  const size_t gsz = static_cast<size_t>(cpg) * HW;
  // One task per (sample, group): statistics in float64 over the group in a
  // fixed order (8 partial sums, then combined), two passes (mean, then squared
  // deviations) as torch's reference is exact to float32 rounding.
  pool.run(static_cast<int64_t>(N) * groups, [&](int64_t task, int) {
    const int n = static_cast<int>(task / groups), g = static_cast<int>(task % groups);
    const size_t base = (static_cast<size_t>(n) * C + static_cast<size_t>(g) * cpg) * HW;
    const T* xg = x + base;
    double acc[8] = {};
    size_t i = 0;
    for (; i + 8 <= gsz; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(xg[i + j]);
    double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < gsz; ++i) sum += static_cast<double>(xg[i]);
    const double mean = sum / static_cast<double>(gsz);
    double q[8] = {};
    i = 0;
    for (; i + 8 <= gsz; i += 8)
      for (int j = 0; j < 8; ++j) {
        const double d = static_cast<double>(xg[i + j]) - mean;
        q[j] += d * d;
      }
    double ss = ((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]));
    for (; i < gsz; ++i) {
      const double d = static_cast<double>(xg[i]) - mean;
      ss += d * d;
    }
    const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(gsz) + eps);
    T* yg = y + base;
    for (int c = 0; c < cpg; ++c) {
      const int ch = g * cpg + c;
      const double ga = gamma ? static_cast<double>(gamma[ch]) : 1.0;
      const double be = beta ? static_cast<double>(beta[ch]) : 0.0;
      // y = x * a + k with a = rstd*gamma, k = beta - mean*a
      const T a = T(rstd * ga), k = T(be - mean * rstd * ga);
      const T* xr = xg + static_cast<size_t>(c) * HW;
      T* yr = yg + static_cast<size_t>(c) * HW;
      if (silu_after)
        for (int j = 0; j < HW; ++j) yr[j] = silu<T>(xr[j] * a + k);
      else
        for (int j = 0; j < HW; ++j) yr[j] = xr[j] * a + k;
    }
  });
}

template <typename T>
void upsample_nearest2x_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int H, int W) {
  if (N < 0 || C < 1 || H < 1 || W < 1)
    fail("upsample_nearest2x", "expected N >= 0 and C, H, W >= 1, got " + std::to_string(N) + "x" + std::to_string(C) +
                                   "x" + std::to_string(H) + "x" + std::to_string(W));
  const int64_t rows = static_cast<int64_t>(N) * C * H;  // input rows
  parallel_for(pool, rows, std::max<int64_t>(1, 8192 / W), [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* src = x + r * W;
      T* d0 = y + r * 4 * W;  // output rows 2i and 2i+1 of the same plane are adjacent
      for (int j = 0; j < W; ++j) d0[2 * j] = d0[2 * j + 1] = src[j];
      std::memcpy(d0 + 2 * W, d0, sizeof(T) * 2 * W);
    }
  });
}

template <typename T>
void transpose_batched_cpu(ThreadPool& pool, const T* x, T* y, int B, int R, int C) {
  if (B < 0 || R < 1 || C < 1)
    fail("transpose_batched", "expected B >= 0 and R, C >= 1, got " + std::to_string(B) + ", " + std::to_string(R) +
                                  ", " + std::to_string(C));
  constexpr int blk = 32;  // cache blocks of 32x32
  const int rb = (R + blk - 1) / blk, cb = (C + blk - 1) / blk;
  pool.run(static_cast<int64_t>(B) * rb, [&](int64_t task, int) {
    const int bi = static_cast<int>(task / rb), r0 = static_cast<int>(task % rb) * blk;
    const int r1 = std::min(R, r0 + blk);
    const T* xb = x + static_cast<size_t>(bi) * R * C;
    T* yb = y + static_cast<size_t>(bi) * R * C;
    for (int c0b = 0; c0b < cb; ++c0b) {
      const int c0 = c0b * blk, c1 = std::min(C, c0 + blk);
      for (int r = r0; r < r1; ++r)
        for (int c = c0; c < c1; ++c) yb[static_cast<size_t>(c) * R + r] = xb[static_cast<size_t>(r) * C + c];
    }
  });
}

template <typename T>
void gaussian_sample_cpu(ThreadPool& pool, const T* moments, const T* eps, T* z, int N, int C, int HW) {
  if (N < 0 || C < 1 || HW < 1)
    fail("gaussian_sample", "expected N >= 0 and C, HW >= 1, got " + std::to_string(N) + ", " + std::to_string(C) +
                                ", " + std::to_string(HW));
  const int64_t per = static_cast<int64_t>(C) * HW;
  parallel_for(pool, static_cast<int64_t>(N) * per, 1 << 14, [&](int64_t b0, int64_t b1, int) {
    for (int64_t i = b0; i < b1; ++i) {
      const int64_t n = i / per, r = i % per;
      const T* m = moments + n * 2 * per;
      if (!eps) {
        z[i] = m[r];
      } else {
        const double lv = std::min(20.0, std::max(-30.0, static_cast<double>(m[per + r])));
        z[i] = T(static_cast<double>(m[r]) + std::exp(0.5 * lv) * static_cast<double>(eps[i]));
      }
    }
  });
}

// ---- Inception-v3 ops ----------------------------------------------------------------------

template <typename T>
void pool2d_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int H, int W, int k, int stride, int pad,
                PoolMode mode) {
  if (N < 0 || C < 1 || H < 1 || W < 1 || k < 1 || stride < 1 || pad < 0 || pad >= k || H + 2 * pad < k ||
      W + 2 * pad < k)
    fail("pool2d_forward", "expected N >= 0, C, H, W, k, stride >= 1, 0 <= pad < k and the padded input at least "
                           "k x k; got N=" + std::to_string(N) + " C=" + std::to_string(C) + " H=" + std::to_string(H) +
                           " W=" + std::to_string(W) + " k=" + std::to_string(k) + " stride=" + std::to_string(stride) +
                           " pad=" + std::to_string(pad));
  if (mode != PoolMode::Max && mode != PoolMode::AvgExcludePad)
    fail("pool2d_forward", "unknown pool mode " + std::to_string(static_cast<int>(mode)));
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  const int64_t planes = static_cast<int64_t>(N) * C;
  const int64_t grain = std::max<int64_t>(1, 16384 / (static_cast<int64_t>(H) * W));
  if (mode == PoolMode::AvgExcludePad && k == 3 && stride == 1 && pad == 1) {
    // The FID blocks' pool (every Mixed_5/6/7b block runs one over its whole input):
    // separable, a vertical 3-row sum per output row (contiguous, vectorised), then the
    // horizontal 3-tap sum, divided by the in-bounds count rows x columns.
    parallel_for(pool, planes, grain, [&](int64_t p0, int64_t p1, int) {
      std::vector<T> col(static_cast<size_t>(W) + 2);
      for (int64_t p = p0; p < p1; ++p) {
        const T* xp = x + p * H * W;
        T* yp = y + p * H * W;
        for (int oy = 0; oy < H; ++oy) {
          const int y0 = std::max(0, oy - 1), y1 = std::min(H, oy + 2);
          T* c = col.data() + 1;  // c[-1] and c[W] are the zero padding
          c[-1] = c[W] = T(0);
          const T* r = xp + static_cast<size_t>(y0) * W;
          for (int i = 0; i < W; ++i) c[i] = r[i];
          for (int iy = y0 + 1; iy < y1; ++iy) {
            r = xp + static_cast<size_t>(iy) * W;
            for (int i = 0; i < W; ++i) c[i] += r[i];
          }
          const T inv_rows = T(1) / T(y1 - y0);
          T* yr = yp + static_cast<size_t>(oy) * W;
          for (int i = 0; i < W; ++i) {
            const int cols = 1 + (i > 0) + (i + 1 < W);
            yr[i] = (c[i - 1] + c[i] + c[i + 1]) * inv_rows / T(cols);
          }
        }
      }
    });
    return;
  }
  parallel_for(pool, planes, grain, [&](int64_t p0, int64_t p1, int) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * H * W;
      T* yp = y + p * Ho * Wo;
      for (int oy = 0; oy < Ho; ++oy) {
        const int y0 = std::max(0, oy * stride - pad), y1 = std::min(H, oy * stride - pad + k);
        for (int ox = 0; ox < Wo; ++ox) {
          const int x0 = std::max(0, ox * stride - pad), x1 = std::min(W, ox * stride - pad + k);
          if (mode == PoolMode::Max) {
            T m = xp[static_cast<size_t>(y0) * W + x0];
            for (int iy = y0; iy < y1; ++iy)
              for (int ix = x0; ix < x1; ++ix) m = std::max(m, xp[static_cast<size_t>(iy) * W + ix]);
            yp[static_cast<size_t>(oy) * Wo + ox] = m;
          } else {
            T s = T(0);
            for (int iy = y0; iy < y1; ++iy)
              for (int ix = x0; ix < x1; ++ix) s += xp[static_cast<size_t>(iy) * W + ix];
            yp[static_cast<size_t>(oy) * Wo + ox] = s / T((y1 - y0) * (x1 - x0));
          }
        }
      }
    }
  });
}

template <typename T>
void global_avg_pool_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int HW) {
  if (N < 0 || C < 1 || HW < 1)
    fail("global_avg_pool", "expected N >= 0 and C, HW >= 1, got N=" + std::to_string(N) + " C=" + std::to_string(C) +
                                " HW=" + std::to_string(HW));
  parallel_for(pool, static_cast<int64_t>(N) * C, std::max<int64_t>(1, 16384 / HW), [&](int64_t p0, int64_t p1, int) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * HW;
      double s = 0;  // float64 sum: the mean of 64 values (Inception's 8x8) loses nothing
      for (int i = 0; i < HW; ++i) s += static_cast<double>(xp[i]);
      y[p] = T(s / HW);
    }
  });
}

template <typename T>
void resize_bilinear_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int H, int W, int Ho, int Wo) {
  if (N < 0 || C < 1 || H < 1 || W < 1 || Ho < 1 || Wo < 1)
    fail("resize_bilinear", "expected N >= 0 and C, H, W, Ho, Wo >= 1, got N=" + std::to_string(N) + " C=" +
                                std::to_string(C) + " " + std::to_string(H) + "x" + std::to_string(W) + " -> " +
                                std::to_string(Ho) + "x" + std::to_string(Wo));
  // Per output row / column: the two source indices and the weight of the second, in
  // T's arithmetic as torch's CPU kernel computes them (float for float tensors).
  struct Tap {
    int i0, i1;
    T l1;
  };
  auto taps = [](int in, int out) {
    std::vector<Tap> t(out);
    const T scale = static_cast<T>(in) / static_cast<T>(out);
    for (int o = 0; o < out; ++o) {
      T src = scale * (static_cast<T>(o) + T(0.5)) - T(0.5);
      if (src < 0) src = 0;
      const int i0 = std::min(static_cast<int>(src), in - 1);
      const int i1 = std::min(i0 + 1, in - 1);
      t[o] = {i0, i1, src - static_cast<T>(i0)};
    }
    return t;
  };
  const std::vector<Tap> ty = taps(H, Ho), tx = taps(W, Wo);
  const int64_t planes = static_cast<int64_t>(N) * C;
  parallel_for(pool, planes, 1, [&](int64_t p0, int64_t p1, int) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * H * W;
      T* yp = y + p * Ho * Wo;
      for (int oy = 0; oy < Ho; ++oy) {
        const T* r0 = xp + static_cast<size_t>(ty[oy].i0) * W;
        const T* r1 = xp + static_cast<size_t>(ty[oy].i1) * W;
        const T b1 = ty[oy].l1, b0 = T(1) - b1;
        T* yr = yp + static_cast<size_t>(oy) * Wo;
        for (int ox = 0; ox < Wo; ++ox) {
          const Tap& t = tx[ox];
          const T a1 = t.l1, a0 = T(1) - a1;
          yr[ox] = b0 * (a0 * r0[t.i0] + a1 * r0[t.i1]) + b1 * (a0 * r1[t.i0] + a1 * r1[t.i1]);
        }
      }
    }
  });
}

template <typename T>
void channel_copy_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int HW, int Ctot, int c_off, bool relu) {
  if (N < 0 || C < 1 || HW < 1 || c_off < 0 || Ctot < c_off + C)
    fail("channel_copy", "expected N >= 0, C, HW >= 1 and 0 <= c_off, c_off + C <= Ctot; got N=" + std::to_string(N) +
                             " C=" + std::to_string(C) + " HW=" + std::to_string(HW) + " Ctot=" + std::to_string(Ctot) +
                             " c_off=" + std::to_string(c_off));
  const int64_t planes = static_cast<int64_t>(N) * C;
  parallel_for(pool, planes, std::max<int64_t>(1, 16384 / HW), [&](int64_t p0, int64_t p1, int) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const T* src = x + p * HW;
      T* dst = y + (n * Ctot + c_off + c) * HW;
      if (relu)
        for (int i = 0; i < HW; ++i) dst[i] = src[i] > T(0) ? src[i] : T(0);
      else if (dst != src)
        std::memcpy(dst, src, sizeof(T) * HW);
    }
  });
}

#define SPEED_INST(T)                                                                                          \
  template void conv2d_cpu<T>(ThreadPool&, std::vector<std::vector<T>>&, std::vector<T>&, const T*, const T*,  \
                              const T*, T*, const Conv2dShape&, bool);                                         \
  template void conv2d_backward_cpu<T>(ThreadPool&, std::vector<std::vector<T>>&, std::vector<T>&, const T*,     \
                                       const T*, const T*, T*, T*, T*, const Conv2dShape&);                   \
  template void group_norm_cpu<T>(ThreadPool&, const T*, const T*, const T*, T*, int, int, int, int, double,  \
                                  bool);                                                                       \
  template void upsample_nearest2x_cpu<T>(ThreadPool&, const T*, T*, int, int, int, int);                     \
  template void transpose_batched_cpu<T>(ThreadPool&, const T*, T*, int, int, int);                           \
  template void gaussian_sample_cpu<T>(ThreadPool&, const T*, const T*, T*, int, int, int);                  \
  template void pool2d_cpu<T>(ThreadPool&, const T*, T*, int, int, int, int, int, int, int, PoolMode);         \
  template void global_avg_pool_cpu<T>(ThreadPool&, const T*, T*, int, int, int);                             \
  template void resize_bilinear_cpu<T>(ThreadPool&, const T*, T*, int, int, int, int, int, int);              \
  template void channel_copy_cpu<T>(ThreadPool&, const T*, T*, int, int, int, int, int, bool);
SPEED_INST(float)
SPEED_INST(double)
#undef SPEED_INST

}  // namespace speed::cpu
