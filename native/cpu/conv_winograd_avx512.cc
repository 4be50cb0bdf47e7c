// Winograd F(2x2, 3x3) for the 3x3 convolution's forward and dx (AVX-512 leaf; conv.cc packs the weights, pads the
// images and splits the work). Each 2x2 output tile is computed from a 4x4 input patch d as
//   Y = A^T [ sum_c (G g_c G^T) .* (B^T d_c B) ] A
// with 16 multiplies per tile and channel pair instead of the direct form's 36 (2.25x fewer FLOPs; the transforms
// are additions, amortised over the other side's channels).
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// Lanes hold 16 tiles (a "strip"): for W a multiple of 32, 16 horizontally adjacent tiles of one tile row (32
// columns); for W = 16, the 8 tiles of two tile rows (lanes 0-7 the upper, 8-15 the lower). Either way each input
// row of a strip is two 16-float loads ("lo" and "hi", 16 floats or 2 padded rows apart), and each output row two
// stores, so one code path serves both.
// Per block of up to kWinoStrips strips: the input transform of every channel into V (16 x C x strips vectors), then
// per 8 output channels: 16 GEMMs (one per transform element xi) into M, and the output transform into y. Each output
// element is a fixed sequence of operations on its tile (the channel sum runs in order), whatever the threads.
#include <immintrin.h>

#include <cstdint>

#include "conv_kernels.h"

