// Elementwise kernels (src/core/ops/elementwise.ts): unary maps (affine alpha*x + beta, exp, log, sigmoid, tanh, relu,
// gelu, sqrt, square) and binary maps with numpy broadcasting (add, sub, mul, div, and the fused backward products of
// the unary ops: g*[x>0], g*y(1-y), g*(1-y^2), g*gelu'(x)).
//
// Operands are strided (strides in elements; a broadcast dimension has stride 0) and the output is contiguous. The
// driver drops size-1 dimensions and merges neighbours that are contiguous for every operand, splits the output into
// fixed chunks across the thread pool and hands each innermost run to the best ISA's leaf (elementwise_avx512.cc,
// elementwise_avx2.cc), gathering operands whose stride is not 0 or 1 into a small unit-stride buffer first. The
// portable code (the isa 'portable', and machines without x86 leaves) is also the readable reference of every formula. Vector leaves handle tails with masked loads (never a scalar epilogue), so
// an element's value does not depend on where a thread's chunk starts: results are the same for any thread count.
//
// gelu is the tanh approximation of GPT-2 / DALL-E: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed as the
// identical x * sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3), which has no cancellation for
// negative x.
#include <cmath>
#include <cstring>

#include "cpu_features.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {

// Op codes, shared with elementwise_avx2.cc, elementwise_avx512.cc and src/core/ops/elementwise.ts (keep in sync).
enum EwUnaryCode { kAffine = 0, kExp, kLog, kSigmoid, kTanh, kRelu, kGelu, kSqrt, kSquare, kUnaryCodes };
enum EwBinaryCode { kAdd = 0, kSub, kMul, kDiv, kReluGrad, kSigmoidGrad, kTanhGrad, kGeluGrad, kBinaryCodes };

#if defined(DALLE_X86)
// ISA leaves on one run of n >= 1 elements: y[i] = f(x[i]) / y[i] = f(a[i*sa], b[i*sb]) with sa, sb in {0, 1}.
// They return 0 for a code they do not implement (the portable loop runs instead).
int ew_unary_avx512(int code, const float* x, float* y, int64_t n, float alpha, float beta);
int ew_binary_avx512(int code, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n);
int ew_unary_avx2(int code, const float* x, float* y, int64_t n, float alpha, float beta);
int ew_binary_avx2(int code, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n);
#endif

namespace {

constexpr int kMaxRank = 8;
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK = 0.044715f;

// ---- portable formulas ----------------------------------------------------------------------------------------

inline float sigmoid_f(float x) { return 1.0f / (1.0f + std::exp(-x)); }

inline float gelu_f(float x) {
  const float u = kGeluC * x * (1.0f + kGeluK * x * x);
  return x / (1.0f + std::exp(-2.0f * u));
}

// d/dx [x s(2u)] = s + x s (1 - s) 2 u',  s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
inline float gelu_grad_f(float x) {
  const float x2 = x * x;
  const float u = kGeluC * x * (1.0f + kGeluK * x2);
  const float s = 1.0f / (1.0f + std::exp(-2.0f * u));
  const float du = 2.0f * kGeluC * (1.0f + 3.0f * kGeluK * x2);
  return s + x * s * (1.0f - s) * du;
}

template <class F>
inline void map1(const float* x, int64_t sx, float* y, int64_t n, F f) {
  if (sx == 1) {
    for (int64_t i = 0; i < n; i++) y[i] = f(x[i]);
  } else {
    for (int64_t i = 0; i < n; i++) y[i] = f(x[i * sx]);
  }
}

void unary_portable(int code, const float* x, int64_t sx, float* y, int64_t n, float alpha, float beta) {
  switch (code) {
    case kAffine: map1(x, sx, y, n, [=](float v) { return alpha * v + beta; }); break;
    case kExp: map1(x, sx, y, n, [](float v) { return std::exp(v); }); break;
    case kLog: map1(x, sx, y, n, [](float v) { return std::log(v); }); break;
    case kSigmoid: map1(x, sx, y, n, sigmoid_f); break;
    case kTanh: map1(x, sx, y, n, [](float v) { return std::tanh(v); }); break;
    case kRelu: map1(x, sx, y, n, [](float v) { return v < 0.0f ? 0.0f : v; }); break;  // NaN stays NaN
    case kGelu: map1(x, sx, y, n, gelu_f); break;
    case kSqrt: map1(x, sx, y, n, [](float v) { return std::sqrt(v); }); break;
    case kSquare: map1(x, sx, y, n, [](float v) { return v * v; }); break;
  }
}

template <class F>
inline void map2(const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n, F f) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; i++) y[i] = f(a[i], b[i]);
  } else if (sa == 0 && sb == 1) {
    const float av = a[0];
    for (int64_t i = 0; i < n; i++) y[i] = f(av, b[i]);
  } else if (sa == 1 && sb == 0) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; i++) y[i] = f(a[i], bv);
  } else {
    for (int64_t i = 0; i < n; i++) y[i] = f(a[i * sa], b[i * sb]);
  }
}

