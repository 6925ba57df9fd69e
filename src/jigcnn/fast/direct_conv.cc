// Direct few-channel convolution kernels for XLA's CPU runtime (XLA FFI).
//
// Built on first use by jigcnn.fast.native (c++ -O3 -march=native) and called through
// jax.ffi.ffi_call. Valid, stride-1 convolution of x (N, H, W, Cin) with w (KH, KW, Cin, C):
//
//   forward:          y[n, i, j, o] = b[o] + sum_{a, c, k} x[n, i + a, j + c, k] * w[a, c, k, o]
//   weight gradient:  dw[a, c, k, o] = sum_{n, i, j} x[n, i + a, j + c, k] * d[n, i, j, o],
//                     db[o] = sum_{n, i, j} d[n, i, j, o]
//   input gradient:   dx[n, y, z, k] = sum_{a, c, o} d[n, y - a, z - c, o] * w[a, c, k, o] (deltas
//                     outside the output are zero), vectorised over 16 input columns
//
// The output maps are processed 16 at a time (one 512-bit vector, or two 256-bit ones):
// the forward keeps P output positions' accumulators in registers and broadcasts each input
// value against a vector of kernel taps; the weight gradient keeps all KH*KW tap accumulators
// of one input channel in registers and streams the deltas once per input channel. With fewer
// than 16 maps both are vectorised over 16 output columns instead, so that no lane runs empty
// (LeNet-5's first conv has 6 maps: 10 of 16 lanes were idle). A single input channel has its
// own instantiations (CIN = 1: unit strides). Samples are split across XLA's intra-op thread
// pool; each worker's partial weight gradient is summed at the end in a fixed order, so results
// do not depend on the thread schedule.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;
constexpr int kMaxTaps = 160;  // jigcnn.fast.conv.MAX_TAPS: the weight gradient's kh * kw at most
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

// {s, ..., s}; written out so that the compiler may fold the load into the multiply-add
// The lanes' sum, added in a fixed order.
inline float hsum(vf v) {
  float lanes[kLanes];
  store(lanes, v);
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

inline vf broadcast(float s) { return vf{s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}; }

// Runs body(task) for task in [0, tasks) on the caller and the pool's threads; returns when all are done.
// Workers claim tasks from a shared counter, so the caller finishes the work alone if no pool thread
// is free; late workers find nothing left and only touch the shared state they co-own.
template <typename Body>
void parallel_for(ffi::ThreadPool& pool, int64_t tasks, Body body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  auto shared_body = std::make_shared<Body>(std::move(body));
  auto work = [state, shared_body, tasks]() {
    for (int64_t t = state->next.fetch_add(1); t < tasks; t = state->next.fetch_add(1)) {
      (*shared_body)(t);
      if (state->done.fetch_add(1) + 1 == tasks) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), tasks - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == tasks; });
}

// Kernel taps (KH*KW) x C laid out as (KH*KW, groups, 16) with the maps past C zero.
std::vector<float> padded_taps(const float* w, int64_t taps, int64_t c, int64_t groups) {
  std::vector<float> out(taps * groups * kLanes, 0.0f);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t o = 0; o < c; ++o) out[(t * groups + o / kLanes) * kLanes + o % kLanes] = w[t * c + o];
  return out;
}

// P output positions of one row, one group of 16 maps:
// acc[p] = b + sum_{a, c, i} x[a][j + p + c][i] * w[a, c, i]. CIN = 1 (one input channel) or 0 (cin of them).
template <int P, int CIN>
inline void forward_tile(const float* x, int64_t rowstride, int64_t kh, int64_t kw, int64_t cin_any,
                         const float* taps, int64_t groups, vf bias, vf* acc) {
  const int64_t cin = CIN ? CIN : cin_any;
  for (int p = 0; p < P; ++p) acc[p] = bias;
  for (int64_t a = 0; a < kh; ++a) {
    const float* row = x + a * rowstride;
    for (int64_t c = 0; c < kw; ++c) {
      for (int64_t ci = 0; ci < cin; ++ci) {
        vf tap = load(taps + (((a * kw + c) * cin + ci) * groups) * kLanes);
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) acc[p] += broadcast(row[(p + c) * cin + ci]) * tap;
      }
    }
  }
}

inline void store_tile(float* y, int64_t c, int64_t g, int count, const vf* acc) {
  int64_t lanes = std::min<int64_t>(kLanes, c - g * kLanes);
  for (int p = 0; p < count; ++p) {
    float* dst = y + p * c + g * kLanes;
    if (lanes == kLanes) {
      store(dst, acc[p]);
    } else {
      float tmp[kLanes];
      store(tmp, acc[p]);
      std::memcpy(dst, tmp, lanes * sizeof(float));
    }
  }
}

template <int CIN>
void forward_sample(const float* x, int64_t h, int64_t wd, int64_t cin, int64_t kh, int64_t kw, int64_t c,
                    const float* taps, const float* bias, float* y) {
  constexpr int P = 8;
  const int64_t ho = h - kh + 1, wo = wd - kw + 1, groups = (c + kLanes - 1) / kLanes;
  vf acc[P];
  for (int64_t g = 0; g < groups; ++g) {
    const float* tg = taps + g * kLanes;
    vf b = load(bias + g * kLanes);
    for (int64_t i = 0; i < ho; ++i) {
      const float* xr = x + i * wd * cin;
      float* yr = y + i * wo * c;
      int64_t j = 0;
      for (; j + P <= wo; j += P) {
        forward_tile<P, CIN>(xr + j * cin, wd * cin, kh, kw, cin, tg, groups, b, acc);
        store_tile(yr + j * c, c, g, P, acc);
      }
      for (; j < wo; ++j) {  // the row's last (wo mod P) positions, one at a time
        forward_tile<1, CIN>(xr + j * cin, wd * cin, kh, kw, cin, tg, groups, b, acc);
        store_tile(yr + j * c, c, g, 1, acc);
      }
    }
  }
}