namespace dalle {
namespace {

typedef __m512 V;

inline V perm2(V a, __m512i idx, V b) { return _mm512_permutex2var_ps(a, idx, b); }

// (Made inside the functions: a namespace-scope vector constant would run AVX-512 code when the addon loads.)
inline __m512i even_lanes() { return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30); }

// The geometry of strip s of an image: where its input rows and output rows start, and the distance of "hi".
struct StripAt {
  int64_t in, out, in_hi, out_hi;
};

inline StripAt strip_at(int64_t s, int64_t H, int64_t W) {
  const int64_t Wp = W + 2;
  (void)H;
  if (W == 16) return {4 * s * Wp, 4 * s * W, 2 * Wp, 2 * W};  // tile rows 2s and 2s + 1
  const int64_t spr = W / 32, ty = s / spr, sx = s % spr;       // strips per tile row
  return {2 * ty * Wp + 32 * sx, 2 * ty * W + 32 * sx, 16, 16};
}

// V[(xi * C + c) * NS + j] (vectors) = B^T d B of channel c of strip j, for every c.
void input_transform(const WinogradJob* jb, int NS) {
  const __m512i even = even_lanes(), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const int64_t C = jb->C, Wp = jb->W + 2, HpWp = (jb->H + 2) * Wp;
  for (int j = 0; j < NS; j++) {
    const StripAt at = strip_at(jb->s0 + j, jb->H, jb->W);
    for (int64_t c = 0; c < C; c++) {
      const float* p = jb->xp + c * HpWp + at.in;
      V t[4][4];  // B^T d: t[i][col], cols 2t + 0..3 of the strip's tiles
      V d[4][4];
      for (int i = 0; i < 4; i++) {
        const float* r = p + i * Wp;
        const V lo = _mm512_loadu_ps(r), hi = _mm512_loadu_ps(r + at.in_hi);
        const V lo2 = _mm512_loadu_ps(r + 2), hi2 = _mm512_loadu_ps(r + 2 + at.in_hi);
        d[i][0] = perm2(lo, even, hi);
        d[i][1] = perm2(lo, odd, hi);
        d[i][2] = perm2(lo2, even, hi2);
        d[i][3] = perm2(lo2, odd, hi2);
      }
      for (int q = 0; q < 4; q++) {
        t[0][q] = _mm512_sub_ps(d[0][q], d[2][q]);
        t[1][q] = _mm512_add_ps(d[1][q], d[2][q]);
        t[2][q] = _mm512_sub_ps(d[2][q], d[1][q]);
        t[3][q] = _mm512_sub_ps(d[1][q], d[3][q]);
      }
      float* v = jb->V + (c * NS + j) * 16;
      const int64_t xi_stride = C * NS * 16;
      for (int i = 0; i < 4; i++) {
        _mm512_storeu_ps(v + (4 * i + 0) * xi_stride, _mm512_sub_ps(t[i][0], t[i][2]));
        _mm512_storeu_ps(v + (4 * i + 1) * xi_stride, _mm512_add_ps(t[i][1], t[i][2]));
        _mm512_storeu_ps(v + (4 * i + 2) * xi_stride, _mm512_sub_ps(t[i][2], t[i][1]));
        _mm512_storeu_ps(v + (4 * i + 3) * xi_stride, _mm512_sub_ps(t[i][1], t[i][3]));
      }
    }
  }
}

// M[(xi * 8 + m) * NS + j] = sum_c U[cb][xi][c][m] V[xi][c][j], for the 8 output channels of block cb.
template <int NS>
void gemms(const WinogradJob* jb, int64_t cb) {
  const int64_t C = jb->C;
  for (int xi = 0; xi < 16; xi++) {
    const float* u = jb->U + (cb * 16 + xi) * C * 8;
    const float* v = jb->V + xi * C * NS * 16;
    V acc[8][NS];
    for (int m = 0; m < 8; m++)
      for (int j = 0; j < NS; j++) acc[m][j] = _mm512_setzero_ps();
    for (int64_t c = 0; c < C; c++) {
      V vv[NS];
      for (int j = 0; j < NS; j++) vv[j] = _mm512_loadu_ps(v + (c * NS + j) * 16);
      for (int m = 0; m < 8; m++) {
        const V uw = _mm512_set1_ps(u[c * 8 + m]);
        for (int j = 0; j < NS; j++) acc[m][j] = _mm512_fmadd_ps(uw, vv[j], acc[m][j]);
      }
    }
    float* out = jb->M + xi * 8 * NS * 16;
    for (int m = 0; m < 8; m++)
      for (int j = 0; j < NS; j++) _mm512_storeu_ps(out + (m * NS + j) * 16, acc[m][j]);
  }
}

// y (rows of the strips' tiles) = A^T M A + bias, gated by `gate` when set; channels cb * 8 .. of block cb.
void output_transform(const WinogradJob* jb, int64_t cb, int NS) {
  const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ihi = _mm512_add_epi32(ilo, _mm512_set1_epi32(8));
  const int64_t HW = jb->H * jb->W, W = jb->W;
  const int64_t rows = jb->Co - cb * 8 < 8 ? jb->Co - cb * 8 : 8;
  for (int64_t m = 0; m < rows; m++) {
    const int64_t co = cb * 8 + m;
    const V b = jb->bias ? _mm512_set1_ps(jb->bias[co]) : _mm512_setzero_ps();
    for (int j = 0; j < NS; j++) {
      const StripAt at = strip_at(jb->s0 + j, jb->H, W);
      V x[16];
      for (int xi = 0; xi < 16; xi++) x[xi] = _mm512_loadu_ps(jb->M + ((xi * 8 + m) * NS + j) * 16);
      V r[2][4];
      for (int q = 0; q < 4; q++) {
        r[0][q] = _mm512_add_ps(_mm512_add_ps(x[q], x[4 + q]), x[8 + q]);
        r[1][q] = _mm512_sub_ps(_mm512_sub_ps(x[4 + q], x[8 + q]), x[12 + q]);
      }
      for (int i = 0; i < 2; i++) {
        const V ev = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r[i][0], r[i][1]), r[i][2]), b);
        const V od = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r[i][1], r[i][2]), r[i][3]), b);
        V lo = perm2(ev, ilo, od), hi = perm2(ev, ihi, od);
        float* q = jb->y + co * HW + at.out + i * W;
        if (jb->gate) {
          const float* g = jb->gate + co * HW + at.out + i * W;
          const V zero = _mm512_setzero_ps();
          lo = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_loadu_ps(g), zero, _CMP_GT_OQ), lo);
          hi = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_loadu_ps(g + at.out_hi), zero, _CMP_GT_OQ), hi);
        }
        _mm512_storeu_ps(q, lo);
        _mm512_storeu_ps(q + at.out_hi, hi);
      }
    }
  }
}

}  // namespace

void conv3x3_winograd_avx512(const WinogradJob* jb) {
  const int NS = (int)(jb->s1 - jb->s0);
  if (NS <= 0) return;
  input_transform(jb, NS);
  for (int64_t cb = 0; cb * 8 < jb->Co; cb++) {
    switch (NS) {
      case 1: gemms<1>(jb, cb); break;
      case 2: gemms<2>(jb, cb); break;
      default: gemms<3>(jb, cb); break;
    }
    output_transform(jb, cb, NS);
  }
}

}  // namespace dalle
