// Op codes and limits shared by the device code (*_kernels.cuh), the launchers and the N-API layer (addon.cc), with
// no CUDA dependency. The codes are the CPU addon's (native/cpu/elementwise.cc, reduce.cc, src/core/ops): keep in sync.
#pragma once

namespace dalle {
namespace cuda {

constexpr int kMaxRank = 8;  // strided ops, as native/cpu/copy.cc and elementwise.cc

enum EwUnaryCode { kAffine = 0, kExp, kLog, kSigmoid, kTanh, kRelu, kGelu, kSqrt, kSquare, kUnaryCodes };
enum EwBinaryCode { kAdd = 0, kSub, kMul, kDiv, kReluGrad, kSigmoidGrad, kTanhGrad, kGeluGrad, kBinaryCodes };
enum ReduceCode { kReduceSum = 0, kReduceMax = 1 };
enum PhiloxKind { kPhiloxUniform = 0, kPhiloxNormal = 1, kPhiloxGumbel = 2 };

}  // namespace cuda
}  // namespace dalle