// Partial weight gradient of samples [n0, n1), input channel ci, for one group of 16 maps. With KH
// and KW known at compile time (5x5, 3x3) the tap accumulators stay in registers; KH = KW = 0 takes
// the runtime kh x kw (at most kMaxTaps taps) with the accumulators in memory.
template <int KH, int KW, int CIN>
void weight_gradient_range(const float* x, const float* d, int64_t n0, int64_t n1, int64_t h, int64_t wd,
                           int64_t cin_any, int64_t ci, int64_t kh_any, int64_t kw_any, int64_t c, int64_t g,
                           float* dw, float* db) {
  const int64_t kh = KH ? KH : kh_any, kw = KW ? KW : kw_any, cin = CIN ? CIN : cin_any;
  const int64_t ho = h - kh + 1, wo = wd - kw + 1;
  const int64_t lanes = std::min<int64_t>(kLanes, c - g * kLanes);
  vf acc[KH ? KH * KW : kMaxTaps];
  vf accb{};
#pragma GCC unroll 64
  for (int64_t t = 0; t < kh * kw; ++t) acc[t] = vf{};
  float tmp[kLanes] = {0};
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t i = 0; i < ho; ++i) {
      const float* xr = x + (n * h + i) * wd * cin + ci;
      const float* dr = d + ((n * ho + i) * wo) * c + g * kLanes;
      for (int64_t j = 0; j < wo; ++j) {
        vf dv;
        if (lanes == kLanes) {
          dv = load(dr + j * c);
        } else {
          std::memcpy(tmp, dr + j * c, lanes * sizeof(float));
          dv = load(tmp);
        }
        accb += dv;
#pragma GCC unroll 64
        for (int64_t a = 0; a < kh; ++a)
#pragma GCC unroll 16
          for (int64_t cc = 0; cc < kw; ++cc) acc[a * kw + cc] += broadcast(xr[(a * wd + j + cc) * cin]) * dv;
      }
    }
  }
#pragma GCC unroll 64
  for (int64_t t = 0; t < kh * kw; ++t) store(dw + t * kLanes, acc[t]);
  store(db, accb);
}

template <int CIN>
void weight_gradient_sized(const float* x, const float* d, int64_t n0, int64_t n1, int64_t h, int64_t wd,
                           int64_t cin, int64_t ci, int64_t kh, int64_t kw, int64_t c, int64_t g, float* dw,
                           float* db) {
  if (kh == 5 && kw == 5) return weight_gradient_range<5, 5, CIN>(x, d, n0, n1, h, wd, cin, ci, kh, kw, c, g, dw, db);
  if (kh == 3 && kw == 3) return weight_gradient_range<3, 3, CIN>(x, d, n0, n1, h, wd, cin, ci, kh, kw, c, g, dw, db);
  weight_gradient_range<0, 0, CIN>(x, d, n0, n1, h, wd, cin, ci, kh, kw, c, g, dw, db);
}

void weight_gradient_part(const float* x, const float* d, int64_t n0, int64_t n1, int64_t h, int64_t wd,
                          int64_t cin, int64_t ci, int64_t kh, int64_t kw, int64_t c, int64_t g, float* dw,
                          float* db) {
  if (cin == 1) return weight_gradient_sized<1>(x, d, n0, n1, h, wd, cin, ci, kh, kw, c, g, dw, db);
  weight_gradient_sized<0>(x, d, n0, n1, h, wd, cin, ci, kh, kw, c, g, dw, db);
}

// Fewer than 16 maps: the forward pass and the weight gradient are vectorised over 16 output
// columns instead (the map vectors would run part empty). Each sample's input is first copied
// channel by channel into rows of `few_maps_stride` floats with zeros past the row's end, so a
// vector load at any column of a row stays inside it and reads zeros beyond the input.
inline int64_t few_maps_stride(int64_t wo, int64_t kw) {
  return (wo + kLanes - 1) / kLanes * kLanes + kw - 1;
}

// xr[(ci * h + r) * stride + k] = x[(r * wd + k) * cin + ci] of one sample, zeros for k >= wd.
void few_maps_rows(const float* x, int64_t h, int64_t wd, int64_t cin, int64_t stride, std::vector<float>& xr) {
  xr.resize(cin * h * stride);
  for (int64_t ci = 0; ci < cin; ++ci)
    for (int64_t r = 0; r < h; ++r) {
      float* dst = xr.data() + (ci * h + r) * stride;
      const float* src = x + r * wd * cin + ci;
      if (cin == 1) {
        std::memcpy(dst, src, wd * sizeof(float));
      } else {
        for (int64_t k = 0; k < wd; ++k) dst[k] = src[k * cin];
      }
      std::fill(dst + wd, dst + stride, 0.0f);
    }
}

