// Row-major GEMM for the CPU backend:
//   C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C
// op(A) = A (lda >= K) or Aᵀ (A stored [K,M], lda >= M); likewise for B.
// Dispatches to BLAS (SPEED_HAVE_CBLAS) unless the built-in kernel is forced.
// Both paths give bitwise identical results for any thread count: every C
// element is reduced over K in an order that depends only on K.
#pragma once
#include <cstddef>

#include "threadpool.h"

namespace speed::cpu {

template <typename T>
void gemm(ThreadPool* pool, bool trans_a, bool trans_b, int M, int N, int K, T alpha,
          const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc);

// The built-in cache-blocked kernel; pool == nullptr runs on the calling thread
// (used inside per-task work such as attention).
template <typename T>
void gemm_builtin(ThreadPool* pool, bool trans_a, bool trans_b, int M, int N, int K,
                  T alpha, const T* A, int lda, const T* B, int ldb, T beta, T* C,
                  int ldc);

// One GEMM on the calling thread: single-threaded BLAS when gemm() would use
// BLAS, else the built-in kernel. For per-task work (attention heads): the
// result does not depend on how many threads the caller's pool has.
template <typename T>
void gemm_serial(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A,
                 int lda, const T* B, int ldb, T beta, T* C, int ldc);

bool gemm_uses_blas();

// The built-in kernel with A packed once for many GEMMs that share it (a conv's
// weights over all its pixel tiles): gemm_pack_a writes A [M,K] (op(A) as for gemm)
// into gemm_packed_a_size(M, K) values in the micro-kernel's panel layout (for the
// micro-kernel this CPU runs); gemm_serial_packed_a is then gemm_builtin(nullptr,
// ...) with that A, bitwise equal to it. Callers use these only when
// !gemm_uses_blas().
template <typename T>
size_t gemm_packed_a_size(int M, int K);
template <typename T>
void gemm_pack_a(ThreadPool* pool, bool trans_a, int M, int K, const T* A, int lda, T* dst);
template <typename T>
void gemm_serial_packed_a(int M, int N, int K, T alpha, const T* packed_a, bool trans_b, const T* B, int ldb,
                          T beta, T* C, int ldc);  // false when built without BLAS or when forced builtin

}  // namespace speed::cpu
