// Fused GroupNorm -> PReLU (-> + residual) over channels-last 3D tensors, forward and backward.
//
// Owner: rrcunet.models.fused (the Python side: loading, dispatch, autograd, fallback).
//
// Layout: a channels_last_3d tensor (N, C, D, H, W) is, in memory, N rows blocks of S = D*H*W
// voxels, each voxel holding its C channels contiguously. Every kernel below walks that memory
// once per pass, in voxel blocks spread over ATen's thread pool; per-channel sums are taken in
// float per block and added into double, so the statistics do not lose precision over millions of
// voxels. Values are stored as float or bfloat16; all arithmetic is float.
//
// Forward (two passes):   z = (x - mean_g) * rstd_g * gamma_c + beta_c
//                          y = (z > 0 ? z : a * z) [+ r]
//                          with a tail t (Ct channels): out = cat(y, t) along channels, written in the
//                          same pass (each voxel's C values of y, then its Ct values of t), so the RRc
//                          block's join needs no separate concatenation
// Backward (two passes):   dz = dy * (z > 0 ? 1 : a);  da = sum(dy * z, z <= 0)
//                          dgamma_c = sum(dz * xhat), dbeta_c = sum(dz)
//                          dx = rstd_g * (gamma_c * dz - (A_g + xhat * B_g) / n_g)
//                          A_g = sum_{c in g} gamma_c * dbeta_c,  B_g = sum_{c in g} gamma_c * dgamma_c
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kBlock = 2048;  // voxels per work item
constexpr int64_t kLanes = 512;   // floats per inner strip: whole voxels, so lane j is channel j % C

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const at::BFloat16* p, int64_t i) {
  uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(p)[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(at::BFloat16* p, int64_t i, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  // round to nearest even; a NaN stays a (quiet) NaN
  const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>((nan ? (bits | 0x00400000u) : rounded) >> 16);
}

// The voxels of one sample are walked in strips of R = kLanes / C whole voxels (L = R * C floats),
// with per-lane copies of the per-channel constants and accumulators, so every inner loop is a
// plain unit-stride loop over L lanes that the compiler vectorises whatever C is.
struct Strips {
  int64_t C, R, L;
  explicit Strips(int64_t channels) : C(channels), R(std::max<int64_t>(1, kLanes / channels)), L(R * channels) {}
  std::vector<float> lanes(const float* per_channel) const {
    std::vector<float> out(L);
    for (int64_t j = 0; j < L; ++j) out[j] = per_channel[j % C];
    return out;
  }
};

// What forward and backward share: the sizes, the strip layout, and the affine and PReLU parameters
// as float (the tensors are kept alive here, the pointers read from them).
struct Unit {
  int64_t N, C, S, groups, Cg;
  Strips st;
  at::Tensor gamma_f, beta_f, slope_f;
  const float* g;
  const float* bt;
  float slope;
  Unit(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& a, int64_t n_groups)
      : N(x.size(0)), C(x.size(1)), S(x.numel() / (x.size(0) * x.size(1))), groups(n_groups), Cg(x.size(1) / n_groups),
        st(x.size(1)), gamma_f(gamma.to(at::kFloat).contiguous()), beta_f(beta.to(at::kFloat).contiguous()),
        slope_f(a.to(at::kFloat).contiguous()), g(gamma_f.data_ptr<float>()), bt(beta_f.data_ptr<float>()),
        slope(slope_f.data_ptr<float>()[0]) {}
};

// Per-channel shifted sums over S voxels of one sample: sum(x - k_c), sum((x - k_c)^2), with
// k_c = x[voxel 0, c] (the shift keeps E[x^2] - E[x]^2 from cancelling when |mean| >> std).
template <typename T>
void channel_sums(const T* x, int64_t S, const Strips& st, std::vector<double>& s1, std::vector<double>& s2,
                  std::vector<float>& shift) {
  const int64_t C = st.C, L = st.L, R = st.R;
  for (int64_t c = 0; c < C; ++c) shift[c] = load(x, c);
  const std::vector<float> k = st.lanes(shift.data());
  const int64_t blocks = (S + kBlock - 1) / kBlock;
  std::vector<double> part1(blocks * C, 0.0), part2(blocks * C, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> a1(L), a2(L);
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(a1.begin(), a1.end(), 0.f);
      std::fill(a2.begin(), a2.end(), 0.f);
      const int64_t v0 = b * kBlock, v1 = std::min(S, (b + 1) * kBlock);
      int64_t v = v0;
      for (; v + R <= v1; v += R) {
        const T* row = x + v * C;
        for (int64_t j = 0; j < L; ++j) {
          const float d = load(row, j) - k[j];
          a1[j] += d;
          a2[j] += d * d;
        }
      }
      for (; v < v1; ++v) {
        const T* row = x + v * C;
        for (int64_t c = 0; c < C; ++c) {
          const float d = load(row, c) - k[c];
          a1[c] += d;
          a2[c] += d * d;
        }
      }
      for (int64_t j = 0; j < L; ++j) {
        part1[b * C + j % C] += a1[j];
        part2[b * C + j % C] += a2[j];
      }
    }
  });
  std::fill(s1.begin(), s1.end(), 0.0);
  std::fill(s2.begin(), s2.end(), 0.0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += part1[b * C + c];
      s2[c] += part2[b * C + c];
    }
}

