// Maps CUDA's kernel keywords to C++ for a kernel header included next (see cuda_host.h);
// cuda_host_end.h undoes it. No include guard: used once per included kernel header.
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define SPEED_UNROLL
