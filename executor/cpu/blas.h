// Row-major GEMM through OpenBLAS: C = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "planner/common/error.h"

namespace alpa::exec::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // no products: C = beta * C
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    }
    return;
  }
  constexpr int64_t kMax = std::numeric_limits<blasint>::max();
  if (std::max({m, n, k, lda, ldb, ldc}) > kMax) {
    throw InternalError("cpu kernels: GEMM dimension exceeds the BLAS integer range");
  }
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  const auto bi = [](int64_t v) { return static_cast<blasint>(v); };
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ta, tb, bi(m), bi(n), bi(k), alpha, a, bi(lda), b, bi(ldb), beta, c, bi(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, bi(m), bi(n), bi(k), alpha, a, bi(lda), b, bi(ldb), beta, c, bi(ldc));
  }
}

}  // namespace alpa::exec::cpu