// Forward pass of one sample for the CB maps from o0: for each block of 16 output columns, one
// accumulator per map in registers, each input vector loaded once for CB multiply-adds; the block
// is written back transposed to (column, map).
template <int CB>
void forward_few_maps_block(const float* xr, int64_t stride, int64_t h, int64_t ho, int64_t wo, int64_t cin,
                            int64_t kh, int64_t kw, const float* w, int64_t c, int64_t o0, const float* b,
                            float* y) {
  const int64_t nv = (wo + kLanes - 1) / kLanes;
  float out[CB][kLanes];
  for (int64_t i = 0; i < ho; ++i) {
    for (int64_t v = 0; v < nv; ++v) {
      vf acc[CB];
      for (int k = 0; k < CB; ++k) acc[k] = broadcast(b[o0 + k]);
      for (int64_t a = 0; a < kh; ++a)
        for (int64_t cc = 0; cc < kw; ++cc)
          for (int64_t ci = 0; ci < cin; ++ci) {
            const vf xv = load(xr + (ci * h + i + a) * stride + v * kLanes + cc);
            const float* taps = w + ((a * kw + cc) * cin + ci) * c + o0;
#pragma GCC unroll 8
            for (int k = 0; k < CB; ++k) acc[k] += xv * broadcast(taps[k]);
          }
      for (int k = 0; k < CB; ++k) store(out[k], acc[k]);
      const int64_t cols = std::min<int64_t>(kLanes, wo - v * kLanes);
      float* dst = y + (i * wo + v * kLanes) * c + o0;
      for (int64_t l = 0; l < cols; ++l)
        for (int k = 0; k < CB; ++k) dst[l * c + k] = out[k][l];
    }
  }
}

void forward_few_maps_sample(const float* x, int64_t h, int64_t wd, int64_t cin, int64_t kh, int64_t kw, int64_t c,
                             const float* w, const float* b, float* y) {
  const int64_t ho = h - kh + 1, wo = wd - kw + 1, stride = few_maps_stride(wo, kw);
  thread_local std::vector<float> xr;
  few_maps_rows(x, h, wd, cin, stride, xr);
  for (int64_t o0 = 0; o0 < c; o0 += 8) {
    const float* t = xr.data();
    switch (std::min<int64_t>(8, c - o0)) {
      case 1: forward_few_maps_block<1>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
      case 2: forward_few_maps_block<2>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
      case 3: forward_few_maps_block<3>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
      case 4: forward_few_maps_block<4>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
      case 5: forward_few_maps_block<5>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
      case 6: forward_few_maps_block<6>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
      case 7: forward_few_maps_block<7>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
      default: forward_few_maps_block<8>(t, stride, h, ho, wo, cin, kh, kw, w, c, o0, b, y); break;
    }
  }
}

// Weight gradient of one sample added to acc ((KH*KW*CIN*C) vectors, tap-major) and accb (C vectors).
// Each map's deltas are transposed to (row, column block) with zeros past the row's end; then per
// input channel and map the KH*KW tap accumulators stay in registers (KH, KW known at compile time;
// 0: the runtime kh x kw, accumulators in memory) while the rows stream by.
template <int KH, int KW>
void weight_gradient_few_maps_sample(const float* x, const float* d, int64_t h, int64_t wd, int64_t cin,
                                     int64_t kh_any, int64_t kw_any, int64_t c, vf* acc, vf* accb) {
  const int64_t kh = KH ? KH : kh_any, kw = KW ? KW : kw_any;
  const int64_t ho = h - kh + 1, wo = wd - kw + 1, nv = (wo + kLanes - 1) / kLanes;
  const int64_t stride = few_maps_stride(wo, kw);
  thread_local std::vector<float> xr;
  thread_local std::vector<vf> dt;
  few_maps_rows(x, h, wd, cin, stride, xr);
  dt.resize(c * ho * nv);
  for (int64_t o = 0; o < c; ++o)
    for (int64_t i = 0; i < ho; ++i) {
      float* dst = reinterpret_cast<float*>(dt.data() + (o * ho + i) * nv);
      const float* src = d + i * wo * c + o;
      for (int64_t j = 0; j < wo; ++j) dst[j] = src[j * c];
      for (int64_t j = wo; j < nv * kLanes; ++j) dst[j] = 0.0f;
    }
  for (int64_t o = 0; o < c; ++o)
    for (int64_t t = 0; t < ho * nv; ++t) accb[o] += dt[o * ho * nv + t];
  for (int64_t ci = 0; ci < cin; ++ci) {
    for (int64_t o = 0; o < c; ++o) {
      vf reg[KH ? KH * KW : 1];
      vf* at = KH ? reg : acc;  // runtime sizes: accumulate in place, (tap, ci, o) strided
      const int64_t at_stride = KH ? 1 : cin * c;
      const int64_t at_base = KH ? 0 : ci * c + o;
      if (KH) {
#pragma GCC unroll 64
        for (int64_t t = 0; t < kh * kw; ++t) reg[t] = acc[(t * cin + ci) * c + o];
      }
      const vf* dv_o = dt.data() + o * ho * nv;
      // input row r meets the deltas of output rows r - a: its kw shifted vectors are loaded once
      // for all the taps they meet
      for (int64_t r = 0; r < h; ++r) {
        const float* row = xr.data() + (ci * h + r) * stride;
        for (int64_t v = 0; v < nv; ++v) {
          vf xv[KW ? KW : 1];
          if (KW) {
#pragma GCC unroll 16
            for (int64_t cc = 0; cc < kw; ++cc) xv[cc] = load(row + v * kLanes + cc);
          }
#pragma GCC unroll 16
          for (int64_t a = 0; a < kh; ++a) {
            const int64_t i = r - a;
            if (i < 0 || i >= ho) continue;
            const vf dv = dv_o[i * nv + v];
#pragma GCC unroll 16
            for (int64_t cc = 0; cc < kw; ++cc)
              at[at_base + (a * kw + cc) * at_stride] += (KW ? xv[cc] : load(row + v * kLanes + cc)) * dv;
          }
        }
      }
      if (KH) {
#pragma GCC unroll 64
        for (int64_t t = 0; t < kh * kw; ++t) acc[(t * cin + ci) * c + o] = reg[t];
      }
    }
  }
}

