// GEMM through cuBLASLt, loaded at run time with dlopen: the addon then builds and loads on machines whose CUDA
// toolkit has no cuBLAS (the CI image has nvcc and cudart only), and a missing cuBLAS is a clear error on the first
// GEMM, not a failure to load the whole CUDA addon. The declarations below are the stable C ABI of cublasLt.h
// (cuBLAS 11-13); when the real header is present at build time they are checked against it (static_asserts).
//
// Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C is computed as the column-major product
// C^T (N, M) = op(B)^T @ op(A)^T, i.e. cuBLASLt's "A" is our B and its "B" is our A, each with its own transpose flag;
// a row-major matrix with row stride ld is a column-major matrix of the transposed shape with the same ld.
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

#include <cuda_runtime_api.h>
#include <library_types.h>

#include "cuda_ops.h"

namespace dalle {
namespace cuda {
namespace lt {

typedef int Status;  // cublasStatus_t, 0 = CUBLAS_STATUS_SUCCESS
typedef void* Handle;
typedef void* MatmulDesc;
typedef void* MatrixLayout;
typedef void* Preference;
struct Algo {
  uint64_t data[8];
};
struct HeuristicResult {
  Algo algo;
  size_t workspaceSize;
  Status state;
  float wavesCount;
  int reserved[4];
};

// cublasComputeType_t
constexpr int kCompute32F = 68, kCompute32FFastTF32 = 77;
// cublasLtMatmulDescAttributes_t
constexpr int kDescTransA = 3, kDescTransB = 4;
// cublasLtMatrixLayoutAttribute_t
constexpr int kLayoutBatchCount = 5, kLayoutStridedBatchOffset = 6;
// cublasLtMatmulPreferenceAttributes_t
constexpr int kPrefMaxWorkspaceBytes = 1;
constexpr int kPrefMinAlignA = 5, kPrefMinAlignB = 6, kPrefMinAlignC = 7, kPrefMinAlignD = 8;
// cublasOperation_t
constexpr int32_t kOpN = 0, kOpT = 1;

struct Api {
  Status (*create)(Handle*);
  Status (*descCreate)(MatmulDesc*, int, cudaDataType_t);
  Status (*descDestroy)(MatmulDesc);
  Status (*descSetAttribute)(MatmulDesc, int, const void*, size_t);
  Status (*layoutCreate)(MatrixLayout*, cudaDataType_t, uint64_t, uint64_t, int64_t);
  Status (*layoutDestroy)(MatrixLayout);
  Status (*layoutSetAttribute)(MatrixLayout, int, const void*, size_t);
  Status (*prefCreate)(Preference*);
  Status (*prefDestroy)(Preference);
  Status (*prefSetAttribute)(Preference, int, const void*, size_t);
  Status (*heuristic)(Handle, MatmulDesc, MatrixLayout, MatrixLayout, MatrixLayout, MatrixLayout, Preference, int,
                      HeuristicResult*, int*);
  Status (*matmul)(Handle, MatmulDesc, const void*, const void*, MatrixLayout, const void*, MatrixLayout, const void*,
                   const void*, MatrixLayout, void*, MatrixLayout, const Algo*, void*, size_t, cudaStream_t);
};

std::mutex mu;
bool tried = false;
std::string load_error;
Api api;
Handle handle = nullptr;
void* ws = nullptr;
constexpr size_t kWorkspace = 32u << 20;

template <class F>
bool sym(void* lib, const char* name, F* out, std::string* err) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out) *err = std::string("libcublasLt has no symbol ") + name;
  return *out != nullptr;
}

std::string load_locked() {
  if (tried) return load_error;
  tried = true;
  const char* names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"};
  void* lib = nullptr;
  std::string tried_names;
  for (const char* n : names) {
    lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    tried_names += std::string(tried_names.empty() ? "" : ", ") + n;
  }
  if (!lib) {
    load_error = "cuBLASLt is not installed (tried " + tried_names +
                 "); install the CUDA toolkit's cuBLAS (libcublas) or put its lib directory on LD_LIBRARY_PATH";
    return load_error;
  }
  std::string err;
  bool ok = sym(lib, "cublasLtCreate", &api.create, &err) &&
            sym(lib, "cublasLtMatmulDescCreate", &api.descCreate, &err) &&
            sym(lib, "cublasLtMatmulDescDestroy", &api.descDestroy, &err) &&
            sym(lib, "cublasLtMatmulDescSetAttribute", &api.descSetAttribute, &err) &&
            sym(lib, "cublasLtMatrixLayoutCreate", &api.layoutCreate, &err) &&
            sym(lib, "cublasLtMatrixLayoutDestroy", &api.layoutDestroy, &err) &&
            sym(lib, "cublasLtMatrixLayoutSetAttribute", &api.layoutSetAttribute, &err) &&
            sym(lib, "cublasLtMatmulPreferenceCreate", &api.prefCreate, &err) &&
            sym(lib, "cublasLtMatmulPreferenceDestroy", &api.prefDestroy, &err) &&
            sym(lib, "cublasLtMatmulPreferenceSetAttribute", &api.prefSetAttribute, &err) &&
            sym(lib, "cublasLtMatmulAlgoGetHeuristic", &api.heuristic, &err) &&
            sym(lib, "cublasLtMatmul", &api.matmul, &err);
  if (!ok) {
    load_error = err;
    return load_error;
  }
  if (api.create(&handle) != 0) {
    load_error = "cublasLtCreate failed";
    return load_error;
  }
  const cudaError_t e = cudaMalloc(&ws, kWorkspace);
  if (e != cudaSuccess) {
    load_error = std::string("cuBLASLt workspace: ") + cudaGetErrorString(e);
    return load_error;
  }
  return "";
}

cudaDataType_t data_type(DType dt) { return dt == kF32 ? CUDA_R_32F : dt == kF16 ? CUDA_R_16F : CUDA_R_16BF; }

// RAII for the descriptors of one call.
struct Descs {
  MatmulDesc op = nullptr;
  MatrixLayout a = nullptr, b = nullptr, c = nullptr;
  Preference pref = nullptr;
  ~Descs() {
    if (pref) api.prefDestroy(pref);
    if (c) api.layoutDestroy(c);
    if (b) api.layoutDestroy(b);
    if (a) api.layoutDestroy(a);
    if (op) api.descDestroy(op);
  }
};

std::string status(const char* what, Status s) {
  return s == 0 ? "" : std::string("gemm: ") + what + " failed (cublasStatus " + std::to_string(s) + ")";
}

// A column-major (rows, cols) layout with leading dimension ld, batched.
std::string layout(MatrixLayout* out, cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int32_t batch,
                   int64_t stride) {
  std::string e = status("cublasLtMatrixLayoutCreate", api.layoutCreate(out, t, rows, cols, ld));
  if (!e.empty() || batch == 1) return e;
  e = status("layout batch count", api.layoutSetAttribute(*out, kLayoutBatchCount, &batch, sizeof(batch)));
  if (!e.empty()) return e;
  return status("layout batch stride", api.layoutSetAttribute(*out, kLayoutStridedBatchOffset, &stride, sizeof(stride)));
}

// The alignment (bytes, a power of two <= 256) every matrix of a batch keeps: the heuristic assumes 256 unless told,
// and would pick kernels that fault or refuse on offset sub-matrices (e.g. one image of a batch with odd sizes).
uint32_t alignment(const void* p, int64_t ld, int64_t stride, int64_t batch, int64_t es) {
  uint64_t bits = (uint64_t)(uintptr_t)p | (uint64_t)(ld * es) | 256u;
  if (batch > 1) bits |= (uint64_t)(stride * es);
  return (uint32_t)(bits & (~bits + 1));  // lowest set bit
}

}  // namespace lt

