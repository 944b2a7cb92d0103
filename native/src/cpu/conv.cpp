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
// pixels of ONE image (a per-image bound, so the choice never depends on the chunk size):
// measured on SD's shapes, 512 channels at 32x32 gain nothing, at 64x64 they do.
constexpr int64_t kWinogradMinPixels = 2048;
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
              for (int ox = ox0; ox < ox1; ++ox) {
                const int ix = ox * st + off;
                dst[ox - ox0] = (ix >= 0 && ix < W) ? src[ix] : T(0);
              }
            }
          }
          dst += n;
          p += n;
        }
      }
}

}  // namespace

// ---- Winograd F(2x2, 3x3) ----------------------------------------------------------------
// Cross-correlation y[i][j] = sum g[u][v] d[i+u][j+v] over a 4x4 input tile d starting at
// (2ty - 1, 2tx - 1): Y = A^T [(G g G^T) .* (B^T d B)] A with
//   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// U [16][Co][Ci] (weights), per task V [16][Ci][tb] (inputs) and M [16][Co][tb] = U V (16 GEMMs).
template <typename T>
void winograd_weights(ThreadPool& pool, const T* w, T* U, int Co, int Ci) {
  const size_t plane = static_cast<size_t>(Co) * Ci;
  parallel_for(pool, Co, 8, [&](int64_t c0, int64_t c1, int) {
    for (int64_t co = c0; co < c1; ++co)
      for (int ci = 0; ci < Ci; ++ci) {
        const T* g = w + (static_cast<size_t>(co) * Ci + ci) * 9;
        T t[4][3];
        for (int j = 0; j < 3; ++j) {
          t[0][j] = g[j];
          t[1][j] = T(0.5) * (g[j] + g[3 + j] + g[6 + j]);
          t[2][j] = T(0.5) * (g[j] - g[3 + j] + g[6 + j]);
          t[3][j] = g[6 + j];
        }
        T* u = U + static_cast<size_t>(co) * Ci + ci;
        for (int i = 0; i < 4; ++i) {
          u[(i * 4 + 0) * plane] = t[i][0];
          u[(i * 4 + 1) * plane] = T(0.5) * (t[i][0] + t[i][1] + t[i][2]);
          u[(i * 4 + 2) * plane] = T(0.5) * (t[i][0] - t[i][1] + t[i][2]);
          u[(i * 4 + 3) * plane] = t[i][2];
        }
      }
  });
}