// Partial sums of samples [n0, n1) with fewer than 16 maps: dw (KH*KW*CIN*C) then db (C).
void weight_gradient_few_maps(const float* x, const float* d, int64_t n0, int64_t n1, int64_t h, int64_t wd,
                              int64_t cin, int64_t kh, int64_t kw, int64_t c, float* out) {
  const int64_t ho = h - kh + 1, wo = wd - kw + 1;
  std::vector<vf> acc(kh * kw * cin * c, vf{}), accb(c, vf{});
  for (int64_t n = n0; n < n1; ++n) {
    const float* xs = x + n * h * wd * cin;
    const float* ds = d + n * ho * wo * c;
    if (kh == 5 && kw == 5) {
      weight_gradient_few_maps_sample<5, 5>(xs, ds, h, wd, cin, kh, kw, c, acc.data(), accb.data());
    } else if (kh == 3 && kw == 3) {
      weight_gradient_few_maps_sample<3, 3>(xs, ds, h, wd, cin, kh, kw, c, acc.data(), accb.data());
    } else {
      weight_gradient_few_maps_sample<0, 0>(xs, ds, h, wd, cin, kh, kw, c, acc.data(), accb.data());
    }
  }
  for (int64_t t = 0; t < kh * kw * cin * c; ++t) out[t] = hsum(acc[t]);
  for (int64_t o = 0; o < c; ++o) out[kh * kw * cin * c + o] = hsum(accb[o]);
}

// Input gradient of one sample for the KB input channels from k0: dx[y, x, k] = sum_{a, c, o}
// d[y - a, x - c, o] * w[a, c, k, o], vectorised over 16 input columns, KB register accumulators
// (one per channel), so each shifted delta vector is loaded once for KB multiply-adds.
template <int KB>
void input_gradient_block(const float* dt, int64_t stride, const float* w, int64_t ho, int64_t wo, int64_t c,
                          int64_t kh, int64_t kw, int64_t cin, int64_t k0, float* dx) {
  const int64_t h = ho + kh - 1, wd = wo + kw - 1;
  const int64_t nv = (wd + kLanes - 1) / kLanes;
  float out[kLanes];
  for (int64_t y = 0; y < h; ++y) {
    const int64_t a0 = std::max<int64_t>(0, y - ho + 1), a1 = std::min<int64_t>(kh, y + 1);
    for (int64_t v = 0; v < nv; ++v) {
      vf acc[KB];
      for (int k = 0; k < KB; ++k) acc[k] = vf{};
      for (int64_t a = a0; a < a1; ++a) {
        const float* rows = dt + (y - a) * c * stride + v * kLanes + kw - 1;
        for (int64_t cc = 0; cc < kw; ++cc) {
          const float* taps = w + ((a * kw + cc) * cin + k0) * c;
          for (int64_t o = 0; o < c; ++o) {
            const vf dv = load(rows + o * stride - cc);
#pragma GCC unroll 8
            for (int k = 0; k < KB; ++k) acc[k] += dv * broadcast(taps[k * c + o]);
          }
        }
      }
      const int64_t cols = std::min<int64_t>(kLanes, wd - v * kLanes);
      for (int k = 0; k < KB; ++k) {
        store(out, acc[k]);
        for (int64_t l = 0; l < cols; ++l) dx[(y * wd + v * kLanes + l) * cin + k0 + k] = out[l];
      }
    }
  }
}

// Input gradient of one sample. The deltas are first laid out as (row, map, column) with kw - 1
// zeros before each row and zeros after it, so every shifted vector load reads zeros outside it.
void input_gradient_sample(const float* d, const float* w, int64_t ho, int64_t wo, int64_t c, int64_t kh,
                           int64_t kw, int64_t cin, float* dx) {
  const int64_t wd = wo + kw - 1;
  const int64_t nv = (wd + kLanes - 1) / kLanes;
  const int64_t stride = nv * kLanes + kw - 1;  // one map's padded row
  std::vector<float> dt(ho * c * stride, 0.0f);
  for (int64_t i = 0; i < ho; ++i)
    for (int64_t j = 0; j < wo; ++j)
      for (int64_t o = 0; o < c; ++o) dt[(i * c + o) * stride + kw - 1 + j] = d[(i * wo + j) * c + o];
  for (int64_t k0 = 0; k0 < cin; k0 += 8) {
    const float* t = dt.data();
    switch (std::min<int64_t>(8, cin - k0)) {
      case 1: input_gradient_block<1>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
      case 2: input_gradient_block<2>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
      case 3: input_gradient_block<3>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
      case 4: input_gradient_block<4>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
      case 5: input_gradient_block<5>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
      case 6: input_gradient_block<6>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
      case 7: input_gradient_block<7>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
      default: input_gradient_block<8>(t, stride, w, ho, wo, c, kh, kw, cin, k0, dx); break;
    }
  }
}