// The forward's second pass over one strip of `width` values: y = prelu(x * scale + offset) [+ r].
// One out-of-line function for both output layouts, so both compile to the same arithmetic.
template <typename T>
__attribute__((noinline)) void apply_strip(const T* __restrict row, const T* __restrict res, T* __restrict out,
                                           int64_t width, const float* __restrict sc_p,
                                           const float* __restrict of_p, float a_l) {
  if (res) {
    for (int64_t j = 0; j < width; ++j) {
      const float z = load(row, j) * sc_p[j] + of_p[j];
      store(out, j, (z > 0.f ? z : a_l * z) + load(res, j));
    }
  } else {
    for (int64_t j = 0; j < width; ++j) {
      const float z = load(row, j) * sc_p[j] + of_p[j];
      store(out, j, z > 0.f ? z : a_l * z);
    }
  }
}

template <typename T>
void forward_impl(const at::Tensor& x, const Unit& u, const c10::optional<at::Tensor>& residual,
                  const c10::optional<at::Tensor>& tail, double eps, at::Tensor& y, at::Tensor& mean,
                  at::Tensor& rstd) {
  const int64_t N = u.N, C = u.C, S = u.S, Cg = u.Cg, groups = u.groups;
  const Strips& st = u.st;
  const int64_t L = st.L, R = st.R;
  const float* g = u.g;
  const float* bt = u.bt;
  const float slope = u.slope;
  float* mean_p = mean.data_ptr<float>();
  float* rstd_p = rstd.data_ptr<float>();
  std::vector<double> s1(C), s2(C);
  std::vector<float> shift(C), scale(C), offset(C);
  const int64_t Ct = tail.has_value() ? tail->size(1) : 0, Cy = C + Ct;
  for (int64_t n = 0; n < N; ++n) {
    const T* xn = x.data_ptr<T>() + n * S * C;
    T* yn = y.data_ptr<T>() + n * S * Cy;
    const T* rn = residual.has_value() ? residual->data_ptr<T>() + n * S * C : nullptr;
    const T* tn = tail.has_value() ? tail->data_ptr<T>() + n * S * Ct : nullptr;
    channel_sums(xn, S, st, s1, s2, shift);
    for (int64_t gi = 0; gi < groups; ++gi) {
      // group moments (in double) from the channels' shifted sums: m_c = k_c + s1_c / S
      const double count = static_cast<double>(S) * Cg;
      double sum = 0.0, sumsq = 0.0;
      for (int64_t c = gi * Cg; c < (gi + 1) * Cg; ++c) {
        const double mc = shift[c] + s1[c] / S;
        const double vc = std::max(0.0, s2[c] / S - (s1[c] / S) * (s1[c] / S));
        sum += mc * S;
        sumsq += (vc + mc * mc) * S;
      }
      const double m = sum / count;
      const double var = std::max(0.0, sumsq / count - m * m);
      const double r = 1.0 / std::sqrt(var + eps);
      mean_p[n * groups + gi] = static_cast<float>(m);
      rstd_p[n * groups + gi] = static_cast<float>(r);
      for (int64_t c = gi * Cg; c < (gi + 1) * Cg; ++c) {
        scale[c] = static_cast<float>(r * g[c]);
        offset[c] = static_cast<float>(bt[c] - m * r * g[c]);
      }
    }
    const std::vector<float> sc = st.lanes(scale.data()), of = st.lanes(offset.data());
    const int64_t strips = (S + R - 1) / R;
    at::parallel_for(0, strips, kBlock / R, [&](int64_t p0, int64_t p1) {
      std::vector<T> buf(tn ? L : 0);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t voxels = std::min(R, S - p * R), width = voxels * C;
        const T* row = xn + p * L;
        const T* res = rn ? rn + p * L : nullptr;
        if (!tn) {
          apply_strip(row, res, yn + p * L, width, sc.data(), of.data(), slope);
          continue;
        }
        // with a tail, output voxels are Cy apart: compute the strip, then lay out each voxel's
        // C values and its Ct tail values side by side
        apply_strip(row, res, buf.data(), width, sc.data(), of.data(), slope);
        for (int64_t r = 0; r < voxels; ++r) {
          const int64_t v = p * R + r;
          std::memcpy(yn + v * Cy, buf.data() + r * C, C * sizeof(T));
          std::memcpy(yn + v * Cy + C, tn + v * Ct, Ct * sizeof(T));
        }
      }
    });
  }
}

