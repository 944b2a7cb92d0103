// The inline-PTX wrapper of the bf16 tensor-core attention: mma.sync m16n8k16 bf16 x bf16 -> f32.
// The kernels in attention_tc_kernels.cuh call only this wrapper, so that the host test
// (native/dev/cuda/test_attention_tc_host.cpp) can give it a host body that emulates the
// instruction per the PTX ISA. Included inside a namespace by attention_tc.cu and by
// native/dev/cuda/attention.cu.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 mma needs sm_80+; the host never selects this path there
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