ffi::Error check_input(ffi::Buffer<ffi::F32>& x, int64_t kh, int64_t kw) {
  auto xd = x.dimensions();
  if (xd.size() != 4) return ffi::Error::InvalidArgument("x must be (N, H, W, Cin)");
  if (xd[1] < kh || xd[2] < kw) return ffi::Error::InvalidArgument("kernel larger than the input");
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> y) {
  auto wdims = w.dimensions();
  if (wdims.size() != 4) return ffi::Error::InvalidArgument("w must be (KH, KW, Cin, C)");
  const int64_t kh = wdims[0], kw = wdims[1], cin = wdims[2], c = wdims[3];
  if (auto err = check_input(x, kh, kw); err.failure()) return err;
  auto xd = x.dimensions();
  if (xd[3] != cin) return ffi::Error::InvalidArgument("w's input channels differ from x's");
  const int64_t n = xd[0], h = xd[1], wd = xd[2], ho = h - kh + 1, wo = wd - kw + 1;
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  if (c < kLanes) {
    const float* wp = w.typed_data();
    const float* bp = b.typed_data();
    parallel_for(pool, n, [=](int64_t s) {
      forward_few_maps_sample(xp + s * h * wd * cin, h, wd, cin, kh, kw, c, wp, bp, yp + s * ho * wo * c);
    });
    return ffi::Error::Success();
  }
  const int64_t groups = (c + kLanes - 1) / kLanes;
  std::vector<float> taps = padded_taps(w.typed_data(), kh * kw * cin, c, groups);
  std::vector<float> bias(groups * kLanes, 0.0f);
  std::memcpy(bias.data(), b.typed_data(), c * sizeof(float));
  parallel_for(pool, n, [=, &taps, &bias](int64_t s) {
    const float* xs = xp + s * h * wd * cin;
    float* ys = yp + s * ho * wo * c;
    if (cin == 1) {
      forward_sample<1>(xs, h, wd, cin, kh, kw, c, taps.data(), bias.data(), ys);
    } else {
      forward_sample<0>(xs, h, wd, cin, kh, kw, c, taps.data(), bias.data(), ys);
    }
  });
  return ffi::Error::Success();
}

ffi::Error WeightGradientImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> d,
                              ffi::ResultBuffer<ffi::F32> dw, ffi::ResultBuffer<ffi::F32> db) {
  auto dd = d.dimensions();
  auto xd = x.dimensions();
  if (dd.size() != 4 || xd.size() != 4 || dd[0] != xd[0])
    return ffi::Error::InvalidArgument("x must be (N, H, W, Cin) and d (N, Ho, Wo, C)");
  const int64_t n = xd[0], h = xd[1], wd = xd[2], cin = xd[3], ho = dd[1], wo = dd[2], c = dd[3];
  const int64_t kh = h - ho + 1, kw = wd - wo + 1;
  if (auto err = check_input(x, kh, kw); err.failure()) return err;
  if (kh * kw > kMaxTaps) return ffi::Error::InvalidArgument("more than 160 kernel taps");
  // fixed chunks of samples (not one per thread), each with its own partial sums, added in order
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(16, n));
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t taps = kh * kw * cin;
  const float* xp = x.typed_data();
  const float* dp = d.typed_data();
  float* dwp = dw->typed_data();
  float* dbp = db->typed_data();
  if (c < kLanes) {
    const int64_t part = (taps + 1) * c;
    std::vector<float> partial(chunks * part);
    float* pp = partial.data();
    parallel_for(pool, chunks, [=](int64_t k) {
      weight_gradient_few_maps(xp, dp, k * chunk, std::min(n, (k + 1) * chunk), h, wd, cin, kh, kw, c,
                               pp + k * part);
    });
    std::fill(dwp, dwp + taps * c, 0.0f);
    std::fill(dbp, dbp + c, 0.0f);
    for (int64_t k = 0; k < chunks; ++k) {
      for (int64_t t = 0; t < taps * c; ++t) dwp[t] += pp[k * part + t];
      for (int64_t o = 0; o < c; ++o) dbp[o] += pp[k * part + taps * c + o];
    }
    return ffi::Error::Success();
  }
  const int64_t groups = (c + kLanes - 1) / kLanes;
  const int64_t part = (kh * kw + 1) * kLanes;  // one input channel's taps and the bias, 16 maps
  const int64_t per_chunk = groups * cin;
  std::vector<float> partial(chunks * per_chunk * part);
  float* pp = partial.data();
  parallel_for(pool, chunks * per_chunk, [=](int64_t task) {
    const int64_t k = task / per_chunk, g = (task % per_chunk) / cin, ci = task % cin;
    float* out = pp + task * part;
    weight_gradient_part(xp, dp, k * chunk, std::min(n, (k + 1) * chunk), h, wd, cin, ci, kh, kw, c, g, out,
                         out + kh * kw * kLanes);
  });
  std::fill(dwp, dwp + taps * c, 0.0f);
  std::fill(dbp, dbp + c, 0.0f);
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t lanes = std::min<int64_t>(kLanes, c - g * kLanes);
      for (int64_t ci = 0; ci < cin; ++ci) {
        const float* src = pp + ((k * groups + g) * cin + ci) * part;
        for (int64_t t = 0; t < kh * kw; ++t)
          for (int64_t l = 0; l < lanes; ++l) dwp[(t * cin + ci) * c + g * kLanes + l] += src[t * kLanes + l];
        if (ci == 0)  // every channel's pass sums the same deltas
          for (int64_t l = 0; l < lanes; ++l) dbp[g * kLanes + l] += src[kh * kw * kLanes + l];
      }
    }
  return ffi::Error::Success();
}

ffi::Error InputGradientImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> d, ffi::Buffer<ffi::F32> w,
                             ffi::ResultBuffer<ffi::F32> dx) {
  auto dd = d.dimensions();
  auto wdims = w.dimensions();
  if (dd.size() != 4 || wdims.size() != 4 || wdims[3] != dd[3])
    return ffi::Error::InvalidArgument("d must be (N, Ho, Wo, C) and w (KH, KW, Cin, C)");
  const int64_t n = dd[0], ho = dd[1], wo = dd[2], c = dd[3];
  const int64_t kh = wdims[0], kw = wdims[1], cin = wdims[2];
  const int64_t h = ho + kh - 1, wd = wo + kw - 1;
  const float* dp = d.typed_data();
  const float* wp = w.typed_data();
  float* dxp = dx->typed_data();
  parallel_for(pool, n, [=](int64_t s) {
    input_gradient_sample(dp + s * ho * wo * c, wp, ho, wo, c, kh, kw, cin, dxp + s * h * wd * cin);
  });
  return ffi::Error::Success();
}


