#include "cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace dalle {
namespace {

#if defined(__x86_64__)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
  if (!osxsave || !avx) return f;
  uint64_t xcr0 = xgetbv0();
  bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xE6) == 0xE6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  bool avx2 = b & (1u << 5);
  bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx2_fma = ymm_os && avx2 && fma && f16c;
  f.avx512 = f.avx2_fma && zmm_os && avx512f && avx512dq && avx512bw && avx512vl;
  unsigned a1 = 0, b1, c1, d1;
  if (f.avx512 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512_bf16 = a1 & (1u << 5);
#endif
  return f;
}

Isa parse_cap() {
  const char* env = std::getenv("DALLE_ISA");
  if (!env) return Isa::Avx512;
  if (!strcmp(env, "portable")) return Isa::Portable;
  if (!strcmp(env, "avx2")) return Isa::Avx2;
  return Isa::Avx512;
}

Isa cap = parse_cap();

}  // namespace

const CpuFeatures& cpu_features() {
  static CpuFeatures f = detect();
  return f;
}

Isa active_isa() {
  const CpuFeatures& f = cpu_features();
  Isa best = f.avx512 ? Isa::Avx512 : f.avx2_fma ? Isa::Avx2 : Isa::Portable;
  return (int)best < (int)cap ? best : cap;
}

void set_isa_cap(Isa c) { cap = c; }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace dalle
