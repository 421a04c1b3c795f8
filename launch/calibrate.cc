// kvfold calibrate --method=pca: MatryoshkaKV projections by PCA of the
// post-RoPE keys and values of every (layer, KV head) over calibration text
// (ALGORITHMS.md 3, the paper's initialisation). The model runs with a full
// cache that also accumulates each head's mean and covariance; each
// covariance's eigenvectors by descending eigenvalue are the basis. Under
// mpirun with --tp=T each rank measures its own KV heads and rank 0 writes
// the file. Trained and adaptive-rank projections start from this file
// (tools/calibrate/matryoshka_calibrate.py).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/prompt.h"
#include "launch/ranks.h"
#include "launch/report.h"
#include "launch/run.h"
#include "models/compressor_file.h"

ABSL_FLAG(std::string, method, "pca",
          "calibrate: pca (training and adaptive ranks: "
          "tools/calibrate/matryoshka_calibrate.py)");
ABSL_FLAG(std::string, rank_budgets, "1,0.75,0.5,0.25",
          "calibrate: feature budgets to store uniform rank allocations for");
ABSL_FLAG(int32_t, rank_granularity, 0,
          "calibrate: ranks are multiples of this (0: head_dim / 8)");

extern "C" void dsyev_(const char* jobz, const char* uplo, const int* n, double* a,
                       const int* lda, double* w, double* work, const int* lwork,
                       int* info);

namespace kvfold {

namespace {

// Running sums of one (layer, KV head)'s keys or values.
struct Moments {
  int64_t count = 0;
  std::vector<double> sum;    // [d]
  std::vector<double> outer;  // [d, d], upper triangle (row-major) filled
};

// Zeroed moments for every (layer, KV head, K|V) of `shape`, index
// (layer * kv_heads + head) * 2 + kv.
std::vector<Moments> NewMoments(const CacheShape& shape) {
  std::vector<Moments> all(2 * shape.num_layers * shape.kv_heads);
  for (Moments& m : all) {
    m.sum.assign(shape.head_dim, 0.0);
    m.outer.assign(shape.head_dim * shape.head_dim, 0.0);
  }
  return all;
}

// A full cache (one sequence) that also adds everything appended to
// `moments` (shared by every sequence).
class MomentsCache : public KvCache {
 public:
  MomentsCache(const CacheShape& shape, std::vector<Moments>& moments)
      : inner_(shape), moments_(moments) {}

  absl::Status Append(int layer, const float* k, const float* v, const int32_t* positions,
                      int64_t n) override {
    const CacheShape& s = inner_.shape();
    const int64_t h = s.kv_heads, d = s.head_dim;
    for (int kv = 0; kv < 2; ++kv) {
      host_.resize(n * h * d);
      KVFOLD_RETURN_IF_ERROR(
          CopyToHost(s.stream, host_.data(), kv == 0 ? k : v, host_.size() * sizeof(float)));
      rows_.resize(n * d);
      for (int64_t g = 0; g < h; ++g) {
        Moments& m = moments(layer, g, kv);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t i = 0; i < d; ++i) {
            const double x = host_[(t * h + g) * d + i];
            rows_[t * d + i] = x;
            m.sum[i] += x;
          }
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0, rows_.data(), d, 1.0,
                    m.outer.data(), d);
        m.count += n;
      }
    }
    return inner_.Append(layer, k, v, positions, n);
  }
  LayerView View(int layer) const override { return inner_.View(layer); }
  int64_t ColumnSumQueries(int64_t) const override { return 0; }
  absl::Status AfterAttention(int, const ChunkStats&) override { return absl::OkStatus(); }
  const CacheShape& shape() const override { return inner_.shape(); }
  int64_t tokens_seen() const override { return inner_.tokens_seen(); }
  int64_t bytes() const override { return inner_.bytes(); }
  std::unique_ptr<KvCache> Clone() const override { return nullptr; }  // never cloned

  Moments& moments(int64_t layer, int64_t head, int kv) {
    return moments_[(layer * inner_.shape().kv_heads + head) * 2 + kv];
  }