// ---------------------------------------------------------------------------------------------
// Winograd F(4x4, 3x3) for wide 3x3 convolutions (Lavin & Gray 2016), fused tile by tile.
//
//   y[n, i, j, o] = sum_{a, c, k} x[n, i + a, j + c, k] * w[a, c, k, o]      (valid, stride 1, 3x3)
//
// with x zero-padded by pad_top rows above and pad_left columns to the left (negative: cropped) and
// zeros past its bottom and right edges up to the output's size (the result buffer's Ho x Wo): so
// one kernel computes a padded convolution's forward pass and, on the deltas with the kernel turned,
// its input gradient, without padded copies. The kernel comes transformed: u (36, Cin, C) = G w G^T
// per (input, output) channel pair, computed by the caller (jigcnn.fast.winograd.kernel_transform).
// A task takes kWinoBlock 4x4 output tiles:
// it transforms their 6x6 input patches (V = B^T d B, 16 channels per vector), multiplies V by u for
// each of the 36 tile positions (a register-blocked GEMM over the input channels), and maps the
// products back (Y = A^T M A), all in per-thread buffers that stay in the core's cache. Input
// outside x is zero; outputs past the edge are dropped. Cin and C must be multiples of 16. Each
// output is computed by one task in a fixed order: results do not depend on the thread schedule.

constexpr int kWinoBlock = 32;  // output tiles per task
constexpr int kWinoRows = 8;    // tiles per register block of the GEMM

// B^T d for one 6-vector (Lavin & Gray's B^T for F(4x4, 3x3))
inline void winograd_bt(vf d0, vf d1, vf d2, vf d3, vf d4, vf d5, vf* o, int stride) {
  const vf four = broadcast(4.0f), five = broadcast(5.0f), two = broadcast(2.0f);
  o[0 * stride] = four * d0 - five * d2 + d4;
  o[1 * stride] = -four * (d1 + d2) + d3 + d4;
  o[2 * stride] = four * (d1 - d2) - d3 + d4;
  o[3 * stride] = two * (d3 - d1) - d2 + d4;
  o[4 * stride] = two * (d1 - d3) - d2 + d4;
  o[5 * stride] = four * d1 - five * d3 + d5;
}

// A^T m for one 6-vector
inline void winograd_at(vf m0, vf m1, vf m2, vf m3, vf m4, vf m5, vf* y, int stride) {
  const vf two = broadcast(2.0f), four = broadcast(4.0f), eight = broadcast(8.0f);
  const vf s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
  y[0 * stride] = m0 + s12 + s34;
  y[1 * stride] = d12 + two * d34;
  y[2 * stride] = s12 + four * s34;
  y[3 * stride] = d12 + eight * d34 + m5;
}

// One register block of the tile-position GEMMs: for r < kWinoRows rows and NV * 16 columns,
// out[r][j] = (ACCUMULATE ? out[r][j] : 0) + sum_{k < depth} a[r * a_row + k * a_k] * b[k * b_stride + j].
// The forward pass takes M = V U (a = V by rows, depth = Cin), the weight gradient dU += V^T dM
// (a = V by columns, depth = the tiles).
template <int NV, bool ACCUMULATE>
inline void winograd_block(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_stride,
                           int64_t depth, float* out, int64_t out_stride) {
  vf acc[kWinoRows][NV];
  for (int r = 0; r < kWinoRows; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = ACCUMULATE ? load(out + r * out_stride + j * kLanes) : broadcast(0.0f);
  for (int64_t k = 0; k < depth; ++k) {
    vf bk[NV];
    for (int j = 0; j < NV; ++j) bk[j] = load(b + k * b_stride + j * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < kWinoRows; ++r) {
      const vf s = broadcast(a[r * a_row + k * a_k]);
      for (int j = 0; j < NV; ++j) acc[r][j] += s * bk[j];
    }
  }
  for (int r = 0; r < kWinoRows; ++r)
    for (int j = 0; j < NV; ++j) store(out + r * out_stride + j * kLanes, acc[r][j]);
}

// V = B^T d B of the 6x6 input patches of output tiles first .. first + count - 1 (tile g: sample
// g / (th tw), row (g % (th tw)) / tw, column g % tw), stored V[t][i][k] (t = 6 a + b, a along H) with
// `block` rows per tile position; rows count .. rows - 1 are zeros.
void winograd_input_tiles(const float* x, int64_t h, int64_t w, int64_t cin, int64_t th, int64_t tw,
                          int64_t pad_top, int64_t pad_left, int64_t first, int64_t count, int64_t rows,
                          int64_t block, float* vbuf) {
  const int64_t per_image = th * tw;
  for (int64_t i = 0; i < rows; ++i) {
    if (i >= count) {
      for (int t = 0; t < 36; ++t) std::memset(vbuf + (t * block + i) * cin, 0, cin * sizeof(float));
      continue;
    }
    const int64_t g = first + i, s = g / per_image, ty = (g % per_image) / tw, tx = g % tw;
    const int64_t y0 = 4 * ty - pad_top, x0 = 4 * tx - pad_left;  // the patch's top left in x
    const float* xs = x + s * h * w * cin;
    bool inside[6][6];
    for (int a = 0; a < 6; ++a)
      for (int b = 0; b < 6; ++b) inside[a][b] = y0 + a >= 0 && y0 + a < h && x0 + b >= 0 && x0 + b < w;
    for (int64_t k = 0; k < cin; k += kLanes) {
      vf d[6][6], r[6][6];
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b)
          d[a][b] = inside[a][b] ? load(xs + ((y0 + a) * w + x0 + b) * cin + k) : broadcast(0.0f);
      for (int b = 0; b < 6; ++b) winograd_bt(d[0][b], d[1][b], d[2][b], d[3][b], d[4][b], d[5][b], &r[0][b], 6);
      vf v[6][6];
      for (int a = 0; a < 6; ++a) winograd_bt(r[a][0], r[a][1], r[a][2], r[a][3], r[a][4], r[a][5], &v[a][0], 1);
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b) store(vbuf + ((a * 6 + b) * block + i) * cin + k, v[a][b]);
    }
  }
}