// Backward pass 1 over one strip: per-lane sums of dz, dz * xhat and (for the PReLU slope) dy * z.
template <typename T>
inline void grad_sums(const T* __restrict row, const T* __restrict grow, int64_t width, const float* __restrict mu,
                      const float* __restrict rs, const float* __restrict g, const float* __restrict b, float slope,
                      float* __restrict ada, float* __restrict adb, float* __restrict adg) {
  for (int64_t j = 0; j < width; ++j) {
    const float xh = (load(row, j) - mu[j]) * rs[j];
    const float z = xh * g[j] + b[j];
    const float gy = load(grow, j);
    const bool pos = z > 0.f;
    const float dz = pos ? gy : slope * gy;
    ada[j] += pos ? 0.f : gy * z;
    adb[j] += dz;
    adg[j] += dz * xh;
  }
}

template <typename T>
void backward_impl(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
                   const Unit& u, at::Tensor& dx, at::Tensor& dgamma, at::Tensor& dbeta, at::Tensor& da) {
  const int64_t N = u.N, C = u.C, S = u.S, Cg = u.Cg, groups = u.groups;
  const Strips& st = u.st;
  const int64_t L = st.L, R = st.R;
  const float* g = u.g;
  const float* bt = u.bt;
  const float slope = u.slope;
  const float* mean_p = mean.data_ptr<float>();
  const float* rstd_p = rstd.data_ptr<float>();
  double* dg = dgamma.data_ptr<double>();
  double* db = dbeta.data_ptr<double>();
  double da_total = 0.0;
  const int64_t strips = (S + R - 1) / R;
  const int64_t per_item = std::max<int64_t>(1, kBlock / R);
  const int64_t items = (strips + per_item - 1) / per_item;
  std::vector<float> mu(C), rs(C), ka(C), kb(C);
  const std::vector<float> gl = st.lanes(g), bl = st.lanes(bt);
  for (int64_t n = 0; n < N; ++n) {
    const T* xn = x.data_ptr<T>() + n * S * C;
    const T* dyn = dy.data_ptr<T>() + n * S * C;
    T* dxn = dx.data_ptr<T>() + n * S * C;
    for (int64_t c = 0; c < C; ++c) {
      mu[c] = mean_p[n * groups + c / Cg];
      rs[c] = rstd_p[n * groups + c / Cg];
    }
    const std::vector<float> mul = st.lanes(mu.data()), rsl = st.lanes(rs.data());
    std::vector<double> part_db(items * C, 0.0), part_dg(items * C, 0.0), part_da(items, 0.0);
    at::parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) {
      std::vector<float> adb(L), adg(L), ada(L);
      float* __restrict adb_p = adb.data();
      float* __restrict adg_p = adg.data();
      float* __restrict ada_p = ada.data();
      const float* __restrict mu_p = mul.data();
      const float* __restrict rs_p = rsl.data();
      const float* __restrict g_p = gl.data();
      const float* __restrict b_p = bl.data();
      const float a_l = slope;
      for (int64_t it = i0; it < i1; ++it) {
        std::fill(adb.begin(), adb.end(), 0.f);
        std::fill(adg.begin(), adg.end(), 0.f);
        std::fill(ada.begin(), ada.end(), 0.f);
        const int64_t p1 = std::min(strips, (it + 1) * per_item);
        for (int64_t p = it * per_item; p < p1; ++p) {
          const int64_t width = std::min(R, S - p * R) * C;
          const T* __restrict row = xn + p * L;
          const T* __restrict grow = dyn + p * L;
          grad_sums(row, grow, width, mu_p, rs_p, g_p, b_p, a_l, ada_p, adb_p, adg_p);
        }
        double sa = 0.0;
        for (int64_t j = 0; j < L; ++j) {
          part_db[it * C + j % C] += adb[j];
          part_dg[it * C + j % C] += adg[j];
          sa += ada[j];
        }
        part_da[it] = sa;
      }
    });
    std::vector<double> sdb(C, 0.0), sdg(C, 0.0);
    for (int64_t it = 0; it < items; ++it) {
      for (int64_t c = 0; c < C; ++c) {
        sdb[c] += part_db[it * C + c];
        sdg[c] += part_dg[it * C + c];
      }
      da_total += part_da[it];
    }
    for (int64_t gi = 0; gi < groups; ++gi) {
      double A = 0.0, B = 0.0;
      for (int64_t c = gi * Cg; c < (gi + 1) * Cg; ++c) {
        A += g[c] * sdb[c];
        B += g[c] * sdg[c];
      }
      const double count = static_cast<double>(S) * Cg;
      for (int64_t c = gi * Cg; c < (gi + 1) * Cg; ++c) {
        ka[c] = static_cast<float>(A / count);
        kb[c] = static_cast<float>(B / count);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      dg[c] += sdg[c];
      db[c] += sdb[c];
    }
    const std::vector<float> kal = st.lanes(ka.data()), kbl = st.lanes(kb.data());
    at::parallel_for(0, strips, per_item, [&](int64_t p0, int64_t p1) {
      const float* __restrict mu_p = mul.data();
      const float* __restrict rs_p = rsl.data();
      const float* __restrict g_p = gl.data();
      const float* __restrict b_p = bl.data();
      const float* __restrict ka_p = kal.data();
      const float* __restrict kb_p = kbl.data();
      const float a_l = slope;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t width = std::min(R, S - p * R) * C;
        const T* __restrict row = xn + p * L;
        const T* __restrict grow = dyn + p * L;
        T* __restrict out = dxn + p * L;
        for (int64_t j = 0; j < width; ++j) {
          const float xh = (load(row, j) - mu_p[j]) * rs_p[j];
          const float z = xh * g_p[j] + b_p[j];
          const float gy = load(grow, j);
          const float dz = z > 0.f ? gy : a_l * gy;
          store(out, j, rs_p[j] * (g_p[j] * dz - ka_p[j] - xh * kb_p[j]));
        }
      }
    });
  }
  da.data_ptr<double>()[0] = da_total;
}

