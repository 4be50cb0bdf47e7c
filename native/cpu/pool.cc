// 2x2 max-pool (stride 2) and nearest-neighbour 2x upsampling, forward and backward, NCHW float32.
// Key: B batch, C channels, H x W the input image of the forward op (so the pooled / the pre-upsampling image).
// Memory-bound loops, multi-threaded over the B * C planes; each output element is written by one thread, in a fixed
// order, so results do not depend on the thread count.
#include <cmath>
#include <cstring>
#include <initializer_list>

#include "conv.h"
#include "error.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {
namespace {

// Planes per parallel chunk: at least ~16 K elements of work.
int64_t plane_grain(int64_t plane) { return plane >= 16384 ? 1 : 16384 / (plane > 0 ? plane : 1); }

}  // namespace

// Window order: 0 (0, 0), 1 (0, 1), 2 (1, 0), 3 (1, 1). The first maximum wins; a NaN wins (and propagates, as in
// PyTorch).
void maxpool2x2_forward(const float* x, float* y, int32_t* argmax, int64_t B, int64_t C, int64_t H, int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2;
  parallel_for(B * C, plane_grain(H * W), [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; pl++) {
      const float* xp = x + pl * H * W;
      float* yp = y + pl * Ho * Wo;
      int32_t* ap = argmax + pl * Ho * Wo;
      for (int64_t i = 0; i < Ho; i++) {
        const float* r0 = xp + 2 * i * W;
        const float* r1 = r0 + W;
        for (int64_t j = 0; j < Wo; j++) {
          const float v[4] = {r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]};
          float best = v[0];
          int32_t arg = 0;
          for (int32_t t = 1; t < 4; t++) {
            if (v[t] > best || (std::isnan(v[t]) && !std::isnan(best))) {
              best = v[t];
              arg = t;
            }
          }
          yp[i * Wo + j] = best;
          ap[i * Wo + j] = arg;
        }
      }
    }
  });
}

namespace {

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

inline void store4(float* p, v4f v) { memcpy(p, &v, sizeof v); }

}  // namespace

// dx gets dy at each window's argmax and zeros elsewhere. Four windows at a time in 4-lane vectors (GCC vector
// extensions: SSE2 / NEON), blends and interleaving shuffles: the scalar loop alone ran at 0.26 of the bandwidth bound
// fwd + bwd at 64 px (bench/ops), and this form measured 12x faster than it in the same process (busy machine, rough):
// its per-element choices on random argmaxes most likely compiled to mispredicted branches. The scalar tail computes
// the same values.
void maxpool2x2_backward(const float* dy, const int32_t* argmax, float* dx, int64_t B, int64_t C, int64_t H,
                         int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2;
  parallel_for(B * C, plane_grain(H * W), [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; pl++) {
      const float* gp = dy + pl * Ho * Wo;
      const int32_t* ap = argmax + pl * Ho * Wo;
      float* dp = dx + pl * H * W;
      for (int64_t i = 0; i < Ho; i++) {
        float* r0 = dp + 2 * i * W;
        float* r1 = r0 + W;
        const float* gr = gp + i * Wo;
        const int32_t* ar = ap + i * Wo;
        int64_t j = 0;
        const v4f zero = {0, 0, 0, 0};
        for (; j + 4 <= Wo; j += 4) {  // 4 windows: the even / odd columns interleaved back into 8
          v4f g;
          v4i a;
          memcpy(&g, gr + j, sizeof g);
          memcpy(&a, ar + j, sizeof a);
          const v4f e0 = a == 0 ? g : zero, o0 = a == 1 ? g : zero, e1 = a == 2 ? g : zero, o1 = a == 3 ? g : zero;
          store4(r0 + 2 * j, __builtin_shuffle(e0, o0, v4i{0, 4, 1, 5}));
          store4(r0 + 2 * j + 4, __builtin_shuffle(e0, o0, v4i{2, 6, 3, 7}));
          store4(r1 + 2 * j, __builtin_shuffle(e1, o1, v4i{0, 4, 1, 5}));
          store4(r1 + 2 * j + 4, __builtin_shuffle(e1, o1, v4i{2, 6, 3, 7}));
        }
        for (; j < Wo; j++) {
          const float g = gr[j];
          const int32_t a = ar[j];
          r0[2 * j] = a == 0 ? g : 0.0f;
          r0[2 * j + 1] = a == 1 ? g : 0.0f;
          r1[2 * j] = a == 2 ? g : 0.0f;
          r1[2 * j + 1] = a == 3 ? g : 0.0f;
        }
      }
    }
  });
}

void upsample2x_forward(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W) {
  const int64_t W2 = 2 * W;
  parallel_for(B * C, plane_grain(4 * H * W), [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; pl++) {
      const float* xp = x + pl * H * W;
      float* yp = y + pl * 4 * H * W;
      for (int64_t i = 0; i < H; i++) {
        float* r0 = yp + 2 * i * W2;
        float* r1 = r0 + W2;
        const float* src = xp + i * W;
        for (int64_t j = 0; j < W; j++) {
          const float v = src[j];
          r0[2 * j] = v;
          r0[2 * j + 1] = v;
        }
        for (int64_t j = 0; j < W2; j++) r1[j] = r0[j];
      }
    }
  });
}

// dx[h][w] = (dy[2h][2w] + dy[2h][2w+1]) + (dy[2h+1][2w] + dy[2h+1][2w+1]).
void upsample2x_backward(const float* dy, float* dx, int64_t B, int64_t C, int64_t H, int64_t W) {
  const int64_t W2 = 2 * W;
  parallel_for(B * C, plane_grain(4 * H * W), [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; pl++) {
      const float* gp = dy + pl * 4 * H * W;
      float* dp = dx + pl * H * W;
      for (int64_t i = 0; i < H; i++) {
        const float* r0 = gp + 2 * i * W2;
        const float* r1 = r0 + W2;
        float* dst = dp + i * W;
        for (int64_t j = 0; j < W; j++) dst[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
      }
    }
  });
}

namespace {

void check_pool(const char* op, int64_t B, int64_t C, int64_t H, int64_t W, bool even) {
  int64_t dims[4] = {B, C, H, W};
  DALLE_CHECK(B > 0 && C > 0 && H > 0 && W > 0, op, "dimensions must be positive, got x %s",
              shape_str(dims, 4).c_str());
  DALLE_CHECK(!even || (H % 2 == 0 && W % 2 == 0), op, "H and W must be even for a 2x2 pool, got x %s",
              shape_str(dims, 4).c_str());
  DALLE_CHECK(B * C * H * W < (int64_t(1) << 40), op, "tensor too large: x %s", shape_str(dims, 4).c_str());
}

struct PoolArgs {
  int64_t B, C, H, W;
};

PoolArgs pool_args(const Napi::CallbackInfo& info, size_t first, const char* op, bool even) {
  PoolArgs a{arg_i64(info, first, op), arg_i64(info, first + 1, op), arg_i64(info, first + 2, op),
             arg_i64(info, first + 3, op)};
  check_pool(op, a.B, a.C, a.H, a.W, even);
  return a;
}

void need_ptrs(const char* op, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) DALLE_CHECK(p != nullptr, op, "tensor arguments must be non-null addresses");
}

// maxpool2x2Forward(x, y, argmax, B, C, H, W): x (B, C, H, W) -> y, argmax (int32) (B, C, H/2, W/2)
Napi::Value MaxpoolForward(const Napi::CallbackInfo& info) {
  const char* op = "maxpool2x2Forward";
  const float* x = arg_data<const float>(info, 0, op);
  float* y = arg_data<float>(info, 1, op);
  int32_t* am = arg_data<int32_t>(info, 2, op);
  PoolArgs a = pool_args(info, 3, op, true);
  need_ptrs(op, {x, y, am});
  maxpool2x2_forward(x, y, am, a.B, a.C, a.H, a.W);
  return info.Env().Undefined();
}

// maxpool2x2Backward(dy, argmax, dx, B, C, H, W): H, W of x; dx (B, C, H, W) is overwritten.
Napi::Value MaxpoolBackward(const Napi::CallbackInfo& info) {
  const char* op = "maxpool2x2Backward";
  const float* dy = arg_data<const float>(info, 0, op);
  const int32_t* am = arg_data<const int32_t>(info, 1, op);
  float* dx = arg_data<float>(info, 2, op);
  PoolArgs a = pool_args(info, 3, op, true);
  need_ptrs(op, {dy, am, dx});
  maxpool2x2_backward(dy, am, dx, a.B, a.C, a.H, a.W);
  return info.Env().Undefined();
}

// upsample2xForward(x, y, B, C, H, W): x (B, C, H, W) -> y (B, C, 2H, 2W)
Napi::Value UpsampleForward(const Napi::CallbackInfo& info) {
  const char* op = "upsample2xForward";
  const float* x = arg_data<const float>(info, 0, op);
  float* y = arg_data<float>(info, 1, op);
  PoolArgs a = pool_args(info, 2, op, false);
  need_ptrs(op, {x, y});
  upsample2x_forward(x, y, a.B, a.C, a.H, a.W);
  return info.Env().Undefined();
}

// upsample2xBackward(dy, dx, B, C, H, W): H, W of x (dy is (B, C, 2H, 2W)); dx is overwritten.
Napi::Value UpsampleBackward(const Napi::CallbackInfo& info) {
  const char* op = "upsample2xBackward";
  const float* dy = arg_data<const float>(info, 0, op);
  float* dx = arg_data<float>(info, 1, op);
  PoolArgs a = pool_args(info, 2, op, false);
  need_ptrs(op, {dy, dx});
  upsample2x_backward(dy, dx, a.B, a.C, a.H, a.W);
  return info.Env().Undefined();
}

DALLE_EXPORT("maxpool2x2Forward", MaxpoolForward);
DALLE_EXPORT("maxpool2x2Backward", MaxpoolBackward);
DALLE_EXPORT("upsample2xForward", UpsampleForward);
DALLE_EXPORT("upsample2xBackward", UpsampleBackward);

}  // namespace
}  // namespace dalle