 private:
  FullKvCache inner_;
  std::vector<Moments>& moments_;
  std::vector<float> host_;
  std::vector<double> rows_;
};

// The principal axes of `m`: basis [d, d] row-major (column j the j-th
// eigenvector, by descending eigenvalue, its largest component positive),
// the mean [d] and the eigenvalues [d].
absl::Status Principal(const Moments& m, int64_t d, std::vector<float>& basis,
                       std::vector<float>& mean, std::vector<double>& eigen) {
  if (m.count < 2) return absl::InvalidArgumentError("calibrate: fewer than 2 tokens");
  std::vector<double> mu(d), cov(d * d);
  for (int64_t i = 0; i < d; ++i) mu[i] = m.sum[i] / m.count;
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = i; j < d; ++j) {
      const double c = m.outer[i * d + j] / m.count - mu[i] * mu[j];
      cov[i * d + j] = cov[j * d + i] = c;
    }
  }
  // LAPACK: column-major, symmetric, so the row-major copy is the same
  // matrix. On return column j of `cov` is the eigenvector of w[j]
  // (ascending).
  const int n = static_cast<int>(d);
  int lwork = -1, info = 0;
  double query = 0;
  std::vector<double> w(d);
  dsyev_("V", "U", &n, cov.data(), &n, w.data(), &query, &lwork, &info);
  if (info != 0) {
    return absl::InternalError(absl::StrCat("calibrate: dsyev workspace query failed (info ",
                                            info, ")"));
  }
  lwork = static_cast<int>(query);
  std::vector<double> work(std::max(1, lwork));
  dsyev_("V", "U", &n, cov.data(), &n, w.data(), work.data(), &lwork, &info);
  if (info != 0) {
    return absl::InternalError(absl::StrCat("calibrate: dsyev failed (info ", info, ")"));
  }
  basis.assign(d * d, 0.0f);
  eigen.assign(d, 0.0);
  for (int64_t j = 0; j < d; ++j) {
    const double* vec = cov.data() + (d - 1 - j) * d;  // descending
    eigen[j] = std::max(0.0, w[d - 1 - j]);
    int64_t big = 0;
    for (int64_t i = 1; i < d; ++i) {
      if (std::abs(vec[i]) > std::abs(vec[big])) big = i;
    }
    const double sign = vec[big] < 0 ? -1.0 : 1.0;
    for (int64_t i = 0; i < d; ++i) basis[i * d + j] = static_cast<float>(sign * vec[i]);
  }
  mean.assign(mu.begin(), mu.end());
  return absl::OkStatus();
}

// One rank's heads, as text for AllGatherText: begin, count, then per
// (layer, head, K|V) the basis, the mean and the eigenvalues as floats.
std::string Pack(int64_t begin, int64_t count, const std::vector<float>& values) {
  std::string text(2 * sizeof(int64_t) + values.size() * sizeof(float), '\0');
  std::memcpy(text.data(), &begin, sizeof(int64_t));
  std::memcpy(text.data() + sizeof(int64_t), &count, sizeof(int64_t));
  std::memcpy(text.data() + 2 * sizeof(int64_t), values.data(),
              values.size() * sizeof(float));
  return text;
}

absl::StatusOr<std::vector<double>> ParseBudgetsFlag() {
  std::vector<double> budgets;
  for (absl::string_view item : absl::StrSplit(absl::GetFlag(FLAGS_rank_budgets), ',')) {
    double b;
    if (!absl::SimpleAtod(item, &b) || !(b > 0 && b <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--rank_budgets: \"", item, "\" is not a fraction in (0, 1]"));
    }
    if (!budgets.empty() && !(b < budgets.back())) {
      return absl::InvalidArgumentError("--rank_budgets must be strictly descending");
    }
    budgets.push_back(b);
  }
  return budgets;
}

}  // namespace

