// Undoes cuda_host_begin.h.
#undef SPEED_UNROLL
#undef __launch_bounds__
#undef __align__
#undef __shared__
#undef __forceinline__
#undef __device__
#undef __global__