void winograd_task(const float* x, const float* u, float* y, int64_t h, int64_t w, int64_t cin, int64_t c,
                   int64_t ho, int64_t wo, int64_t pad_top, int64_t pad_left, int64_t first, int64_t count,
                   float* vbuf, float* mbuf) {
  const int64_t th = (ho + 3) / 4, tw = (wo + 3) / 4, per_image = th * tw;
  const int64_t rows = (count + kWinoRows - 1) / kWinoRows * kWinoRows;
  // 1. input tiles
  winograd_input_tiles(x, h, w, cin, th, tw, pad_top, pad_left, first, count, rows, kWinoBlock, vbuf);
  // 2. the 36 tile-position GEMMs: M[t] = V[t] U[t]
  for (int t = 0; t < 36; ++t) {
    const float* ut = u + t * cin * c;
    for (int64_t o = 0; o < c; o += 2 * kLanes) {
      const bool pair = o + 2 * kLanes <= c;
      for (int64_t r0 = 0; r0 < rows; r0 += kWinoRows) {
        const float* vt = vbuf + (t * kWinoBlock + r0) * cin;
        float* mt = mbuf + (t * kWinoBlock + r0) * c + o;
        if (pair) {
          winograd_block<2, false>(vt, cin, 1, ut + o, c, cin, mt, c);
        } else {
          winograd_block<1, false>(vt, cin, 1, ut + o, c, cin, mt, c);
        }
      }
    }
  }
  // 3. output tiles: Y = A^T M A, the part inside the output
  for (int64_t i = 0; i < count; ++i) {
    const int64_t g = first + i, s = g / per_image, ty = (g % per_image) / tw, tx = g % tw;
    const int64_t y0 = 4 * ty, x0 = 4 * tx;  // the tile's top left in y
    float* ys = y + s * ho * wo * c;
    for (int64_t o = 0; o < c; o += kLanes) {
      vf q[4][6], out[4][4];
      for (int b = 0; b < 6; ++b) {
        vf mcol[6];
        for (int a = 0; a < 6; ++a) mcol[a] = load(mbuf + ((a * 6 + b) * kWinoBlock + i) * c + o);
        winograd_at(mcol[0], mcol[1], mcol[2], mcol[3], mcol[4], mcol[5], &q[0][b], 6);
      }
      for (int p = 0; p < 4; ++p) winograd_at(q[p][0], q[p][1], q[p][2], q[p][3], q[p][4], q[p][5], &out[p][0], 1);
      for (int p = 0; p < 4; ++p)
        for (int qq = 0; qq < 4; ++qq)
          if (y0 + p < ho && x0 + qq < wo) store(ys + ((y0 + p) * wo + x0 + qq) * c + o, out[p][qq]);
    }
  }
}

ffi::Error WinogradForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> u,
                               ffi::ResultBuffer<ffi::F32> y, int64_t pad_top, int64_t pad_left) {
  auto xd = x.dimensions();
  auto ud = u.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 4) return ffi::Error::InvalidArgument("x must be (N, H, W, Cin)");
  if (ud.size() != 3 || ud[0] != 36) return ffi::Error::InvalidArgument("u must be (36, Cin, C)");
  if (yd.size() != 4 || yd[0] != xd[0] || yd[3] != ud[2])
    return ffi::Error::InvalidArgument("y must be (N, Ho, Wo, C) for x (N, H, W, Cin) and u (36, Cin, C)");
  const int64_t n = xd[0], h = xd[1], w = xd[2], cin = xd[3], c = ud[2], ho = yd[1], wo = yd[2];
  if (ud[1] != cin) return ffi::Error::InvalidArgument("u's input channels differ from x's");
  if (cin % kLanes || c % kLanes) return ffi::Error::InvalidArgument("Cin and C must be multiples of 16");
  const int64_t tiles = n * ((ho + 3) / 4) * ((wo + 3) / 4);
  const int64_t tasks = (tiles + kWinoBlock - 1) / kWinoBlock;
  const float* xp = x.typed_data();
  const float* up = u.typed_data();
  float* yp = y->typed_data();
  parallel_for(pool, tasks, [=](int64_t task) {
    thread_local std::vector<float> vbuf, mbuf;
    vbuf.resize(36 * kWinoBlock * cin);
    mbuf.resize(36 * kWinoBlock * c);
    const int64_t first = task * kWinoBlock;
    winograd_task(xp, up, yp, h, w, cin, c, ho, wo, pad_top, pad_left, first,
                  std::min<int64_t>(kWinoBlock, tiles - first), vbuf.data(), mbuf.data());
  });
  return ffi::Error::Success();
}

// --- its weight gradient: dU[t] = sum over tiles of V[t]^T dM[t], dM = A dY A^T (the caller maps dU to
// dw = G^T dU G). Tiles go in fixed blocks of kWgBlock; partial sum p takes blocks p, p + P, p + 2P, ...
// (P = min(blocks, kWgPartials)) and the partials are added in order: the result does not depend on
// the thread schedule.

constexpr int kWgBlock = 64;
constexpr int kWgPartials = 8;