absl::Status RunCalibrate(Ranks& ranks) {
  const auto start = std::chrono::steady_clock::now();
  EngineOptions options;
  std::vector<Prompt> prompts;
  std::vector<double> budgets;
  const std::string dir = absl::GetFlag(FLAGS_model);
  const std::string output = absl::GetFlag(FLAGS_output);
  std::optional<Tokenizer> tokenizer;
  absl::Status prepared = [&]() -> absl::Status {
    const std::string method = absl::GetFlag(FLAGS_method);
    if (method != "pca") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--method=", method, ": kvfold calibrate does pca; trained projections and "
          "adaptive ranks come from tools/calibrate/matryoshka_calibrate.py"));
    }
    if (output.empty()) return absl::InvalidArgumentError("--output=FILE is required");
    if (!absl::GetFlag(FLAGS_compressor).empty() || absl::GetFlag(FLAGS_feature_budget) != 0) {
      return absl::InvalidArgumentError(
          "calibrate measures the model itself: drop --compressor/--feature_budget");
    }
    KVFOLD_ASSIGN_OR_RETURN(budgets, ParseBudgetsFlag());
    if (absl::GetFlag(FLAGS_rank_granularity) < 0) {
      return absl::InvalidArgumentError("--rank_granularity must be >= 0");
    }
    KVFOLD_ASSIGN_OR_RETURN(options, EngineOptionsFromFlags());
    if (options.cache.policy_case() != CacheConfig::POLICY_NOT_SET &&
        !options.cache.has_full()) {
      return absl::InvalidArgumentError("calibrate runs with the full cache: drop --cache");
    }
    if (!absl::GetFlag(FLAGS_documents_file).empty()) {
      KVFOLD_ASSIGN_OR_RETURN(prompts, DocumentsFromFlags());
    } else {
      KVFOLD_ASSIGN_OR_RETURN(tokenizer, TokenizerFromFlags(dir));
      prompts.resize(1);
      KVFOLD_ASSIGN_OR_RETURN(prompts[0],
                              PromptFromFlags(dir, tokenizer ? &*tokenizer : nullptr));
    }
    return absl::OkStatus();
  }();
  KVFOLD_ASSIGN_OR_RETURN(
      std::unique_ptr<LlamaModel> model,
      StartModel(ranks, prepared, options, prompts, tokenizer ? &*tokenizer : nullptr));
  if (ranks.dp_size() > 1 || ranks.sp() != nullptr) {
    return absl::InvalidArgumentError(
        "calibrate runs on one tensor-parallel group (documents are not split): --tp must "
        "equal the number of ranks and --sp be 1");
  }
  const ModelConfig& c = model->config();
  const int64_t d = c.head_dim;
  int64_t granularity = absl::GetFlag(FLAGS_rank_granularity);
  if (granularity == 0) granularity = std::max<int64_t>(1, d / 8);
  for (double b : budgets) {
    if (std::floor(b * d / granularity) < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--rank_budgets: ", b, " of head_dim ", d, " is less than one step of ",
          "--rank_granularity ", granularity));
    }
  }

  Engine engine(*model, options);
  const CacheShape shape = model->cache_shape(engine.stream());
  std::vector<Moments> moments = NewMoments(shape);
  int64_t tokens = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    MomentsCache doc(shape, moments);  // a fresh cache per sequence
    KVFOLD_RETURN_IF_ERROR(engine.Prefill(prompts[i].document, LogitsFor::kNone, doc, nullptr));
    tokens += static_cast<int64_t>(prompts[i].document.size());
    if (ranks.writer()) {
      std::fprintf(stderr, "calibrate: %zu of %zu sequences, %ld tokens\n", i + 1,
                   prompts.size(), static_cast<long>(tokens));
    }
  }

  // This rank's heads: basis, mean, eigenvalues per (layer, head, K|V).
  const TpSlice& slice = model->tp_slice();
  const int64_t local = slice.kv_heads, per = d * d + 2 * d;
  std::vector<float> packed;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int64_t g = 0; g < local; ++g) {
      for (int kv = 0; kv < 2; ++kv) {
        std::vector<float> basis, mean;
        std::vector<double> eigen;
        if (absl::Status st = Principal(moments[(l * local + g) * 2 + kv], d, basis, mean, eigen);
            !st.ok()) {
          return absl::Status(st.code(), absl::StrCat(st.message(), " (layer ", l, " KV head ",
                                                      slice.kv_head_begin + g,
                                                      kv ? " values)" : " keys)"));
        }
        packed.insert(packed.end(), basis.begin(), basis.end());
        packed.insert(packed.end(), mean.begin(), mean.end());
        for (double e : eigen) packed.push_back(static_cast<float>(e));
      }
    }
  }
  std::vector<std::string> all = {Pack(slice.kv_head_begin, local, packed)};
  if (Communicator* tp = ranks.tp()) {
    KVFOLD_ASSIGN_OR_RETURN(all, AllGatherText(*tp, all[0]));
  }
  if (!ranks.writer()) return absl::OkStatus();

  MatryoshkaParams p;
  p.num_layers = c.num_layers;
  p.kv_heads = c.num_kv_heads;
  p.head_dim = d;
  p.heads.resize(c.num_layers * c.num_kv_heads);
  std::vector<std::vector<double>> eigen(p.heads.size() * 2);
  std::vector<char> filled(c.num_kv_heads, 0);
  for (const std::string& text : all) {
    int64_t begin, count;
    std::memcpy(&begin, text.data(), sizeof(int64_t));
    std::memcpy(&count, text.data() + sizeof(int64_t), sizeof(int64_t));
    const float* x = reinterpret_cast<const float*>(text.data() + 2 * sizeof(int64_t));
    for (int64_t g = 0; g < count; ++g) {
      const int64_t head = begin + g;
      if (filled[head]) continue;  // a replicated KV head: the first rank's
      filled[head] = 1;
      for (int64_t l = 0; l < c.num_layers; ++l) {
        const float* h = x + ((l * count + g) * 2) * per;
        MatryoshkaParams::Head& out = p.heads[l * c.num_kv_heads + head];
        out.key_basis.assign(h, h + d * d);
        out.key_mean.assign(h + d * d, h + d * d + d);
        eigen[2 * (l * c.num_kv_heads + head)].assign(h + d * d + d, h + per);
        h += per;
        out.value_basis.assign(h, h + d * d);
        out.value_mean.assign(h + d * d, h + d * d + d);
        eigen[2 * (l * c.num_kv_heads + head) + 1].assign(h + d * d + d, h + per);
      }
    }
  }
  // Uniform allocations, and the share of the variance each keeps.
  nlohmann::json kept = nlohmann::json::array();
  for (double b : budgets) {
    const int32_t r = static_cast<int32_t>(std::floor(b * d / granularity) * granularity);
    p.budgets.push_back(b);
    p.ranks.emplace_back(p.heads.size() * 2, r);
    double share = 0;
    for (const std::vector<double>& e : eigen) {
      const double total = std::accumulate(e.begin(), e.end(), 0.0);
      share += total > 0 ? std::accumulate(e.begin(), e.begin() + r, 0.0) / total : 1.0;
    }
    kept.push_back({{"budget", b}, {"rank", r}, {"variance_kept", share / eigen.size()}});
  }
  const CalibratedFor model_shape{std::filesystem::path(dir).filename().string(),
                                  c.num_layers, c.hidden_size, c.num_heads,
                                  c.num_kv_heads, d, c.vocab_size};
  const std::string data = absl::GetFlag(FLAGS_documents_file).empty()
                               ? absl::GetFlag(FLAGS_text_file)
                               : absl::GetFlag(FLAGS_documents_file);
  KVFOLD_RETURN_IF_ERROR(SaveMatryoshkaFile(
      output, p, model_shape,
      {{"calibration.method", "pca"},
       {"calibration.data", data},
       {"calibration.tokens", absl::StrCat(tokens)},
       {"calibration.rank_granularity", absl::StrCat(granularity)}}));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  PrintJson({{"output", output},
             {"method", "pca"},
             {"sequences", prompts.size()},
             {"tokens", tokens},
             {"tp", ranks.tp() ? ranks.tp()->size() : 1},
             {"allocations", kept},
             {"seconds", seconds}});
  return absl::OkStatus();
}

}  // namespace kvfold
