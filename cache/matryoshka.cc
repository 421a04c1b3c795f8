#include "cache/matryoshka.h"

#include <cblas.h>

#include <cmath>
#include <mutex>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cache/kv_cache.h"
#include "kernels/status_macros.h"
#include "kernels/thread_pool.h"

namespace kvfold {

namespace {

constexpr double kOrthoTolerance = 1e-4;

// max |U^T U - I| of a [d, d] row-major U.
double OrthoError(const std::vector<float>& u, int64_t d) {
  double worst = 0;
  for (int64_t a = 0; a < d; ++a) {
    for (int64_t b = a; b < d; ++b) {
      double dot = 0;
      for (int64_t i = 0; i < d; ++i) dot += double(u[i * d + a]) * u[i * d + b];
      worst = std::max(worst, std::abs(dot - (a == b ? 1.0 : 0.0)));
    }
  }
  return worst;
}

bool AllFinite(const std::vector<float>& x) {
  for (float v : x) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// The kept basis vectors (the first r columns of u) as rows, and the part
// of `mean` outside their span.
void KeepRank(const std::vector<float>& u, const std::vector<float>& mean, int64_t d,
              int64_t r, std::vector<float>& rows, std::vector<float>& offset) {
  rows.assign(r * d, 0.0f);
  std::vector<double> off(mean.begin(), mean.end());
  for (int64_t j = 0; j < r; ++j) {
    double along = 0;
    for (int64_t i = 0; i < d; ++i) {
      rows[j * d + i] = u[i * d + j];
      along += double(mean[i]) * u[i * d + j];
    }
    for (int64_t i = 0; i < d; ++i) off[i] -= along * u[i * d + j];
  }
  offset.assign(off.begin(), off.end());
}

}  // namespace

MatryoshkaParams RandomMatryoshka(int64_t num_layers, int64_t kv_heads, int64_t d,
                                  const std::vector<double>& budgets, float mean_scale,
                                  uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto orthogonal = [&]() {
    std::vector<double> u(d * d);
    for (int64_t j = 0; j < d; ++j) {  // column j, orthogonalised twice
      std::vector<double> c(d);
      for (double& x : c) x = normal(rng);
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t p = 0; p < j; ++p) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += c[i] * u[i * d + p];
          for (int64_t i = 0; i < d; ++i) c[i] -= dot * u[i * d + p];
        }
      }
      double norm = 0;
      for (double x : c) norm += x * x;
      for (int64_t i = 0; i < d; ++i) u[i * d + j] = c[i] / std::sqrt(norm);
    }
    return std::vector<float>(u.begin(), u.end());
  };
  auto mean = [&]() {
    std::vector<float> m(d);
    for (float& x : m) x = static_cast<float>(mean_scale * normal(rng));
    return m;
  };
  MatryoshkaParams p;
  p.num_layers = num_layers;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  for (int64_t i = 0; i < num_layers * kv_heads; ++i) {
    MatryoshkaParams::Head h;
    h.key_basis = orthogonal();
    h.value_basis = orthogonal();
    h.key_mean = mean();
    h.value_mean = mean();
    p.heads.push_back(std::move(h));
  }
  for (double b : budgets) {
    p.budgets.push_back(b);
    const auto r = static_cast<int32_t>(std::max<double>(1, std::floor(b * d)));
    p.ranks.emplace_back(2 * num_layers * kv_heads, r);
  }
  return p;
}

double MatryoshkaParams::Fraction(int a) const {
  double sum = 0;
  for (int32_t r : ranks[a]) sum += r;
  return sum / (2.0 * num_layers * kv_heads * head_dim);
}

std::string MatryoshkaParams::BudgetList() const {
  return absl::StrJoin(budgets, ", ", [](std::string* out, double b) {
    absl::StrAppend(out, absl::StrFormat("%.10g", b));
  });
}