// ---------------------------------------------------------------------------------------------
// Weight gradient of a narrow stride-1 3D convolution (at most 4 channels in and out: the
// recurrent units' convolutions at the first level, rrcunet.models.kernels "narrow"), bf16 in,
// float32 out:
//   dW[co][ci][a][b][c] = sum over output voxels v of dy[v][co] * x[v + (a, b, c) - pad][ci]
// (zero outside x). oneDNN's kernels are slow at so few channels (5-8 ms for 4 -> 4 channels on
// 80x80x48 in float32, more in bf16; issue 23). Both tensors are first copied into bf16 planes, one
// per (batch, slice, channel), with the in-plane padding of x written as zeros and every plane
// flattened with one row pitch L = W + 2 pw:
//   x  plane (n, id, ci): element (ih + ph) * L + (iw + pw) holds x[n][ci][id][ih][iw]
//   dy plane (n, d, co):  element h * L + w holds dy[n][co][d][h][w]  (zeros where w >= Wo)
// so output position p = h * L + w meets input position p + b * L + c for every tap (a, b, c):
// one long dot product per (slice, tap, co, ci). Products of bf16 values are exact in float32; they
// are summed in float32 vector lanes (AVX512-BF16's dot-product instruction where the build has it,
// else scalar floats), each slice's sums go to double, and the slices are added in order, so the
// result does not depend on the number of threads.
inline float bf16_bits_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Channel c of n voxels of C interleaved channels, into dst[0..n). With 4 channels a voxel is one
// 64-bit word, and the compiler vectorises the shift-and-narrow loop.
inline void deinterleave(const uint16_t* src, int64_t C, int64_t c, int64_t n, uint16_t* dst) {
  if (C == 4) {
    const int shift = static_cast<int>(16 * c);
    for (int64_t i = 0; i < n; ++i) {
      uint64_t word;
      std::memcpy(&word, src + 4 * i, sizeof(word));
      dst[i] = static_cast<uint16_t>(word >> shift);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i * C + c];
}

constexpr int64_t kNarrow = 4;
constexpr int64_t kPair = 32;  // bf16 values per 512-bit vector

at::Tensor narrow_weight_grad_impl(const at::Tensor& dy, const at::Tensor& x, int64_t KD, int64_t KH, int64_t KW,
                                   int64_t pd, int64_t ph, int64_t pw) {
  const int64_t N = x.size(0), Ci = x.size(1), D = x.size(2), H = x.size(3), W = x.size(4);
  const int64_t Co = dy.size(1), Do = dy.size(2), Ho = dy.size(3), Wo = dy.size(4);
  const int64_t taps = KD * KH * KW, L = W + 2 * pw;
  // dot length: every output position, rounded up to whole vectors (the dy planes are zero there)
  const int64_t P = (Ho * L + kPair - 1) / kPair * kPair;
  // an x plane holds the H + 2 ph padded rows and the farthest tap's reach past P
  const int64_t plane = std::max((H + 2 * ph) * L, P + (KH - 1) * L + KW - 1);
  const int64_t nx = N * D * kNarrow, ny = N * Do * kNarrow;  // 4 planes each, zeros beyond the channels
  // kept between calls (per thread): fresh pages for these 5 MB cost about a third of the time
  thread_local std::vector<uint16_t> xbuf, dybuf;
  xbuf.resize(static_cast<size_t>(nx * plane));
  dybuf.resize(static_cast<size_t>(ny * P));
  uint16_t* const xp = xbuf.data();
  uint16_t* const dyp = dybuf.data();
  const uint16_t* xs = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const uint16_t* ds = reinterpret_cast<const uint16_t*>(dy.data_ptr<at::BFloat16>());
  at::parallel_for(0, N * D, 1, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s)
      for (int64_t c = 0; c < kNarrow; ++c) {
        uint16_t* q = xp + (s * kNarrow + c) * plane;
        std::fill(q, q + plane, uint16_t{0});
        for (int64_t ih = 0; ih < H && c < Ci; ++ih)
          deinterleave(xs + ((s * H + ih) * W) * Ci, Ci, c, W, q + (ih + ph) * L + pw);
      }
  });
  at::parallel_for(0, N * Do, 1, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s)
      for (int64_t c = 0; c < kNarrow; ++c) {
        uint16_t* q = dyp + (s * kNarrow + c) * P;
        std::fill(q, q + P, uint16_t{0});
        for (int64_t h = 0; h < Ho && c < Co; ++h) deinterleave(ds + ((s * Ho + h) * Wo) * Co, Co, c, Wo, q + h * L);
      }
  });
  std::vector<double> part(static_cast<size_t>(N * Do * Co * Ci * taps), 0.0);
  at::parallel_for(0, N * Do, 1, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) {
      const int64_t n = s / Do, d = s % Do;
      double* out = &part[static_cast<size_t>(s * Co * Ci * taps)];
      for (int64_t ta = 0; ta < KD; ++ta) {
        const int64_t id = d + ta - pd;
        if (id < 0 || id >= D) continue;
        for (int64_t tb = 0; tb < KH; ++tb)
          for (int64_t tc = 0; tc < KW; ++tc) {
            const int64_t tap = (ta * KH + tb) * KW + tc;
            const uint16_t* g0 = dyp + (s * kNarrow) * P;
            const uint16_t* x0 = xp + ((n * D + id) * kNarrow) * plane + tb * L + tc;
#if defined(__AVX512BF16__)
            __m512 acc[kNarrow * kNarrow];
            for (auto& v : acc) v = _mm512_setzero_ps();
            for (int64_t p = 0; p < P; p += kPair) {
              __m512bh g[kNarrow], v[kNarrow];
              for (int64_t c = 0; c < kNarrow; ++c) g[c] = (__m512bh)_mm512_loadu_si512(g0 + c * P + p);
              for (int64_t c = 0; c < kNarrow; ++c) v[c] = (__m512bh)_mm512_loadu_si512(x0 + c * plane + p);
              for (int64_t co = 0; co < kNarrow; ++co)
                for (int64_t ci = 0; ci < kNarrow; ++ci)
                  acc[co * kNarrow + ci] = _mm512_dpbf16_ps(acc[co * kNarrow + ci], g[co], v[ci]);
            }
            for (int64_t co = 0; co < Co; ++co)
              for (int64_t ci = 0; ci < Ci; ++ci) {
                alignas(64) float lanes[16];
                _mm512_store_ps(lanes, acc[co * kNarrow + ci]);
                double sum = 0.0;
                for (float l : lanes) sum += l;
                out[(co * Ci + ci) * taps + tap] = sum;
              }
#else
            for (int64_t co = 0; co < Co; ++co)
              for (int64_t ci = 0; ci < Ci; ++ci) {
                const uint16_t* gp = g0 + co * P;
                const uint16_t* xq = x0 + ci * plane;
                float sum = 0.0f;
                for (int64_t p = 0; p < P; ++p) sum += bf16_bits_to_float(gp[p]) * bf16_bits_to_float(xq[p]);
                out[(co * Ci + ci) * taps + tap] = sum;
              }
#endif
          }
      }
    }
  });
  auto dw = at::empty({Co, Ci, KD, KH, KW}, x.options().dtype(at::kFloat));
  float* dwp = dw.data_ptr<float>();
  for (int64_t k = 0; k < Co * Ci * taps; ++k) {
    double sum = 0.0;
    for (int64_t s = 0; s < N * Do; ++s) sum += part[static_cast<size_t>(s * Co * Ci * taps + k)];
    dwp[k] = static_cast<float>(sum);
  }
  return dw;
}

