// Run-time CPU feature detection: kernels pick AVX-512 / AVX2 / portable code with these, so one build runs on any
// x86-64 (and on arm64, where only the portable code exists). DALLE_ISA=portable|avx2|avx512 caps the choice (tests use it).
#pragma once

namespace dalle {

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2_fma = false;     // AVX2 + FMA + F16C
  bool avx512 = false;       // AVX-512 F, BW, VL, DQ
  bool avx512_bf16 = false;  // vdpbf16ps
};

const CpuFeatures& cpu_features();  // what the CPU (and OS) supports
Isa active_isa();                   // the best supported ISA, capped by DALLE_ISA or set_isa_cap
void set_isa_cap(Isa cap);
const char* isa_name(Isa isa);

}  // namespace dalle