void binary_portable(int code, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  switch (code) {
    case kAdd: map2(a, sa, b, sb, y, n, [](float p, float q) { return p + q; }); break;
    case kSub: map2(a, sa, b, sb, y, n, [](float p, float q) { return p - q; }); break;
    case kMul: map2(a, sa, b, sb, y, n, [](float p, float q) { return p * q; }); break;
    case kDiv: map2(a, sa, b, sb, y, n, [](float p, float q) { return p / q; }); break;
    // a = incoming gradient g; b = the op's input x (relu, gelu) or output y (sigmoid, tanh)
    case kReluGrad: map2(a, sa, b, sb, y, n, [](float g, float x) { return x > 0.0f ? g : 0.0f; }); break;
    case kSigmoidGrad: map2(a, sa, b, sb, y, n, [](float g, float s) { return g * (s * (1.0f - s)); }); break;
    case kTanhGrad: map2(a, sa, b, sb, y, n, [](float g, float t) { return g * (1.0f - t * t); }); break;
    case kGeluGrad: map2(a, sa, b, sb, y, n, [](float g, float x) { return g * gelu_grad_f(x); }); break;
  }
}

// ---- one run, on the best ISA ------------------------------------------------------------------------------------

#if defined(DALLE_X86)
inline int unary_leaf(Isa isa, int code, const float* x, float* y, int64_t n, float alpha, float beta) {
  if (isa == Isa::Avx512) return ew_unary_avx512(code, x, y, n, alpha, beta);
  if (isa == Isa::Avx2) return ew_unary_avx2(code, x, y, n, alpha, beta);
  return 0;
}

inline int binary_leaf(Isa isa, int code, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  if (isa == Isa::Avx512) return ew_binary_avx512(code, a, sa, b, sb, y, n);
  if (isa == Isa::Avx2) return ew_binary_avx2(code, a, sa, b, sb, y, n);
  return 0;
}
#endif

// Runs with other strides are gathered into unit-stride pieces of this many elements for the vector leaves, so an
// element gets the same value whatever the layout of its operands.
constexpr int64_t kGather = 512;

inline void unary_run(Isa isa, int code, const float* x, int64_t sx, float* y, int64_t n, float alpha, float beta) {
#if defined(DALLE_X86)
  if (isa != Isa::Portable) {
    if (sx == 1) {
      if (unary_leaf(isa, code, x, y, n, alpha, beta)) return;
    } else {
      float buf[kGather];
      for (int64_t i = 0; i < n; i += kGather) {
        const int64_t len = n - i < kGather ? n - i : kGather;
        for (int64_t k = 0; k < len; k++) buf[k] = x[(i + k) * sx];
        if (!unary_leaf(isa, code, buf, y + i, len, alpha, beta)) unary_portable(code, buf, 1, y + i, len, alpha, beta);
      }
      return;
    }
  }
#else
  (void)isa;
#endif
  unary_portable(code, x, sx, y, n, alpha, beta);
}

inline void binary_run(Isa isa, int code, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
#if defined(DALLE_X86)
  if (isa != Isa::Portable) {
    const bool va = sa == 0 || sa == 1, vb = sb == 0 || sb == 1;
    if (va && vb) {
      if (binary_leaf(isa, code, a, sa, b, sb, y, n)) return;
    } else {
      float ba[kGather], bb[kGather];
      for (int64_t i = 0; i < n; i += kGather) {
        const int64_t len = n - i < kGather ? n - i : kGather;
        const float* pa = a + i * sa;
        const float* pb = b + i * sb;
        if (!va) {
          for (int64_t k = 0; k < len; k++) ba[k] = a[(i + k) * sa];
          pa = ba;
        }
        if (!vb) {
          for (int64_t k = 0; k < len; k++) bb[k] = b[(i + k) * sb];
          pb = bb;
        }
        const int64_t qa = va ? sa : 1, qb = vb ? sb : 1;
        if (!binary_leaf(isa, code, pa, qa, pb, qb, y + i, len)) binary_portable(code, pa, qa, pb, qb, y + i, len);
      }
      return;
    }
  }
#else
  (void)isa;
#endif
  binary_portable(code, a, sa, b, sb, y, n);
}

// ---- the strided driver ------------------------------------------------------------------------------------------