// A^T's transpose on one 4-vector: the 6 values m_i = sum_p AT[p][i] y_p
inline void winograd_a(vf y0, vf y1, vf y2, vf y3, vf* m, int stride) {
  const vf two = broadcast(2.0f), four = broadcast(4.0f), eight = broadcast(8.0f);
  const vf s02 = y0 + four * y2, e = two * y1 + eight * y3;
  m[0 * stride] = y0;
  m[1 * stride] = y0 + y1 + y2 + y3;
  m[2 * stride] = y0 - y1 + y2 - y3;
  m[3 * stride] = s02 + e;
  m[4 * stride] = s02 - e;
  m[5 * stride] = y3;
}

void winograd_wg_tiles(const float* x, const float* d, int64_t h, int64_t w, int64_t cin, int64_t c, int64_t ho,
                       int64_t wo, int64_t pad_top, int64_t pad_left, int64_t first, int64_t count, float* vbuf,
                       float* mbuf, float* du) {
  const int64_t th = (ho + 3) / 4, tw = (wo + 3) / 4, per_image = th * tw;
  winograd_input_tiles(x, h, w, cin, th, tw, pad_top, pad_left, first, count, count, kWgBlock, vbuf);
  for (int64_t i = 0; i < count; ++i) {  // dM[t][i][o] = A dY A^T, the deltas zero past the output's edge
    const int64_t g = first + i, s = g / per_image, ty = (g % per_image) / tw, tx = g % tw;
    const int64_t y0 = 4 * ty, x0 = 4 * tx;
    const float* ds = d + s * ho * wo * c;
    for (int64_t o = 0; o < c; o += kLanes) {
      vf dy[4][4], q[6][4], m[6][6];
      for (int p = 0; p < 4; ++p)
        for (int qq = 0; qq < 4; ++qq)
          dy[p][qq] = (y0 + p < ho && x0 + qq < wo) ? load(ds + ((y0 + p) * wo + x0 + qq) * c + o) : broadcast(0.0f);
      for (int qq = 0; qq < 4; ++qq) winograd_a(dy[0][qq], dy[1][qq], dy[2][qq], dy[3][qq], &q[0][qq], 4);
      for (int a = 0; a < 6; ++a) winograd_a(q[a][0], q[a][1], q[a][2], q[a][3], &m[a][0], 1);
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b) store(mbuf + ((a * 6 + b) * kWgBlock + i) * c + o, m[a][b]);
    }
  }
  for (int t = 0; t < 36; ++t) {
    const float* vt = vbuf + t * kWgBlock * cin;
    const float* mt = mbuf + t * kWgBlock * c;
    float* dut = du + t * cin * c;
    for (int64_t r0 = 0; r0 < cin; r0 += kWinoRows)
      for (int64_t o = 0; o < c; o += 2 * kLanes) {
        if (o + 2 * kLanes <= c) {
          winograd_block<2, true>(vt + r0, 1, cin, mt + o, c, count, dut + r0 * c + o, c);
        } else {
          winograd_block<1, true>(vt + r0, 1, cin, mt + o, c, count, dut + r0 * c + o, c);
        }
      }
  }
}

ffi::Error WinogradWeightGradientImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> d,
                                      ffi::ResultBuffer<ffi::F32> du, int64_t pad_top, int64_t pad_left) {
  auto xd = x.dimensions();
  auto dd = d.dimensions();
  auto ud = du->dimensions();
  if (xd.size() != 4 || dd.size() != 4 || dd[0] != xd[0])
    return ffi::Error::InvalidArgument("x must be (N, H, W, Cin) and d (N, Ho, Wo, C)");
  const int64_t n = xd[0], h = xd[1], w = xd[2], cin = xd[3], ho = dd[1], wo = dd[2], c = dd[3];
  if (ud.size() != 3 || ud[0] != 36 || ud[1] != cin || ud[2] != c)
    return ffi::Error::InvalidArgument("du must be (36, Cin, C)");
  if (cin % kLanes || c % kLanes) return ffi::Error::InvalidArgument("Cin and C must be multiples of 16");
  const int64_t tiles = n * ((ho + 3) / 4) * ((wo + 3) / 4);
  const int64_t blocks = (tiles + kWgBlock - 1) / kWgBlock;
  const int64_t partials = std::max<int64_t>(1, std::min<int64_t>(blocks, kWgPartials));
  const int64_t size = 36 * cin * c;
  std::vector<float> sums(partials * size, 0.0f);
  const float* xp = x.typed_data();
  const float* dp = d.typed_data();
  float* sp = sums.data();
  parallel_for(pool, partials, [=](int64_t p) {
    std::vector<float> vbuf(36 * kWgBlock * cin), mbuf(36 * kWgBlock * c);
    for (int64_t b = p; b < blocks; b += partials) {
      const int64_t first = b * kWgBlock;
      winograd_wg_tiles(xp, dp, h, w, cin, c, ho, wo, pad_top, pad_left, first,
                        std::min<int64_t>(kWgBlock, tiles - first), vbuf.data(), mbuf.data(), sp + p * size);
    }
  });
  // the partials added in order, element by element, in slices across the pool
  float* out = du->typed_data();
  constexpr int64_t kSlice = 16384;
  parallel_for(pool, (size + kSlice - 1) / kSlice, [=](int64_t q) {
    const int64_t lo = q * kSlice, hi = std::min<int64_t>(size, lo + kSlice);
    for (int64_t i = lo; i < hi; ++i) {
      float total = sp[i];
      for (int64_t p = 1; p < partials; ++p) total += sp[p * size + i];
      out[i] = total;
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JigcnnWinogradForward, WinogradForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JigcnnDirectConvForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JigcnnDirectConvWeightGradient, WeightGradientImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JigcnnDirectConvInputGradient, InputGradientImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JigcnnWinogradWeightGradient, WinogradWeightGradientImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
