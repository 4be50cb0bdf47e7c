// The part of NCCL's C ABI that the collective backend calls, declared here so that the CUDA addon builds without
// NCCL's headers and loads libnccl.so.2 at run time (as gemm.cc loads cuBLASLt): a machine without NCCL builds and
// loads the addon and is told why data-parallel GPU training is unavailable. The values are those of nccl.h (stable
// since NCCL 2.0; ncclInProgress since 2.14, ncclAvg since 2.10); NCCL_UNIQUE_ID_BYTES is 128.
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime_api.h>

namespace dalle {
namespace cuda {
namespace nccl {

typedef int Result;  // ncclResult_t
constexpr Result kSuccess = 0, kUnhandledCudaError = 1, kSystemError = 2, kInternalError = 3, kInvalidArgument = 4,
                 kInvalidUsage = 5, kRemoteError = 6, kInProgress = 7;

typedef int RedOp;  // ncclRedOp_t
constexpr RedOp kSum = 0, kMax = 2, kMin = 3;

typedef int DataType;  // ncclDataType_t
constexpr DataType kUint8 = 1, kFloat32 = 7, kFloat64 = 8;

typedef void* Comm;  // ncclComm_t, an opaque pointer

constexpr size_t kUniqueIdBytes = 128;
struct UniqueId {
  char internal[kUniqueIdBytes];
};

struct Api {
  Result (*getVersion)(int*);
  Result (*getUniqueId)(UniqueId*);
  Result (*commInitRank)(Comm*, int nranks, UniqueId id, int rank);  // the id by value, as in nccl.h
  Result (*allReduce)(const void* send, void* recv, size_t count, DataType, RedOp, Comm, cudaStream_t);
  Result (*broadcast)(const void* send, void* recv, size_t count, DataType, int root, Comm, cudaStream_t);
  Result (*commAbort)(Comm);
  Result (*commDestroy)(Comm);
  const char* (*getErrorString)(Result);
  Result (*commGetAsyncError)(Comm, Result*);
};

/** What loading NCCL found: the table (api != nullptr) and its version, or why there is none. */
struct Library {
  const Api* api = nullptr;
  int versionCode = 0;   // ncclGetVersion: 21903 for 2.19.3 (X*1000+Y*100+Z up to 2.8)
  std::string version;   // "2.19.3"
  std::string path;      // what was dlopen'ed
  std::string reason;    // why api is null
};

/** Loads NCCL once (DALLE_NCCL_LIB, else libnccl.so.2 on the loader's path); never throws. Thread-safe. */
const Library& library();

/** "2.19.3" from ncclGetVersion's code. */
std::string versionString(int code);

/** NCCL's words for `r`, with its name ("ncclRemoteError: ..."). */
std::string errorText(const Api& api, Result r);

}  // namespace nccl
}  // namespace cuda
}  // namespace dalle