// An output shape with up to two input stride sets (the output is contiguous), after collapsing.
struct Plan {
  int rank = 0;
  int64_t shape[kMaxRank] = {0};
  int64_t st[2][kMaxRank] = {{0}};
  int64_t n = 1;
};

// Drops size-1 dimensions and merges a dimension into the one before it when that is contiguous for every operand.
Plan make_plan(int operands, const std::vector<int64_t>& shape, const std::vector<int64_t>* strides) {
  Plan p;
  for (size_t d = 0; d < shape.size(); d++) {
    const int64_t s = shape[d];
    p.n *= s;
    if (s == 1) continue;
    bool merge = p.rank > 0;
    for (int k = 0; k < operands && merge; k++) merge = p.st[k][p.rank - 1] == strides[k][d] * s;
    if (merge) {
      p.shape[p.rank - 1] *= s;
      for (int k = 0; k < operands; k++) p.st[k][p.rank - 1] = strides[k][d];
    } else {
      p.shape[p.rank] = s;
      for (int k = 0; k < operands; k++) p.st[k][p.rank] = strides[k][d];
      p.rank++;
    }
  }
  if (p.rank == 0) {  // one element
    p.rank = 1;
    p.shape[0] = 1;
    for (int k = 0; k < operands; k++) p.st[k][0] = 0;
  }
  return p;
}

// Calls run(offset0, offset1, y_index, len) for each innermost run of output elements [begin, end).
template <class Run>
void for_each_run(const Plan& p, int64_t begin, int64_t end, Run run) {
  const int r = p.rank;
  const int64_t inner = p.shape[r - 1];
  int64_t idx[kMaxRank] = {0};
  int64_t off0 = 0, off1 = 0;
  int64_t rest = begin / inner;
  int64_t i_in = begin % inner;
  for (int d = r - 2; d >= 0; d--) {
    idx[d] = rest % p.shape[d];
    rest /= p.shape[d];
    off0 += idx[d] * p.st[0][d];
    off1 += idx[d] * p.st[1][d];
  }
  int64_t pos = begin;
  while (pos < end) {
    const int64_t len = inner - i_in < end - pos ? inner - i_in : end - pos;
    run(off0 + i_in * p.st[0][r - 1], off1 + i_in * p.st[1][r - 1], pos, len);
    pos += len;
    i_in = 0;
    for (int d = r - 2; d >= 0; d--) {
      off0 += p.st[0][d];
      off1 += p.st[1][d];
      if (++idx[d] < p.shape[d]) break;
      off0 -= p.st[0][d] * p.shape[d];
      off1 -= p.st[1][d] * p.shape[d];
      idx[d] = 0;
    }
  }
}

// Elements per parallel chunk: transcendental maps cost more per element than arithmetic.
int64_t grain_unary(int code) { return code == kAffine || code == kRelu || code == kSquare || code == kSqrt ? 1 << 15 : 1 << 13; }
int64_t grain_binary(int code) { return code == kGeluGrad ? 1 << 13 : 1 << 15; }

void check_shape(const char* op, const std::vector<int64_t>& shape) {
  DALLE_CHECK((int)shape.size() <= kMaxRank, op, "rank %d is over the limit of %d", (int)shape.size(), kMaxRank);
  for (int64_t s : shape) DALLE_CHECK(s >= 0, op, "negative dimension in shape %s", shape_str(shape.data(), (int)shape.size()).c_str());
}

void check_strides(const char* op, const char* which, const std::vector<int64_t>& shape, const std::vector<int64_t>& st) {
  DALLE_CHECK(st.size() == shape.size(), op, "%s has %d strides for shape %s", which, (int)st.size(),
              shape_str(shape.data(), (int)shape.size()).c_str());
}

// ewUnary(code, out, x, shape, xStrides, alpha, beta): out (contiguous, shape) = f(x strided)
Napi::Value EwUnary(const Napi::CallbackInfo& info) {
  const char* op = "ewUnary";
  const int code = (int)arg_i64(info, 0, op);
  float* y = arg_data<float>(info, 1, op);
  const float* x = arg_data<const float>(info, 2, op);
  std::vector<int64_t> shape = arg_i64_array(info, 3, op);
  std::vector<int64_t> xs = arg_i64_array(info, 4, op);
  const float alpha = (float)arg_f64(info, 5, op), beta = (float)arg_f64(info, 6, op);
  DALLE_CHECK(code >= 0 && code < kUnaryCodes, op, "unknown unary op code %d", code);
  check_shape(op, shape);
  check_strides(op, "x", shape, xs);
  Plan p = make_plan(1, shape, &xs);
  if (p.n == 0) return info.Env().Undefined();
  DALLE_CHECK(x && y, op, "null address for shape %s", shape_str(shape.data(), (int)shape.size()).c_str());
  const Isa isa = active_isa();
  parallel_for(p.n, grain_unary(code), [&](int64_t b, int64_t e) {
    for_each_run(p, b, e, [&](int64_t ox, int64_t, int64_t yi, int64_t len) {
      unary_run(isa, code, x + ox, p.st[0][p.rank - 1], y + yi, len, alpha, beta);
    });
  });
  return info.Env().Undefined();
}