void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(x.dim() == 5, name, " must be 5-D (N, C, D, H, W)");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast3d), name, " must be channels_last_3d");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, name, " must be float32 or bfloat16");
}

std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                const at::Tensor& a, const c10::optional<at::Tensor>& residual, int64_t groups,
                                double eps, const c10::optional<at::Tensor>& tail) {
  check_input(x, "x");
  TORCH_CHECK(x.size(1) % groups == 0, "channels must divide into groups");
  TORCH_CHECK(a.numel() == 1, "one PReLU slope expected");
  if (residual.has_value()) {
    check_input(*residual, "residual");
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->scalar_type() == x.scalar_type(),
                "residual must match x in shape and dtype");
  }
  if (tail.has_value()) {
    check_input(*tail, "tail");
    TORCH_CHECK(tail->size(0) == x.size(0) && tail->sizes().slice(2) == x.sizes().slice(2) &&
                    tail->scalar_type() == x.scalar_type(),
                "tail must match x in batch, spatial size and dtype");
  }
  auto y = tail.has_value()
               ? at::empty({x.size(0), x.size(1) + tail->size(1), x.size(2), x.size(3), x.size(4)},
                           x.options().memory_format(at::MemoryFormat::ChannelsLast3d))
               : at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  auto opts = x.options().dtype(at::kFloat);
  auto mean = at::empty({x.size(0), groups}, opts);
  auto rstd = at::empty({x.size(0), groups}, opts);
  const Unit u(x, gamma, beta, a, groups);
  if (x.scalar_type() == at::kFloat)
    forward_impl<float>(x, u, residual, tail, eps, y, mean, rstd);
  else
    forward_impl<at::BFloat16>(x, u, residual, tail, eps, y, mean, rstd);
  return {y, mean, rstd};
}

