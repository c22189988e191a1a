// dforce's C++ kernel for the causal transformer's inference passes (dforce.models.fused builds and loads it).
//
// One call runs every block of CausalTransformer over T new tokens after the cached ones, writing the tokens'
// keys/values into the KVStore buffers, exactly as Block.forward_stored does in Python: the same function, but
// with the LayerNorm + adaLN modulation, RoPE, the store writes, attention and the gated residuals as plain loops,
// and the products as ATen addmm (MKL). At a rollout's batch sizes a Python call costs more in per-operator
// dispatch than in arithmetic (benchmarks/sampling_overhead.py); here the operators per block are 4 addmm and
// 1 gelu. fp32, CPU, contiguous tensors (the Python side checks this); single-threaded loops (the products use
// ATen's threads).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kLanes = 8;  // partial sums per reduction: lets the compiler vectorize the loops below

// sum of a[j] * b[j], j < n, in kLanes partial sums
inline float dot(const float* a, const float* b, int64_t n) {
  float part[kLanes] = {0.f};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += a[j + l] * b[j + l];
  float total = 0.f;
  for (; j < n; ++j) total += a[j] * b[j];
  for (int64_t l = 0; l < kLanes; ++l) total += part[l];
  return total;
}

// sum of (a[j] - c)^2, j < n, in kLanes partial sums (c = 0: the plain sum of a is dot(a, ones))
inline float centered_squares(const float* a, float c, int64_t n) {
  float part[kLanes] = {0.f};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += (a[j + l] - c) * (a[j + l] - c);
  float total = 0.f;
  for (; j < n; ++j) total += (a[j] - c) * (a[j] - c);
  for (int64_t l = 0; l < kLanes; ++l) total += part[l];
  return total;
}

inline float row_sum(const float* a, int64_t n) {
  float part[kLanes] = {0.f};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += a[j + l];
  float total = 0.f;
  for (; j < n; ++j) total += a[j];
  for (int64_t l = 0; l < kLanes; ++l) total += part[l];
  return total;
}

// y[r] = LayerNorm(x[r]) * scale[r] + shift[r] for the rows r = b * T + t (LayerNorm without affine, biased
// variance as torch's; the modulation row of (b, t) starts at mods + b * mod_b + t * mod_t).
void ln_modulate(const float* x, float* y, const float* mods, int64_t B, int64_t T, int64_t W, int64_t mod_b,
                 int64_t mod_t, int64_t shift_off, int64_t scale_off, double eps) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = x + (b * T + t) * W;
      float* yr = y + (b * T + t) * W;
      const float* shift = mods + b * mod_b + t * mod_t + shift_off;
      const float* scale = mods + b * mod_b + t * mod_t + scale_off;
      const float mu = row_sum(xr, W) / static_cast<float>(W);
      const float var = centered_squares(xr, mu, W) / static_cast<float>(W);
      const float rstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + eps));
      for (int64_t j = 0; j < W; ++j) yr[j] = (xr[j] - mu) * rstd * scale[j] + shift[j];
    }
  }
}

// h[r] += gate[r] * o[r] (the adaLN-zero gated residual).
void gated_add(float* h, const float* o, const float* mods, int64_t B, int64_t T, int64_t W, int64_t mod_b,
               int64_t mod_t, int64_t gate_off) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      float* hr = h + (b * T + t) * W;
      const float* orow = o + (b * T + t) * W;
      const float* gate = mods + b * mod_b + t * mod_t + gate_off;
      for (int64_t j = 0; j < W; ++j) hr[j] += gate[j] * orow[j];
    }
  }
}

// The flat token encoder / decoder MLP: fc2(silu(fc1(x))) with w = {fc1 weight (out, in), fc1 bias, fc2 weight,
// fc2 bias} (nn.Linear layout: the products take transposed views).
torch::Tensor flat_mlp(const torch::Tensor& x, const std::vector<torch::Tensor>& w) {
  torch::Tensor hidden = torch::addmm(w[1], x, w[0].t());
  torch::silu_(hidden);
  return torch::addmm(w[3], hidden, w[2].t());
}

}  // namespace