std::string cublaslt_load() {
  std::lock_guard<std::mutex> lock(lt::mu);
  return lt::load_locked();
}

std::string gemm(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
                 int64_t lda, int64_t stride_a, const void* Bm, int64_t ldb, int64_t stride_b, float beta, void* C,
                 int64_t ldc, int64_t stride_c, int64_t batch, bool tf32) {
  using namespace lt;
  if (M < 0 || N < 0 || K < 0 || batch < 0 || batch > 2147483647) return "gemm: bad sizes";
  if (M == 0 || N == 0 || batch == 0) return "";
  // Leading dimensions (row strides) must cover the stored rows.
  if (lda < (trans_a ? M : K) || ldb < (trans_b ? K : N) || ldc < N || lda < 1 || ldb < 1) {
    return "gemm: a row stride is smaller than its row (lda " + std::to_string(lda) + ", ldb " + std::to_string(ldb) +
           ", ldc " + std::to_string(ldc) + ")";
  }
  std::lock_guard<std::mutex> lock(mu);
  std::string e = load_locked();
  if (!e.empty()) return "gemm: " + e;
  if (K == 0) {
    // op(A) @ op(B) is zero, so C = beta * C; cuBLASLt does not take K = 0. beta 1 leaves C, beta 0 clears it.
    if (beta == 1.0f) return "";
    if (beta != 0.0f) return "gemm: K = 0 with beta other than 0 or 1 is not supported";
    for (int64_t b = 0; b < batch; b++) {
      char* base = (char*)C + b * stride_c * dtype_bytes(dt);
      cudaError_t ce = cudaMemset2D(base, ldc * dtype_bytes(dt), 0, N * dtype_bytes(dt), M);
      if (ce != cudaSuccess) return std::string("gemm: ") + cudaGetErrorString(ce);
    }
    return "";
  }
  const cudaDataType_t t = data_type(dt);
  const int compute = (dt == kF32 && tf32) ? kCompute32FFastTF32 : kCompute32F;
  Descs d;
  e = status("cublasLtMatmulDescCreate", api.descCreate(&d.op, compute, CUDA_R_32F));
  if (!e.empty()) return e;
  // Column-major: cuBLASLt A = our B (stored row-major (K, N), i.e. column-major (N, K) with ld ldb; op N when our B is
  // not transposed), cuBLASLt B = our A.
  const int32_t opa = trans_b ? kOpT : kOpN, opb = trans_a ? kOpT : kOpN;
  e = status("set transA", api.descSetAttribute(d.op, kDescTransA, &opa, sizeof(opa)));
  if (e.empty()) e = status("set transB", api.descSetAttribute(d.op, kDescTransB, &opb, sizeof(opb)));
  if (!e.empty()) return e;
  const int32_t nb = (int32_t)batch;
  // Stored shapes (column-major rows x cols): our B is (N, K) col-major unless transposed ((K, N)); our A is (K, M)
  // unless transposed ((M, K)); C is (N, M).
  e = layout(&d.a, t, trans_b ? K : N, trans_b ? N : K, ldb, nb, stride_b);
  if (e.empty()) e = layout(&d.b, t, trans_a ? M : K, trans_a ? K : M, lda, nb, stride_a);
  if (e.empty()) e = layout(&d.c, t, N, M, ldc, nb, stride_c);
  if (!e.empty()) return e;
  e = status("cublasLtMatmulPreferenceCreate", api.prefCreate(&d.pref));
  if (!e.empty()) return e;
  const uint64_t wsb = kWorkspace;
  e = status("set workspace", api.prefSetAttribute(d.pref, kPrefMaxWorkspaceBytes, &wsb, sizeof(wsb)));
  if (!e.empty()) return e;
  const int64_t es = dtype_bytes(dt);
  const uint32_t al_a = alignment(Bm, ldb, stride_b, batch, es), al_b = alignment(A, lda, stride_a, batch, es);
  const uint32_t al_c = alignment(C, ldc, stride_c, batch, es);
  e = status("set alignment A", api.prefSetAttribute(d.pref, kPrefMinAlignA, &al_a, sizeof(al_a)));
  if (e.empty()) e = status("set alignment B", api.prefSetAttribute(d.pref, kPrefMinAlignB, &al_b, sizeof(al_b)));
  if (e.empty()) e = status("set alignment C", api.prefSetAttribute(d.pref, kPrefMinAlignC, &al_c, sizeof(al_c)));
  if (e.empty()) e = status("set alignment D", api.prefSetAttribute(d.pref, kPrefMinAlignD, &al_c, sizeof(al_c)));
  if (!e.empty()) return e;
  HeuristicResult res;
  std::memset(&res, 0, sizeof(res));
  int found = 0;
  e = status("cublasLtMatmulAlgoGetHeuristic", api.heuristic(handle, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &res, &found));
  if (!e.empty()) return e;
  if (found == 0) return "gemm: cuBLASLt found no algorithm for this shape / type / alignment";
  return status("cublasLtMatmul", api.matmul(handle, d.op, &alpha, Bm, d.a, A, d.b, &beta, C, d.c, C, d.c, &res.algo, ws,
                                             kWorkspace, 0));
}

}  // namespace cuda
}  // namespace dalle

