// Dense fp32 GEMMs whose results do not depend on the thread count: the output is cut into
// fixed panels of 64 columns, each computed by a single-threaded Eigen product (whose blocking
// then depends on the panel's shape only), the panels spread over OpenMP threads. Eigen's own
// threading is never used: it re-blocks the reduction by thread count, changing the rounding.
#pragma once

#include <cstdint>

namespace quant {

// C[M][N] = (accumulate ? C : 0) + alpha * A[M][K] * B[N][K]^T. Row-major with leading dims.
void gemm_nt(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, bool accumulate);

// C[M][N] = (accumulate ? C : 0) + alpha * A[M][K] * B[K][N]. Row-major with leading dims.
void gemm_nn(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
             int64_t K, float alpha, bool accumulate);

struct StoredMatrix;
// C[M][N] = (accumulate ? C : 0) + A[M][K] * Wᵀ, W an F32, F16 or BF16 matrix as stored (N x K):
// each panel of 64 rows converted to fp32 (F16C) into a per-thread buffer, then gemm_nt's product
// on it, so the bytes equal gemm_nt's on the converted matrix and no fp32 copy of W exists.
void gemm_nt_stored(const float* A, int64_t M, const StoredMatrix& w, float* C, bool accumulate);
bool gemm_stored_supports(int type);  // TType as int: F32, F16, BF16

// Called once per process by the front ends: OpenMP threads for our loops, none for Eigen.
void set_num_threads(int n);

}  // namespace quant