// Every block over T new tokens. x: (B, T, W) hidden states, or with `enc` (the flat encoder's MLP weights, see
// flat_mlp) the tokens (B, T, D) to encode first; mods: (n, T, depth, 6, W) with n = 1 (shared by the batch) or B,
// the parts (shift, 1 + scale, gate) before attention, then before the MLP; rot: (T, hd/2, 2) RoPE (cos, sin) of
// the tokens' positions; keys/values: per block the KVStore buffers (B, H, capacity, hd), the cache at
// [start, start + L), the new tokens written after it; weights: per block qkv, proj, fc1, fc2 transposed (in,
// out); biases: theirs. Token t attends to the cache and the new tokens <= t, except that the tokens from
// n_commit on do not see the first `drop` cached ones (CausalTransformer._commit_mask). Returns the new hidden
// states (B, T, W), or with `dec` (the flat decoder's MLP weights) and out_mod ((n, T, 2W): shift, 1 + scale of
// the output LayerNorm) the prediction (B, T - n_commit, D') of the tokens from n_commit on.
torch::Tensor fused_pass(torch::Tensor x, std::vector<torch::Tensor> enc, torch::Tensor mods, torch::Tensor rot,
                         std::vector<torch::Tensor> keys, std::vector<torch::Tensor> values, int64_t start, int64_t L,
                         int64_t n_commit, int64_t drop, std::vector<torch::Tensor> weights,
                         std::vector<torch::Tensor> biases, int64_t heads, double eps, std::vector<torch::Tensor> dec,
                         torch::Tensor out_mod) {
  torch::NoGradGuard no_grad;
  const int64_t B = x.size(0), T = x.size(1);
  torch::Tensor h = enc.empty() ? x : flat_mlp(x.reshape({B * T, x.size(2)}), enc).view({B, T, -1});
  const int64_t W = h.size(2), depth = static_cast<int64_t>(keys.size());
  const int64_t H = heads, hd = W / heads, half = hd / 2, cap = keys[0].size(2);
  const int64_t n = mods.size(0);
  const int64_t mod_t = depth * 6 * W, mod_b = n == 1 ? 0 : T * mod_t;
  const float att_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  torch::Tensor out = enc.empty() ? h.clone() : h.contiguous();  // (B, T, W), updated in place block by block
  torch::Tensor xn = torch::empty({B * T, W}, h.options());  // LayerNorm + modulation
  torch::Tensor att = torch::empty({B * T, W}, h.options());
  std::vector<float> q(static_cast<size_t>(B * T * W)), scores(static_cast<size_t>(L + T));
  float* hp = out.data_ptr<float>();
  const float* rp = rot.data_ptr<float>();
  for (int64_t i = 0; i < depth; ++i) {
    const float* mp = mods.data_ptr<float>() + i * 6 * W;
    ln_modulate(hp, xn.data_ptr<float>(), mp, B, T, W, mod_b, mod_t, 0, W, eps);
    torch::Tensor qkv = torch::addmm(biases[4 * i], xn, weights[4 * i]);  // (B * T, 3W)
    const float* qp = qkv.data_ptr<float>();
    float* kb = keys[i].data_ptr<float>();
    float* vb = values[i].data_ptr<float>();
    // rotate q and k, write k and v after the cache
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        const float* row = qp + (b * T + t) * 3 * W;
        const float* r = rp + t * half * 2;
        for (int64_t a = 0; a < H; ++a) {
          const float* qs = row + a * hd;
          const float* ks = row + W + a * hd;
          const float* vs = row + 2 * W + a * hd;
          float* qd = q.data() + (b * T + t) * W + a * hd;
          float* kd = kb + ((b * H + a) * cap + start + L + t) * hd;
          float* vd = vb + ((b * H + a) * cap + start + L + t) * hd;
          for (int64_t p = 0; p < half; ++p) {
            const float c = r[2 * p], s = r[2 * p + 1];
            qd[2 * p] = qs[2 * p] * c - qs[2 * p + 1] * s;
            qd[2 * p + 1] = qs[2 * p] * s + qs[2 * p + 1] * c;
            kd[2 * p] = ks[2 * p] * c - ks[2 * p + 1] * s;
            kd[2 * p + 1] = ks[2 * p] * s + ks[2 * p + 1] * c;
          }
          std::copy(vs, vs + hd, vd);
        }
      }
    }
    // attention of each new token to the cache and the new tokens up to itself
    float* ap = att.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t a = 0; a < H; ++a) {
        const float* kh = kb + (b * H + a) * cap * hd;
        const float* vh = vb + (b * H + a) * cap * hd;
        for (int64_t t = 0; t < T; ++t) {
          const int64_t lo = start + (t >= n_commit ? drop : 0), hi = start + L + t;  // keys [lo, hi]
          const float* qd = q.data() + (b * T + t) * W + a * hd;
          float top = -std::numeric_limits<float>::infinity();
          for (int64_t j = lo; j <= hi; ++j) {
            scores[j - lo] = dot(qd, kh + j * hd, hd) * att_scale;
            top = std::max(top, scores[j - lo]);
          }
          float total = 0.f;
          for (int64_t j = lo; j <= hi; ++j) total += (scores[j - lo] = std::exp(scores[j - lo] - top));
          float* od = ap + (b * T + t) * W + a * hd;
          std::fill(od, od + hd, 0.f);
          for (int64_t j = lo; j <= hi; ++j) {
            const float p = scores[j - lo] / total;
            for (int64_t d = 0; d < hd; ++d) od[d] += p * vh[j * hd + d];
          }
        }
      }
    }
    torch::Tensor o = torch::addmm(biases[4 * i + 1], att, weights[4 * i + 1]);
    gated_add(hp, o.data_ptr<float>(), mp, B, T, W, mod_b, mod_t, 2 * W);
    ln_modulate(hp, xn.data_ptr<float>(), mp, B, T, W, mod_b, mod_t, 3 * W, 4 * W, eps);
    torch::Tensor hidden = torch::addmm(biases[4 * i + 2], xn, weights[4 * i + 2]);
    torch::gelu_(hidden, "tanh");
    o = torch::addmm(biases[4 * i + 3], hidden, weights[4 * i + 3]);
    gated_add(hp, o.data_ptr<float>(), mp, B, T, W, mod_b, mod_t, 5 * W);
  }
  if (dec.empty()) return out;
  // the output LayerNorm + modulation of the predicted tokens, then the decoder
  const int64_t P = T - n_commit;
  torch::Tensor last = out.narrow(1, n_commit, P).contiguous();  // (B, P, W)
  torch::Tensor om = out_mod.narrow(1, n_commit, P).contiguous();  // (n, P, 2W)
  torch::Tensor y = torch::empty({B * P, W}, h.options());
  ln_modulate(last.data_ptr<float>(), y.data_ptr<float>(), om.data_ptr<float>(), B, P, W, om.size(0) == 1 ? 0 : P * 2 * W,
              2 * W, 0, W, eps);
  return flat_mlp(y, dec).view({B, P, dec[2].size(0)});  // (P may be 0: no -1)
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_pass", &fused_pass, "every block of dforce's CausalTransformer over new tokens (inference)");
}
