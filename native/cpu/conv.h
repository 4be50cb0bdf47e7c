// Image ops of the dVAE, NCHW float32, contiguous.
// conv2d: stride 1, "same" zero padding, odd square kernel k (1x1 runs as a GEMM). Weights (Cout, Cin, k, k) as in
// OpenAI's released dVAE; bias (Cout) may be null. Outputs must not overlap inputs. Results are bitwise identical for
// any thread count (each output element is summed by one thread in an order fixed by the shapes).
#pragma once
#include <cstdint>

namespace dalle {

// x (B, Cin, H, W), w (Cout, Cin, k, k), bias (Cout) or null -> y (B, Cout, H, W). relu_in: the convolution of
// ReLU(x), the ReLU fused into the input (applied while padding; no ReLU tensor).
void conv2d_forward(const float* x, const float* w, const float* bias, float* y, int64_t B, int64_t Cin,
                    int64_t Cout, int64_t H, int64_t W, int64_t k, bool relu_in = false);

// Gradients; each output pointer may be null (not needed). dx, dw, db are overwritten (not accumulated):
// the autograd layer accumulates. relu_in: the gradients of the convolution of ReLU(x); dx is with respect to x (the
// input before the ReLU: zero where x <= 0, gated as it is stored), so x is needed for dx too.
void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db, int64_t B,
                     int64_t Cin, int64_t Cout, int64_t H, int64_t W, int64_t k, bool relu_in = false);

// 2x2 max-pool, stride 2 (H, W even): x (B, C, H, W) -> y (B, C, H/2, W/2); argmax (B, C, H/2, W/2) int32 holds the
// winning position 0..3 within each window (row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; first
// max on ties; a NaN wins, as in PyTorch) for the backward pass. Backward: H, W are x's; dx is overwritten (zero
// except at the winners).
void maxpool2x2_forward(const float* x, float* y, int32_t* argmax, int64_t B, int64_t C, int64_t H, int64_t W);
void maxpool2x2_backward(const float* dy, const int32_t* argmax, float* dx, int64_t B, int64_t C, int64_t H, int64_t W);

// Nearest-neighbour 2x upsampling: x (B, C, H, W) -> y (B, C, 2H, 2W); backward sums each 2x2 block of dy
// (B, C, 2H, 2W) into dx (B, C, H, W) (H, W are x's; dx overwritten).
void upsample2x_forward(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W);
void upsample2x_backward(const float* dy, float* dx, int64_t B, int64_t C, int64_t H, int64_t W);

}  // namespace dalle