#if __has_include(<cublasLt.h>)
// Where the real header exists, check the hand-written ABI against it.
#include <cublasLt.h>
static_assert(dalle::cuda::lt::kCompute32F == CUBLAS_COMPUTE_32F, "cublasComputeType_t");
static_assert(dalle::cuda::lt::kCompute32FFastTF32 == CUBLAS_COMPUTE_32F_FAST_TF32, "cublasComputeType_t");
static_assert(dalle::cuda::lt::kDescTransA == CUBLASLT_MATMUL_DESC_TRANSA, "cublasLtMatmulDescAttributes_t");
static_assert(dalle::cuda::lt::kDescTransB == CUBLASLT_MATMUL_DESC_TRANSB, "cublasLtMatmulDescAttributes_t");
static_assert(dalle::cuda::lt::kLayoutBatchCount == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, "layout attribute");
static_assert(dalle::cuda::lt::kLayoutStridedBatchOffset == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, "layout");
static_assert(dalle::cuda::lt::kPrefMaxWorkspaceBytes == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, "preference");
static_assert(dalle::cuda::lt::kPrefMinAlignA == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, "preference");
static_assert(dalle::cuda::lt::kPrefMinAlignB == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, "preference");
static_assert(dalle::cuda::lt::kPrefMinAlignC == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, "preference");
static_assert(dalle::cuda::lt::kPrefMinAlignD == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, "preference");
static_assert(dalle::cuda::lt::kOpN == CUBLAS_OP_N && dalle::cuda::lt::kOpT == CUBLAS_OP_T, "cublasOperation_t");
static_assert(sizeof(dalle::cuda::lt::Algo) == sizeof(cublasLtMatmulAlgo_t), "cublasLtMatmulAlgo_t");
static_assert(sizeof(dalle::cuda::lt::HeuristicResult) == sizeof(cublasLtMatmulHeuristicResult_t), "heuristic result");
#endif
