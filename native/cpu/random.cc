// Philox4x32-10 streams filled in parallel: value i of a request depends only on (key, offset + i), so the result is
// the same for any thread count and equals the TypeScript reference (src/core/tensor/rng.ts, whose module comment
// defines the stream). Uniform values are bit-exact; normal and Gumbel values go through libm in double and are
// rounded once, like the reference (with AVX-512, Gumbel values are computed in float, within 1e-6 of it: random_avx512.cc).
#include <cmath>
#include <cstring>

#include "cpu_features.h"
#include "napi_util.h"
#include "random.h"
#include "threadpool.h"

namespace dalle {

// AVX-512 leaves (random_avx512.cc): Gumbel values of n words, computed in float (within 1e-6 of the reference); and the
// Philox blocks of 16 x groups consecutive counters, 16 counters per vector (bit-exact with philox_block).
void gumbel_from_words_avx512(const uint32_t* words, float* dst, int64_t n);
void philox_blocks_avx512(uint32_t k0, uint32_t k1, uint64_t first_counter, int64_t groups, uint32_t* out);

namespace {

inline void philox_block(uint32_t c0, uint32_t c1, uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c2 = 0, c3 = 0;
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

// Word w of the stream: lane w % 4 of the block at counter w / 4 (one word at a time; stream_words fills runs).
struct Stream {
  uint32_t k0, k1;
  uint64_t offset;
  uint64_t cached_counter = ~0ull;
  uint32_t block[4];
  uint32_t word(uint64_t i) {
    uint64_t w = offset + i, c = w >> 2;
    if (c != cached_counter) {
      philox_block((uint32_t)c, (uint32_t)(c >> 32), k0, k1, block);
      cached_counter = c;
    }
    return block[w & 3];
  }
};

// Words a run of the stream is read in (a multiple of 4: whole blocks).
constexpr int64_t kChunk = 512;

// Words offset + i0 .. offset + i0 + n - 1 of the stream into words[0 .. n), n <= kChunk. With AVX-512, 16 blocks at a
// time (the scalar rounds were most of a uniform draw's cost: 10 ms for the 4.2M values of a dVAE step's noise).
void stream_words(uint32_t k0, uint32_t k1, uint64_t offset, int64_t i0, int64_t n, uint32_t* words) {
#if defined(DALLE_X86)
  if (active_isa() == Isa::Avx512) {
    const uint64_t first = offset + (uint64_t)i0;
    const int64_t skip = (int64_t)(first & 3), blocks = (skip + n + 3) / 4, groups = (blocks + 15) / 16;
    uint32_t buf[(kChunk / 4 + 1 + 15) / 16 * 64];
    philox_blocks_avx512(k0, k1, first >> 2, groups, buf);
    memcpy(words, buf + skip, sizeof(uint32_t) * (size_t)n);
    return;
  }
#endif
  Stream s{k0, k1, offset, ~0ull, {0, 0, 0, 0}};
  for (int64_t j = 0; j < n; j++) words[j] = s.word((uint64_t)(i0 + j));
}

}  // namespace

// Gumbel values of words offset + i0 .. offset + i0 + n - 1 of the stream (random.h), on the calling thread.
void gumbel_noise(uint32_t k0, uint32_t k1, uint64_t offset, int64_t i0, int64_t n, float* dst) {
  const double two32 = 4294967296.0;
  uint32_t words[kChunk];
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = n - c0 < kChunk ? n - c0 : kChunk;
    stream_words(k0, k1, offset, i0 + c0, len, words);
#if defined(DALLE_X86)
    if (active_isa() == Isa::Avx512) {
      gumbel_from_words_avx512(words, dst + c0, len);
      continue;
    }
#endif
    for (int64_t j = 0; j < len; j++) dst[c0 + j] = (float)-std::log(-std::log(((double)words[j] + 0.5) / two32));
  }
}

namespace {

// philoxFill(dst f32, n, key0, key1, offsetLo, offsetHi, kind, a, b)
//   kind "uniform": a + (b - a) * u with u = (word >> 8) * 2^-24 (a = 0, b = 1 gives the reference exactly)
//   kind "normal":  mean a, std b, Box-Muller on word pairs (2 words per pair of values)
//   kind "gumbel":  -ln(-ln((word + 0.5) * 2^-32))
Napi::Value PhiloxFill(const Napi::CallbackInfo& info) {
  const char* op = "philoxFill";
  float* dst = arg_data<float>(info, 0, op);
  int64_t n = arg_i64(info, 1, op);
  uint32_t k0 = (uint32_t)arg_i64(info, 2, op), k1 = (uint32_t)arg_i64(info, 3, op);
  uint64_t offset = (uint64_t)(uint32_t)arg_i64(info, 4, op) | ((uint64_t)(uint32_t)arg_i64(info, 5, op) << 32);
  std::string kind = arg_str(info, 6, op);
  double a = arg_f64(info, 7, op), b = arg_f64(info, 8, op);
  DALLE_CHECK(n >= 0 && (n == 0 || dst), op, "bad destination for %lld values", (long long)n);
  const double two32 = 4294967296.0;
  if (kind == "uniform") {
    const bool exact = a == 0.0 && b == 1.0;
    parallel_for(n, 1 << 14, [&](int64_t lo, int64_t hi) {
      uint32_t words[kChunk];
      for (int64_t i0 = lo; i0 < hi; i0 += kChunk) {
        const int64_t len = hi - i0 < kChunk ? hi - i0 : kChunk;
        stream_words(k0, k1, offset, i0, len, words);
        float* out = dst + i0;
        if (exact) {
          for (int64_t j = 0; j < len; j++) out[j] = (float)(words[j] >> 8) * 5.9604644775390625e-08f;
        } else {
          for (int64_t j = 0; j < len; j++) {
            const float u = (float)(words[j] >> 8) * 5.9604644775390625e-08f;
            out[j] = (float)(a + (b - a) * (double)u);
          }
        }
      }
    });
  } else if (kind == "normal") {
    const int64_t pairs = (n + 1) / 2;
    parallel_for(pairs, 1 << 13, [&](int64_t lo, int64_t hi) {
      uint32_t words[kChunk];
      for (int64_t p0 = lo; p0 < hi; p0 += kChunk / 2) {
        const int64_t len = hi - p0 < kChunk / 2 ? hi - p0 : kChunk / 2;
        stream_words(k0, k1, offset, 2 * p0, 2 * len, words);
        for (int64_t q = 0; q < len; q++) {
          const int64_t p = p0 + q;
          double u1 = ((double)words[2 * q] + 1.0) / two32, u2 = (double)words[2 * q + 1] / two32;
          double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
          dst[2 * p] = (float)(a + b * radius * std::cos(angle));
          if (2 * p + 1 < n) dst[2 * p + 1] = (float)(a + b * radius * std::sin(angle));
        }
      }
    });
  } else if (kind == "gumbel") {
    parallel_for(n, 1 << 14, [&](int64_t lo, int64_t hi) { gumbel_noise(k0, k1, offset, lo, hi - lo, dst + lo); });
  } else {
    fail(op, __FILE__, __LINE__, "unknown distribution '%s' (uniform, normal, gumbel)", kind.c_str());
  }
  return info.Env().Undefined();
}

DALLE_EXPORT("philoxFill", PhiloxFill);

}  // namespace
}  // namespace dalle