std::vector<at::Tensor> backward(const at::Tensor& dy_in, const at::Tensor& x, const at::Tensor& mean,
                                 const at::Tensor& rstd, const at::Tensor& gamma, const at::Tensor& beta,
                                 const at::Tensor& a, int64_t groups) {
  check_input(x, "x");
  auto dy = dy_in.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast3d);
  auto dx = at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  auto dopts = x.options().dtype(at::kDouble);
  auto dgamma = at::zeros({x.size(1)}, dopts), dbeta = at::zeros({x.size(1)}, dopts), da = at::zeros({1}, dopts);
  const Unit u(x, gamma, beta, a, groups);
  if (x.scalar_type() == at::kFloat)
    backward_impl<float>(dy, x, mean, rstd, u, dx, dgamma, dbeta, da);
  else
    backward_impl<at::BFloat16>(dy, x, mean, rstd, u, dx, dgamma, dbeta, da);
  return {dx, dgamma, dbeta, da};
}

at::Tensor narrow_weight_grad(const at::Tensor& dy_in, const at::Tensor& x, std::vector<int64_t> kernel,
                              std::vector<int64_t> padding) {
  check_input(x, "x");
  TORCH_CHECK(kernel.size() == 3 && padding.size() == 3, "kernel and padding must have 3 values");
  auto dy = dy_in.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast3d);
  TORCH_CHECK(x.size(1) <= kNarrow && dy.size(1) <= kNarrow, "at most 4 channels in and out");
  TORCH_CHECK(dy.dim() == 5 && dy.size(0) == x.size(0), "dy must be 5-D with x's batch size");
  for (int64_t i = 0; i < 3; ++i)
    TORCH_CHECK(padding[i] >= 0 && kernel[i] >= 1 && dy.size(2 + i) == x.size(2 + i) + 2 * padding[i] - kernel[i] + 1,
                "dy's spatial size must be that of a stride-1 convolution of x");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "x and dy must be bfloat16");
  return narrow_weight_grad_impl(dy, x, kernel[0], kernel[1], kernel[2], padding[0], padding[1], padding[2]);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused GroupNorm -> PReLU (-> + residual) (-> cat with tail), channels_last_3d",
        py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("a"), py::arg("residual"), py::arg("groups"),
        py::arg("eps"), py::arg("tail") = py::none());
  m.def("backward", &backward, "backward of forward: dx, dgamma, dbeta, da (float64 sums)");
  m.def("narrow_weight_grad", &narrow_weight_grad,
        "float32 weight gradient of a stride-1 convolution with at most 4 channels in and out (channels_last_3d)");
}