template <typename T>
void winograd_conv(ThreadPool& pool, std::vector<std::vector<T>>& scratch, std::vector<T>& shared, const T* x,
                   const T* w, const T* b, T* y, const Conv2dShape& s, bool accum) {
  const int Ci = s.Ci, Co = s.Co, H = s.H, W = s.W;
  const int th = (H + 1) / 2, tw = (W + 1) / 2;
  const int64_t T_ = static_cast<int64_t>(th) * tw;
  const int tb = winograd_tile_block(Ci, Co);
  const int64_t blocks = (T_ + tb - 1) / tb;
  const size_t plane = static_cast<size_t>(Co) * Ci;
  if (shared.size() < 16 * plane) shared.resize(16 * plane);
  T* U = shared.data();
  winograd_weights(pool, w, U, Co, Ci);
  const size_t vsz = static_cast<size_t>(16) * Ci * tb, need = vsz + static_cast<size_t>(16) * Co * tb;
  for (auto& v : scratch)
    if (v.size() < need) v.resize(need);
  const size_t in_per = static_cast<size_t>(Ci) * H * W, out_per = static_cast<size_t>(Co) * H * W;
  pool.run(static_cast<int64_t>(s.N) * blocks, [&](int64_t task, int thr) {
    const int n = static_cast<int>(task / blocks);
    const int64_t t0 = (task % blocks) * tb;
    const int cols = static_cast<int>(std::min<int64_t>(tb, T_ - t0));
    T* V = scratch[thr].data();
    T* M = V + vsz;
    const T* xs = x + n * in_per;
    // input transform
    for (int ci = 0; ci < Ci; ++ci) {
      const T* pl = xs + static_cast<size_t>(ci) * H * W;
      T* v = V + static_cast<size_t>(ci) * tb;
      for (int j = 0; j < cols; ++j) {
        const int64_t t = t0 + j;
        const int ty = static_cast<int>(t / tw), tx = static_cast<int>(t % tw);
        const int r0 = 2 * ty - 1, c0 = 2 * tx - 1;
        T d[4][4];
        if (r0 >= 0 && r0 + 3 < H && c0 >= 0 && c0 + 3 < W) {
          for (int r = 0; r < 4; ++r) {
            const T* row = pl + static_cast<size_t>(r0 + r) * W + c0;
            d[r][0] = row[0];
            d[r][1] = row[1];
            d[r][2] = row[2];
            d[r][3] = row[3];
          }
        } else {
          for (int r = 0; r < 4; ++r)
            for (int c = 0; c < 4; ++c) {
              const int iy = r0 + r, ix = c0 + c;
              d[r][c] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? pl[static_cast<size_t>(iy) * W + ix] : T(0);
            }
        }
        T q[4][4];
        for (int c = 0; c < 4; ++c) {
          q[0][c] = d[0][c] - d[2][c];
          q[1][c] = d[1][c] + d[2][c];
          q[2][c] = d[2][c] - d[1][c];
          q[3][c] = d[1][c] - d[3][c];
        }
        for (int r = 0; r < 4; ++r) {
          const size_t base = static_cast<size_t>(r * 4) * Ci * tb + j;
          v[base] = q[r][0] - q[r][2];
          v[base + static_cast<size_t>(Ci) * tb] = q[r][1] + q[r][2];
          v[base + 2 * static_cast<size_t>(Ci) * tb] = q[r][2] - q[r][1];
          v[base + 3 * static_cast<size_t>(Ci) * tb] = q[r][1] - q[r][3];
        }
      }
    }
    // the 16 products
    for (int xi = 0; xi < 16; ++xi)
      gemm_serial<T>(false, false, Co, cols, Ci, T(1), U + xi * plane, Ci, V + static_cast<size_t>(xi) * Ci * tb, tb,
                     T(0), M + static_cast<size_t>(xi) * Co * tb, tb);
    // output transform (+ bias, + the existing output for accum)
    T* ys = y + n * out_per;
    const size_t mstep = static_cast<size_t>(Co) * tb;
    for (int co = 0; co < Co; ++co) {
      const T* m = M + static_cast<size_t>(co) * tb;
      const T bc = b ? b[co] : T(0);
      T* yp = ys + static_cast<size_t>(co) * H * W;
      for (int j = 0; j < cols; ++j) {
        const int64_t t = t0 + j;
        const int ty = static_cast<int>(t / tw), tx = static_cast<int>(t % tw);
        T mm[4][4];
        for (int xi = 0; xi < 16; ++xi) mm[xi / 4][xi % 4] = m[xi * mstep + j];
        T a[2][4];
        for (int c = 0; c < 4; ++c) {
          a[0][c] = mm[0][c] + mm[1][c] + mm[2][c];
          a[1][c] = mm[1][c] - mm[2][c] - mm[3][c];
        }
        for (int r = 0; r < 2; ++r) {
          const int oy = 2 * ty + r;
          if (oy >= H) break;
          const T o0 = a[r][0] + a[r][1] + a[r][2] + bc, o1 = a[r][1] - a[r][2] - a[r][3] + bc;
          T* orow = yp + static_cast<size_t>(oy) * W + 2 * tx;
          if (accum) {
            orow[0] += o0;
            if (2 * tx + 1 < W) orow[1] += o1;
          } else {
            orow[0] = o0;
            if (2 * tx + 1 < W) orow[1] = o1;
          }
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
      gemm_serial<T>(false, false, s.Co, cols, K, T(1), w, K, xs + p0, static_cast<int>(HWo), beta, ys,
                     static_cast<int>(HWo));
    } else {
      T* col = scratch[th].data();
      im2col_tile(xs, col, s, Ho, Wo, p0, cols);
      gemm_serial<T>(false, false, s.Co, cols, K, T(1), w, K, col, cols, beta, ys, static_cast<int>(HWo));
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

#define SPEED_INST(T)                                                                                          \
  template void conv2d_cpu<T>(ThreadPool&, std::vector<std::vector<T>>&, std::vector<T>&, const T*, const T*,  \
                              const T*, T*, const Conv2dShape&, bool);                                         \
  template void group_norm_cpu<T>(ThreadPool&, const T*, const T*, const T*, T*, int, int, int, int, double,  \
                                  bool);                                                                       \
  template void upsample_nearest2x_cpu<T>(ThreadPool&, const T*, T*, int, int, int, int);                     \
  template void transpose_batched_cpu<T>(ThreadPool&, const T*, T*, int, int, int);                           \
  template void gaussian_sample_cpu<T>(ThreadPool&, const T*, const T*, T*, int, int, int);
SPEED_INST(float)
SPEED_INST(double)
#undef SPEED_INST

}  // namespace speed::cpu