absl::Status MatryoshkaParams::Validate() const {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (num_layers < 1 || kv_heads < 1 || head_dim < 1) {
    return bad(absl::StrCat("matryoshka: layers, KV heads and head_dim must be >= 1, got ",
                            num_layers, ", ", kv_heads, ", ", head_dim));
  }
  if (static_cast<int64_t>(heads.size()) != num_layers * kv_heads) {
    return bad(absl::StrCat("matryoshka: ", heads.size(), " heads for ", num_layers,
                            " layers x ", kv_heads, " KV heads"));
  }
  const size_t dd = head_dim * head_dim;
  for (int64_t l = 0; l < num_layers; ++l) {
    for (int64_t h = 0; h < kv_heads; ++h) {
      const Head& x = head(l, h);
      const std::string where = absl::StrCat("matryoshka layer ", l, " KV head ", h, ": ");
      if (x.key_basis.size() != dd || x.value_basis.size() != dd ||
          x.key_mean.size() != size_t(head_dim) || x.value_mean.size() != size_t(head_dim)) {
        return bad(where + "bases must be [head_dim, head_dim] and means [head_dim]");
      }
      for (const auto* v : {&x.key_basis, &x.value_basis, &x.key_mean, &x.value_mean}) {
        if (!AllFinite(*v)) return bad(where + "holds a non-finite value");
      }
      const double ek = OrthoError(x.key_basis, head_dim);
      const double ev = OrthoError(x.value_basis, head_dim);
      if (ek > kOrthoTolerance || ev > kOrthoTolerance) {
        return bad(absl::StrCat(where, "the ", ek > kOrthoTolerance ? "key" : "value",
                                " basis is not orthonormal (max |U^T U - I| = ",
                                std::max(ek, ev), " > ", kOrthoTolerance, ")"));
      }
    }
  }
  if (budgets.empty() || budgets.size() != ranks.size()) {
    return bad(absl::StrCat("matryoshka: ", budgets.size(), " budgets and ", ranks.size(),
                            " rank allocations (need as many, at least one)"));
  }
  const size_t count = 2 * num_layers * kv_heads;
  for (size_t a = 0; a < budgets.size(); ++a) {
    const std::string where = absl::StrCat("matryoshka allocation ", a, " (budget ",
                                           budgets[a], "): ");
    if (!(budgets[a] > 0 && budgets[a] <= 1)) return bad(where + "budget must be in (0, 1]");
    if (a > 0 && !(budgets[a] < budgets[a - 1])) {
      return bad(where + "budgets must be strictly descending");
    }
    if (ranks[a].size() != count) {
      return bad(absl::StrCat(where, ranks[a].size(), " ranks, need ", count,
                              " (2 per layer and KV head)"));
    }
    for (size_t i = 0; i < count; ++i) {
      const int32_t r = ranks[a][i];
      if (r < 1 || r > head_dim) {
        const size_t lh = i / 2;
        return bad(absl::StrCat(where, i % 2 ? "value" : "key", " rank of layer ",
                                lh / kv_heads, " KV head ", lh % kv_heads, " is ", r,
                                ", not in [1, head_dim ", head_dim, "]"));
      }
    }
    if (Fraction(a) > budgets[a] + 1e-9) {
      return bad(absl::StrCat(where, "its ranks keep ", Fraction(a),
                              " of the features, more than the budget"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> MatryoshkaParams::Allocation(double budget) const {
  for (size_t a = 0; a < budgets.size(); ++a) {
    if (std::abs(budgets[a] - budget) <= 1e-6) return static_cast<int>(a);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "no rank allocation for feature budget ", budget, "; the compressor stores ",
      BudgetList()));
}

absl::StatusOr<std::shared_ptr<const FeatureLayout>> FeatureLayout::Make(
    const MatryoshkaParams& p, int a, int64_t head_begin, int64_t heads) {
  if (a < 0 || a >= static_cast<int>(p.ranks.size())) {
    return absl::InvalidArgumentError(absl::StrCat("no rank allocation ", a));
  }
  if (head_begin < 0 || heads < 1 || head_begin + heads > p.kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV heads [", head_begin, ", ", head_begin + heads, ") outside the compressor's ",
        p.kv_heads));
  }
  auto f = std::make_shared<FeatureLayout>();
  f->layers_ = p.num_layers;
  f->heads_ = heads;
  f->head_begin_ = head_begin;
  f->d_ = p.head_dim;
  f->budget_ = p.budgets[a];
  for (int64_t l = 0; l < p.num_layers; ++l) {
    for (int64_t h = head_begin; h < head_begin + heads; ++h) {
      const MatryoshkaParams::Head& src = p.head(l, h);
      const size_t i = 2 * (l * p.kv_heads + h);
      ProjectedHead x;
      x.key_dim = p.ranks[a][i];
      x.value_dim = p.ranks[a][i + 1];
      KeepRank(src.key_basis, src.key_mean, p.head_dim, x.key_dim, x.key_rows,
               x.key_offset);
      KeepRank(src.value_basis, src.value_mean, p.head_dim, x.value_dim, x.value_rows,
               x.value_offset);
      double sq = 0;
      for (float v : x.key_offset) sq += double(v) * v;
      x.key_offset_sq = static_cast<float>(sq);
      f->heads_data_.push_back(std::move(x));
    }
  }
  return std::shared_ptr<const FeatureLayout>(std::move(f));
}

void FeatureLayout::Project(const float* rows, int64_t r, int64_t d, const float* x,
                            int64_t x_stride, int64_t n, float* out, int64_t out_stride) {
  if (n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r, d, 1.0f, x, x_stride, rows,
              d, 0.0f, out, out_stride);
}

void FeatureLayout::Reconstruct(const float* rows, int64_t r, int64_t d,
                                const float* offset, const float* y, int64_t y_stride,
                                int64_t n, float* out, int64_t out_stride) {
  for (int64_t t = 0; t < n; ++t) std::copy(offset, offset + d, out + t * out_stride);
  if (n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, r, 1.0f, y, y_stride, rows,
              d, 1.0f, out, out_stride);
}

absl::Status ProjectedAttention(const Stream& s, const FeatureLayout& layout, int layer,
                                const LayerView& view, const AttentionArgs& a,
                                const FoldedLayout* folded) {
  if (s.device.kind != Device::Kind::kCpu) {
    return absl::UnimplementedError(
        "MatryoshkaKV projections run on the CPU backend only so far");
  }
  if (view.key_offsets == nullptr || a.head_dim != layout.head_dim() ||
      a.kv_heads != layout.kv_heads() || a.q_heads % a.kv_heads != 0) {
    return absl::InternalError("projected attention: cache and layout disagree");
  }
  const int64_t n = a.num_queries, d = a.head_dim, group = a.q_heads / a.kv_heads;
  const int64_t q_row = a.q_heads * d;
  // One query head per task, in parallel over all of them (a KV head's
  // group alone would leave cores idle); each attends single-threaded.
  std::vector<float> head_cols(a.col_sums != nullptr ? a.q_heads * a.num_keys : 0);
  std::mutex mu;
  absl::Status status;
  auto run = [&](int64_t h0, int64_t h1) {
    Stream inner;  // the caller's thread only
    inner.device = s.device;
    std::vector<float> qt, ot, lse;
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t g = h / group;
      const ProjectedHead& p = layout.head(layer, g);
      const int64_t rk = p.key_dim, rv = p.value_dim;
      qt.resize(n * rk);
      ot.resize(n * rv);
      lse.resize(n);
      FeatureLayout::Project(p.key_rows.data(), rk, d, a.q + h * d, q_row, n, qt.data(), rk);
      AttentionArgs b = a;
      b.q = qt.data();
      b.k = view.keys + view.key_offsets[g];
      b.v = view.values + view.value_offsets[g];
      b.out = ot.data();
      b.col_sums = a.col_sums != nullptr ? head_cols.data() + h * a.num_keys : nullptr;
      b.lse = lse.data();
      b.kv_stride = view.stride;
      b.q_heads = 1;
      b.kv_heads = 1;
      b.head_dim = rk;
      b.value_dim = rv;
      if (absl::Status st = Attention(inner, b); !st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (status.ok()) status = st;
        return;
      }
      if (folded == nullptr) {
        FeatureLayout::Reconstruct(p.value_rows.data(), rv, d, p.value_offset.data(),
                                   ot.data(), rv, n, a.out + h * d, q_row);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          std::copy_n(ot.data() + i * rv, rv, a.out + folded->offsets[h] + i * folded->stride);
        }
      }
      if (a.lse == nullptr) continue;
      for (int64_t i = 0; i < n; ++i) {  // + q . mu_perp_k, scaled as the logits
        const float* q = a.q + i * q_row + h * d;
        double dot = 0;
        for (int64_t t = 0; t < d; ++t) dot += double(q[t]) * p.key_offset[t];
        a.lse[h * n + i] = lse[i] + static_cast<float>(a.scale * dot);
      }
    }
  };
  if (s.pool != nullptr) {
    s.pool->ParallelFor(a.q_heads, run);
  } else {
    run(0, a.q_heads);
  }
  KVFOLD_RETURN_IF_ERROR(status);
  if (a.col_sums != nullptr) {  // each KV head sums its group's query heads
    for (int64_t g = 0; g < a.kv_heads; ++g) {
      float* dst = a.col_sums + g * a.num_keys;
      std::fill(dst, dst + a.num_keys, 0.0f);
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const float* src = head_cols.data() + h * a.num_keys;
        for (int64_t j = 0; j < a.num_keys; ++j) dst[j] += src[j];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvfold
