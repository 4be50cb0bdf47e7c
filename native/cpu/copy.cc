// Data movement: strided copy (what makes a view contiguous, and what slice's backward scatters with), fill, and
// casts between f32, f16, bf16 and i32. f16/bf16 are raw uint16 bit patterns; f32 -> 16-bit rounds to nearest even.
#include <cmath>
#include <cstring>

#include "cpu_features.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {

// copy_avx512.cc, copy_avx2.cc: dst[i * dst_ld + j] = src[j * src_ld + i] for i, j < 16 (8), 4-byte items.
void transpose16x16_b32_avx512(const uint32_t* src, int64_t src_ld, uint32_t* dst, int64_t dst_ld);
void transpose8x8_b32_avx2(const uint32_t* src, int64_t src_ld, uint32_t* dst, int64_t dst_ld);

namespace {

constexpr int kMaxRank = 8;

// Copies a (shape) block whose elements sit at src + sum(i_d * src_strides[d]) to dst + sum(i_d * dst_strides[d]).
// Strides are in elements. The innermost dimension is copied as a run when both strides are 1; a run longer than
// kRunPiece is cut into pieces, so one long run (a contiguous copy after coalesce()) still uses every thread. Each
// task finds its first row's offsets by division once, then steps the index like an odometer (a division per row
// cost more than copying a 32-float row).
constexpr int64_t kRunPiece = 1 << 14;

template <class T>
void strided_copy_rows(T* dst, const T* src, int rank, const int64_t* shape, const int64_t* dst_strides,
                       const int64_t* src_strides) {
  int64_t outer = 1;
  for (int d = 0; d + 1 < rank; d++) outer *= shape[d];
  const int64_t inner = rank ? shape[rank - 1] : 1;
  const int64_t ds = rank ? dst_strides[rank - 1] : 1, ss = rank ? src_strides[rank - 1] : 1;
  const bool runs = ds == 1 && ss == 1;
  const int64_t pieces = runs && inner > kRunPiece ? (inner + kRunPiece - 1) / kRunPiece : 1;
  const int64_t piece_len = (inner + pieces - 1) / pieces;
  const int64_t grain = pieces > 1 ? 1 : (inner >= 4096 ? 1 : (4096 / (inner ? inner : 1)) + 1);
  parallel_for(outer * pieces, grain, [&](int64_t b, int64_t e) {
    int64_t idx[kMaxRank] = {0};
    int64_t rem = b / pieces, doff = 0, soff = 0;
    for (int d = rank - 2; d >= 0; d--) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
      doff += idx[d] * dst_strides[d];
      soff += idx[d] * src_strides[d];
    }
    for (int64_t job = b; job < e; job++) {
      const int64_t piece = job % pieces;
      const int64_t lo = piece * piece_len, hi = lo + piece_len < inner ? lo + piece_len : inner;
      T* dp = dst + doff;
      const T* sp = src + soff;
      if (runs) {
        if (hi > lo) memcpy(dp + lo, sp + lo, (hi - lo) * sizeof(T));
      } else {
        for (int64_t i = 0; i < inner; i++) dp[i * ds] = sp[i * ss];
      }
      if (piece + 1 < pieces) continue;
      for (int d = rank - 2; d >= 0; d--) {  // next row
        doff += dst_strides[d];
        soff += src_strides[d];
        if (++idx[d] < shape[d]) break;
        doff -= shape[d] * dst_strides[d];
        soff -= shape[d] * src_strides[d];
        idx[d] = 0;
      }
    }
  });
}

// Drops size-1 dimensions and merges each dimension into the next one where both sides step over it as one run
// (stride[d] == shape[d + 1] * stride[d + 1] in dst and in src): a contiguous copy becomes one run, a copy of rows
// of a wider matrix a (rows, cols) block. Rewrites shape and strides in place; returns the new rank (>= 1).
int coalesce(int rank, int64_t* shape, int64_t* dst_strides, int64_t* src_strides) {
  int out = 0;
  for (int d = 0; d < rank; d++) {
    if (shape[d] == 1) continue;
    shape[out] = shape[d];
    dst_strides[out] = dst_strides[d];
    src_strides[out] = src_strides[d];
    out++;
  }
  if (out == 0) {
    shape[0] = 1;
    dst_strides[0] = src_strides[0] = 1;
    return 1;
  }
  int merged = out - 1;  // working from the innermost dimension outwards
  for (int d = out - 2; d >= 0; d--) {
    if (dst_strides[d] == shape[merged] * dst_strides[merged] && src_strides[d] == shape[merged] * src_strides[merged]) {
      shape[merged] *= shape[d];
    } else {
      merged--;
      shape[merged] = shape[d];
      dst_strides[merged] = dst_strides[d];
      src_strides[merged] = src_strides[d];
    }
  }
  const int n = out - merged;
  for (int d = 0; d < n; d++) {
    shape[d] = shape[merged + d];
    dst_strides[d] = dst_strides[merged + d];
    src_strides[d] = src_strides[merged + d];
  }
  return n;
}

// A transposing copy (the destination's last dimension is strided in the source, while another dimension p is
// contiguous there, as after permute): copied in 32x32 tiles of (p, last) so that both sides are read and written
// along cache lines, instead of one strided element at a time. Whole tiles of 4-byte items are transposed in
// registers (copy_avx512.cc, copy_avx2.cc): the dVAE's code logits (16, 256, 1024) -> (16, 1024, 256) took 4.0 ms
// with the scalar loop and 0.83 ms so (40 GB/s, 2 threads).
template <class T>
bool strided_copy_tiled(T* dst, const T* src, int rank, const int64_t* shape, const int64_t* dst_strides,
                        const int64_t* src_strides) {
  if (rank < 2 || src_strides[rank - 1] == 1 || dst_strides[rank - 1] != 1) return false;
  int p = -1;
  for (int d = 0; d + 1 < rank; d++)
    if (src_strides[d] == 1 && shape[d] > 1) p = d;
  const int64_t last = shape[rank - 1];
  if (p < 0 || shape[p] < 8 || last < 8) return false;
  constexpr int64_t kTile = 32;
  const int64_t P = shape[p];
  const int64_t tiles_p = (P + kTile - 1) / kTile, tiles_l = (last + kTile - 1) / kTile;
  int64_t outer = 1;  // every dimension but p and the last
  for (int d = 0; d + 1 < rank; d++)
    if (d != p) outer *= shape[d];
  const int64_t sp_stride = src_strides[p], dp_stride = dst_strides[p];
  const int64_t sl_stride = src_strides[rank - 1];
  // 4-byte items in whole tiles move as 16 x 16 (AVX-512) or 8 x 8 (AVX2) register transposes; 0: the scalar loop.
  const int64_t block = active_isa() == Isa::Avx512 ? 16 : active_isa() == Isa::Avx2 ? 8 : 0;
  parallel_for(outer * tiles_p, 1, [&](int64_t b, int64_t e) {
    for (int64_t job = b; job < e; job++) {
      int64_t o = job / tiles_p, tp = job % tiles_p;
      int64_t rem = o, doff = 0, soff = 0;
      for (int d = rank - 2; d >= 0; d--) {
        if (d == p) continue;
        int64_t i = rem % shape[d];
        rem /= shape[d];
        doff += i * dst_strides[d];
        soff += i * src_strides[d];
      }
      const int64_t p0 = tp * kTile, p1 = p0 + kTile < P ? p0 + kTile : P;
      for (int64_t tl = 0; tl < tiles_l; tl++) {
        const int64_t l0 = tl * kTile, l1 = l0 + kTile < last ? l0 + kTile : last;
        if (sizeof(T) == 4 && block && p1 - p0 == kTile && l1 - l0 == kTile) {  // whole tile: register blocks
          for (int64_t i = p0; i < p1; i += block)
            for (int64_t j = l0; j < l1; j += block) {
              const uint32_t* bs = reinterpret_cast<const uint32_t*>(src + soff + i + j * sl_stride);
              uint32_t* bd = reinterpret_cast<uint32_t*>(dst + doff + i * dp_stride + j);
              if (block == 16) transpose16x16_b32_avx512(bs, sl_stride, bd, dp_stride);
              else transpose8x8_b32_avx2(bs, sl_stride, bd, dp_stride);
            }
          continue;
        }
        for (int64_t i = p0; i < p1; i++) {
          T* dp = dst + doff + i * dp_stride;
          const T* sp = src + soff + i * sp_stride;  // src_strides[p] == 1
          for (int64_t j = l0; j < l1; j++) dp[j] = sp[j * sl_stride];
        }
      }
    }
  });
  return true;
}

