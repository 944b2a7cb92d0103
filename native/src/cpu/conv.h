// The CPU kernels of the VAE ops (include/speed/backend.h, "VAE ops"):
// conv2d as tiled im2col + GEMM, GroupNorm (+ SiLU), nearest x2 upsampling,
// batched transpose and the diagonal-Gaussian sample. CpuBackend forwards to
// these; `scratch` is its per-thread scratch (one vector per pool thread).
//
// Determinism: work is split into tasks of fixed size (output pixel tiles of a
// size that depends only on the layer's shape, (sample, group) pairs, element
// ranges), each computed by one thread with gemm_serial, whose reduction order
// depends only on K. So results are bitwise identical for any thread count.
#pragma once
#include <vector>

#include "speed/backend.h"
#include "threadpool.h"

namespace speed::cpu {

// `shared` holds the Winograd-transformed weights of the call (one buffer, not per thread).
template <typename T>
void conv2d_cpu(ThreadPool& pool, std::vector<std::vector<T>>& scratch, std::vector<T>& shared, const T* x,
                const T* w, const T* b, T* y, const Conv2dShape& s, bool accum);

// 3x3 stride-1 convs with pad 1 on every side, >= 16 input and output channels and
// H*W >= 1024 per image run
// as Winograd F(2x2, 3x3) (Lavin & Gray 2016: 16 instead of 36 multiplies per 2x2
// output tile and channel pair, the 16 products as GEMMs); everything else as im2col.
// Tests force the im2col path for every conv (process-wide) to check both.
void conv_force_im2col(bool on);
bool conv_uses_winograd(const Conv2dShape& s);
// Output tiles (2x2 each) per Winograd task: depends only on the channel counts.
int winograd_tile_block(int Ci, int Co);

// The gradients of conv2d_cpu (include/speed/backend.h, conv2d_backward). The batch is cut
// into a fixed number of sample groups (it depends on N only); one task per group gathers
// each im2col tile as the forward does and runs two GEMMs on it: dw_group += dy · colᵀ and
// dcol = Wᵀ · dy, which col2im scatters into the group's own dx samples. The group
// partials of dw are then summed in group order, so results do not depend on the thread count.
template <typename T>
void conv2d_backward_cpu(ThreadPool& pool, std::vector<std::vector<T>>& scratch, std::vector<T>& shared, const T* x,
                         const T* w, const T* dy, T* dx, T* dw, T* db, const Conv2dShape& s);

template <typename T>
void group_norm_cpu(ThreadPool& pool, const T* x, const T* gamma, const T* beta, T* y, int N, int C,
                    int HW, int groups, double eps, bool silu);

template <typename T>
void upsample_nearest2x_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int H, int W);

template <typename T>
void transpose_batched_cpu(ThreadPool& pool, const T* x, T* y, int B, int R, int C);

template <typename T>
void gaussian_sample_cpu(ThreadPool& pool, const T* moments, const T* eps, T* z, int N, int C, int HW);

// Inception-v3 ops (include/speed/backend.h, "Inception-v3 ops"). Each output value is
// computed by one thread in a fixed order, so results do not depend on the thread count.
template <typename T>
void pool2d_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int H, int W, int k, int stride, int pad,
                PoolMode mode);
template <typename T>
void global_avg_pool_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int HW);
template <typename T>
void resize_bilinear_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int H, int W, int Ho, int Wo);
template <typename T>
void channel_copy_cpu(ThreadPool& pool, const T* x, T* y, int N, int C, int HW, int Ctot, int c_off, bool relu);

// Pixels per conv task for a layer with reduction length K = Ci*kh*kw: the
// im2col tile [K, tile] stays near 2 MiB of float32 and tiles are 64..1024 wide.
int conv_tile_pixels(int K);

}  // namespace speed::cpu