// ewUnaryFlat(code, n, out, x, alpha, beta): contiguous x and out of n elements.
Napi::Value EwUnaryFlat(const Napi::CallbackInfo& info) {
  const char* op = "ewUnaryFlat";
  const int code = (int)arg_i64(info, 0, op);
  const int64_t n = arg_i64(info, 1, op);
  float* y = arg_data<float>(info, 2, op);
  const float* x = arg_data<const float>(info, 3, op);
  const float alpha = (float)arg_f64(info, 4, op), beta = (float)arg_f64(info, 5, op);
  DALLE_CHECK(code >= 0 && code < kUnaryCodes, op, "unknown unary op code %d", code);
  DALLE_CHECK(n >= 0, op, "negative count %lld", (long long)n);
  if (n == 0) return info.Env().Undefined();
  DALLE_CHECK(x && y, op, "null address for %lld elements", (long long)n);
  const Isa isa = active_isa();
  parallel_for(n, grain_unary(code), [&](int64_t b, int64_t e) { unary_run(isa, code, x + b, 1, y + b, e - b, alpha, beta); });
  return info.Env().Undefined();
}

// ewBinary(code, out, a, aStrides, b, bStrides, shape): out (contiguous, shape) = f(a, b), strides 0 where broadcast.
Napi::Value EwBinary(const Napi::CallbackInfo& info) {
  const char* op = "ewBinary";
  const int code = (int)arg_i64(info, 0, op);
  float* y = arg_data<float>(info, 1, op);
  const float* a = arg_data<const float>(info, 2, op);
  std::vector<int64_t> st[2];
  st[0] = arg_i64_array(info, 3, op);
  const float* b = arg_data<const float>(info, 4, op);
  st[1] = arg_i64_array(info, 5, op);
  std::vector<int64_t> shape = arg_i64_array(info, 6, op);
  DALLE_CHECK(code >= 0 && code < kBinaryCodes, op, "unknown binary op code %d", code);
  check_shape(op, shape);
  check_strides(op, "a", shape, st[0]);
  check_strides(op, "b", shape, st[1]);
  Plan p = make_plan(2, shape, st);
  if (p.n == 0) return info.Env().Undefined();
  DALLE_CHECK(a && b && y, op, "null address for shape %s", shape_str(shape.data(), (int)shape.size()).c_str());
  const Isa isa = active_isa();
  parallel_for(p.n, grain_binary(code), [&](int64_t lo, int64_t hi) {
    for_each_run(p, lo, hi, [&](int64_t oa, int64_t ob, int64_t yi, int64_t len) {
      binary_run(isa, code, a + oa, p.st[0][p.rank - 1], b + ob, p.st[1][p.rank - 1], y + yi, len);
    });
  });
  return info.Env().Undefined();
}

// ewBinaryFlat(code, n, out, a, b): contiguous a, b and out of n elements.
Napi::Value EwBinaryFlat(const Napi::CallbackInfo& info) {
  const char* op = "ewBinaryFlat";
  const int code = (int)arg_i64(info, 0, op);
  const int64_t n = arg_i64(info, 1, op);
  float* y = arg_data<float>(info, 2, op);
  const float* a = arg_data<const float>(info, 3, op);
  const float* b = arg_data<const float>(info, 4, op);
  DALLE_CHECK(code >= 0 && code < kBinaryCodes, op, "unknown binary op code %d", code);
  DALLE_CHECK(n >= 0, op, "negative count %lld", (long long)n);
  if (n == 0) return info.Env().Undefined();
  DALLE_CHECK(a && b && y, op, "null address for %lld elements", (long long)n);
  const Isa isa = active_isa();
  parallel_for(n, grain_binary(code), [&](int64_t lo, int64_t hi) { binary_run(isa, code, a + lo, 1, b + lo, 1, y + lo, hi - lo); });
  return info.Env().Undefined();
}

DALLE_EXPORT("ewUnary", EwUnary);
DALLE_EXPORT("ewUnaryFlat", EwUnaryFlat);
DALLE_EXPORT("ewBinary", EwBinary);
DALLE_EXPORT("ewBinaryFlat", EwBinaryFlat);

}  // namespace
}  // namespace dalle