template <class T>
void strided_copy(T* dst, const T* src, int rank, const int64_t* shape, const int64_t* dst_strides,
                  const int64_t* src_strides) {
  if (!strided_copy_tiled(dst, src, rank, shape, dst_strides, src_strides)) {
    strided_copy_rows(dst, src, rank, shape, dst_strides, src_strides);
  }
}

// stridedCopy(dst, src, itemBytes, shape, dstStrides, srcStrides)
Napi::Value StridedCopy(const Napi::CallbackInfo& info) {
  const char* op = "stridedCopy";
  void* dst = arg_ptr(info, 0, op);
  const void* src = arg_ptr(info, 1, op);
  int64_t item = arg_i64(info, 2, op);
  std::vector<int64_t> shape = arg_i64_array(info, 3, op), ds = arg_i64_array(info, 4, op),
                       ss = arg_i64_array(info, 5, op);
  int rank = (int)shape.size();
  DALLE_CHECK(rank <= kMaxRank, op, "rank %d is over the limit of %d", rank, kMaxRank);
  DALLE_CHECK((int)ds.size() == rank && (int)ss.size() == rank, op, "shape %s needs %d strides per side",
              shape_str(shape.data(), rank).c_str(), rank);
  int64_t n = 1;
  for (int64_t s : shape) {
    DALLE_CHECK(s >= 0, op, "negative dimension in shape %s", shape_str(shape.data(), rank).c_str());
    n *= s;
  }
  DALLE_CHECK(item == 1 || item == 2 || item == 4 || item == 8, op, "item size %lld is not 1, 2, 4 or 8 bytes",
              (long long)item);
  if (n == 0) return info.Env().Undefined();
  DALLE_CHECK(dst && src, op, "null address for a non-empty copy of shape %s", shape_str(shape.data(), rank).c_str());
  if (rank == 0) {  // a scalar: one element
    shape.push_back(1);
    ds.push_back(1);
    ss.push_back(1);
  }
  rank = coalesce((int)shape.size(), shape.data(), ds.data(), ss.data());
  switch (item) {
    case 1: strided_copy((uint8_t*)dst, (const uint8_t*)src, rank, shape.data(), ds.data(), ss.data()); break;
    case 2: strided_copy((uint16_t*)dst, (const uint16_t*)src, rank, shape.data(), ds.data(), ss.data()); break;
    case 4: strided_copy((uint32_t*)dst, (const uint32_t*)src, rank, shape.data(), ds.data(), ss.data()); break;
    case 8: strided_copy((uint64_t*)dst, (const uint64_t*)src, rank, shape.data(), ds.data(), ss.data()); break;
    default: fail(op, __FILE__, __LINE__, "item size %lld is not 1, 2, 4 or 8 bytes", (long long)item);
  }
  return info.Env().Undefined();
}

// fill(dst, itemBytes, count, value, kind): kind "f32" | "i32" | "u16" (value = raw 16-bit pattern).
Napi::Value Fill(const Napi::CallbackInfo& info) {
  const char* op = "fill";
  void* dst = arg_ptr(info, 0, op);
  int64_t n = arg_i64(info, 1, op);
  double value = arg_f64(info, 2, op);
  std::string kind = arg_str(info, 3, op);
  DALLE_CHECK(n >= 0, op, "negative count %lld", (long long)n);
  if (n == 0) return info.Env().Undefined();
  DALLE_CHECK(dst != nullptr, op, "null address");
  if (kind == "f32") {
    float v = (float)value;
    float* p = (float*)dst;
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
      if (v == 0.0f && !std::signbit(v)) memset(p + b, 0, (e - b) * sizeof(float));
      else for (int64_t i = b; i < e; i++) p[i] = v;
    });
  } else if (kind == "i32") {
    int32_t v = (int32_t)value, *p = (int32_t*)dst;
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; i++) p[i] = v; });
  } else if (kind == "u16") {
    uint16_t v = (uint16_t)value, *p = (uint16_t*)dst;
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; i++) p[i] = v; });
  } else {
    fail(op, __FILE__, __LINE__, "unknown fill kind '%s' (f32, i32 or u16)", kind.c_str());
  }
  return info.Env().Undefined();
}

inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN (quiet)
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

// IEEE binary16, round to nearest even, with subnormals, overflow to Inf, NaN preserved.
inline uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return (uint16_t)(sign | 0x7e00);
  if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds to >= 65520 -> Inf
  if (ax < 0x38800000) {                                   // below the smallest normal 2^-14: subnormal or zero
    if (ax < 0x33000000) return (uint16_t)sign;            // < 2^-25 rounds to zero
    uint32_t mant = (ax & 0x7fffff) | 0x800000;
    int shift = 126 - (int)(ax >> 23);                     // 14 + (127 - exp) - 1 ... aligns to 2^-24 units
    // exact round-to-nearest-even on the bits shifted out
    uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    uint32_t val = mant >> shift;
    if (rem > half || (rem == half && (val & 1))) val++;
    return (uint16_t)(sign | val);
  }
  uint32_t exp = (ax >> 23) - 112;  // rebias 127 -> 15
  uint32_t mant = ax & 0x7fffff;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  // may carry into the exponent: still correct
  return (uint16_t)(sign | h);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    float v = (float)mant * 5.9604644775390625e-08f;  // mant * 2^-24
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000 | (mant << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

// cast(dst, dstDtype, src, srcDtype, count): dtypes "f32" | "f16" | "bf16" | "i32". i32 <- float truncates toward zero.
Napi::Value Cast(const Napi::CallbackInfo& info) {
  const char* op = "cast";
  void* dst = arg_ptr(info, 0, op);
  std::string dt = arg_str(info, 1, op);
  const void* src = arg_ptr(info, 2, op);
  std::string st = arg_str(info, 3, op);
  int64_t n = arg_i64(info, 4, op);
  DALLE_CHECK(n >= 0, op, "negative count");
  if (n == 0) return info.Env().Undefined();
  bool ok_src = st == "f32" || st == "f16" || st == "bf16" || st == "i32";
  bool ok_dst = dt == "f32" || dt == "f16" || dt == "bf16" || dt == "i32";
  DALLE_CHECK(ok_src && ok_dst, op, "unsupported cast %s -> %s", st.c_str(), dt.c_str());
  int sk = st == "f32" ? 0 : st == "f16" ? 1 : st == "bf16" ? 2 : 3;
  int dk = dt == "f32" ? 0 : dt == "f16" ? 1 : dt == "bf16" ? 2 : 3;
  if (sk == dk) {  // the same dtype: a copy
    size_t bytes = sk == 1 || sk == 2 ? 2 : 4;
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) { memcpy((char*)dst + b * bytes, (const char*)src + b * bytes, (e - b) * bytes); });
    return info.Env().Undefined();
  }
  // The dtypes are chosen once, outside the loop: each (source, destination) pair is its own loop of plain loads,
  // conversions and stores, which the compiler vectorizes (a per-element choice made the loop ~50x slower).
  auto loop = [&](auto load, auto store) {
    parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) store(i, load(i));
    });
  };
  auto to = [&](auto load) {
    switch (dk) {
      case 0: loop(load, [&](int64_t i, float v) { ((float*)dst)[i] = v; }); break;
      case 1: loop(load, [&](int64_t i, float v) { ((uint16_t*)dst)[i] = f32_to_f16(v); }); break;
      case 2: loop(load, [&](int64_t i, float v) { ((uint16_t*)dst)[i] = f32_to_bf16(v); }); break;
      default:  // truncation toward zero, saturating (NaN -> 0), so no float->int conversion is undefined
        loop(load, [&](int64_t i, float v) {
          ((int32_t*)dst)[i] = !(v == v) ? 0 : v >= 2147483647.0f ? INT32_MAX : v <= -2147483648.0f ? INT32_MIN : (int32_t)v;
        });
        break;
    }
  };
  switch (sk) {
    case 0: to([&](int64_t i) { return ((const float*)src)[i]; }); break;
    case 1: to([&](int64_t i) { return f16_to_f32(((const uint16_t*)src)[i]); }); break;
    case 2: to([&](int64_t i) { return bf16_to_f32(((const uint16_t*)src)[i]); }); break;
    default: to([&](int64_t i) { return (float)((const int32_t*)src)[i]; }); break;
  }
  return info.Env().Undefined();
}

DALLE_EXPORT("stridedCopy", StridedCopy);
DALLE_EXPORT("fill", Fill);
DALLE_EXPORT("cast", Cast);

}  // namespace
}  // namespace dalle
