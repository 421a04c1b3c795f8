#include "models/compressor_file.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"
#include "models/safetensors.h"

namespace kvfold {
namespace {

class Fields {
 public:
  Fields(const std::string& path, const std::map<std::string, std::string>& m)
      : path_(path), m_(m) {}

  absl::StatusOr<std::string> Text(const std::string& key) const {
    auto it = m_.find(key);
    if (it == m_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": the metadata has no \"", key, "\" (not a kvfold compressor file?)"));
    }
    return it->second;
  }
  absl::StatusOr<int64_t> Int(const std::string& key) const {
    KVFOLD_ASSIGN_OR_RETURN(std::string text, Text(key));
    int64_t v;
    if (!absl::SimpleAtoi(text, &v)) return Bad(key, text, "an integer");
    return v;
  }
  absl::StatusOr<double> Real(const std::string& key) const {
    KVFOLD_ASSIGN_OR_RETURN(std::string text, Text(key));
    double v;
    if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) return Bad(key, text, "a number");
    return v;
  }

 private:
  absl::Status Bad(const std::string& key, const std::string& text,
                   const std::string& want) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": metadata \"", key, "\" is \"",
                                                   text, "\", not ", want));
  }
  const std::string& path_;
  const std::map<std::string, std::string>& m_;
};

absl::StatusOr<std::shared_ptr<const LoCoCoParams>> ReadLoCoCo(
    const SafetensorsFile& file, const Fields& f, int64_t num_layers) {
  auto p = std::make_shared<LoCoCoParams>();
  KVFOLD_ASSIGN_OR_RETURN(p->slots, f.Int("cache_slots"));
  KVFOLD_ASSIGN_OR_RETURN(p->compressed_slots, f.Int("compressed_slots"));
  KVFOLD_ASSIGN_OR_RETURN(p->kernel, f.Int("kernel_size"));
  KVFOLD_ASSIGN_OR_RETURN(p->hh_keep_rate, f.Real("hh_keep_rate"));
  KVFOLD_ASSIGN_OR_RETURN(p->buffer, f.Int("buffer"));
  KVFOLD_ASSIGN_OR_RETURN(p->head_dim, f.Int("model.head_dim"));
  KVFOLD_ASSIGN_OR_RETURN(p->variant, f.Text("variant"));
  const std::string& path = file.path();
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (p->hh_keep_rate < 0 || p->hh_keep_rate >= 1) {
    return bad(absl::StrCat("hh_keep_rate must be in [0, 1), got ", p->hh_keep_rate));
  }
  // The same rounding as the calibration code: int(M * (1 - rate)).
  const auto expected = static_cast<int64_t>(double(p->slots) * (1.0 - p->hh_keep_rate));
  if (p->compressed_slots != expected) {
    return bad(absl::StrCat("compressed_slots ", p->compressed_slots, " is not cache_slots ",
                            p->slots, " * (1 - hh_keep_rate ", p->hh_keep_rate, ") = ",
                            expected));
  }
  // The sizes, before any tensor is read with them.
  if (absl::Status s = p->Validate(); !s.ok()) return bad(std::string(s.message()));
  if (num_layers < 1) return bad("model.num_hidden_layers must be >= 1");
  const int64_t mc = p->compressed_slots, in = 2 * p->head_dim;
  for (int64_t l = 0; l < num_layers; ++l) {
    const std::string prefix = absl::StrCat("lococo.layers.", l, ".");
    LoCoCoLayer w;
    KVFOLD_ASSIGN_OR_RETURN(w.conv_weight,
                            file.LoadF32(prefix + "conv.weight", {mc, in, p->kernel}));
    KVFOLD_ASSIGN_OR_RETURN(w.conv_bias, file.LoadF32(prefix + "conv.bias", {mc}));
    KVFOLD_ASSIGN_OR_RETURN(Tensor alpha, file.LoadF32(prefix + "alpha", {1}));
    w.alpha = alpha.as<float>()[0];
    for (const Tensor* t : {&w.conv_weight, &w.conv_bias, &alpha}) {
      const float* x = t->as<float>();
      for (int64_t i = 0; i < t->numel(); ++i) {
        if (!std::isfinite(x[i])) {
          return bad(absl::StrCat("layer ", l, " holds a non-finite value (", x[i], ")"));
        }
      }
    }
    p->layers.push_back(std::move(w));
  }
  const int64_t expected_tensors = 3 * num_layers;
  if (static_cast<int64_t>(file.tensors().size()) != expected_tensors) {
    return bad(absl::StrCat("holds ", file.tensors().size(), " tensors; ", num_layers,
                            " layers of LoCoCo have ", expected_tensors));
  }
  return std::shared_ptr<const LoCoCoParams>(std::move(p));
}

absl::StatusOr<std::vector<double>> ParseBudgets(const std::string& path,
                                                 const std::string& text) {
  std::vector<double> out;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    double v;
    if (!absl::SimpleAtod(item, &v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": rank_budgets item \"", item, "\" is not a number"));
    }
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const MatryoshkaParams>> ReadMatryoshka(
    const SafetensorsFile& file, const Fields& f, const CalibratedFor& m) {
  const std::string& path = file.path();
  auto p = std::make_shared<MatryoshkaParams>();
  p->num_layers = m.num_layers;
  p->kv_heads = m.num_kv_heads;
  p->head_dim = m.head_dim;
  // Sizes before any tensor is read with them (a hostile header could
  // otherwise ask for huge allocations).
  if (m.num_layers < 1 || m.num_layers > 4096 || m.num_kv_heads < 1 ||
      m.num_kv_heads > 4096 || m.head_dim < 1 || m.head_dim > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": model sizes out of range (layers ", m.num_layers, ", KV heads ",
        m.num_kv_heads, ", head_dim ", m.head_dim, ")"));
  }
  // The tensors the sizes imply must be there before anything is sized by
  // them (a hostile header could otherwise ask for huge allocations).
  const size_t expected_tensors = 4 * m.num_layers;
  if (file.tensors().size() != expected_tensors) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": holds ", file.tensors().size(), " tensors; ", m.num_layers,
        " layers of MatryoshkaKV projections have ", expected_tensors));
  }
  KVFOLD_ASSIGN_OR_RETURN(std::string budgets, f.Text("rank_budgets"));
  KVFOLD_ASSIGN_OR_RETURN(p->budgets, ParseBudgets(path, budgets));
  if (p->budgets.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": more than 256 rank_budgets"));
  }
  for (size_t a = 0; a < p->budgets.size(); ++a) {
    const std::string key = absl::StrCat("ranks.", a);
    KVFOLD_ASSIGN_OR_RETURN(std::string text, f.Text(key));
    std::vector<int32_t> ranks;
    for (absl::string_view item : absl::StrSplit(text, ',')) {
      int32_t r;
      if (!absl::SimpleAtoi(item, &r)) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": ", key, " item \"", item, "\" is not an integer"));
      }
      ranks.push_back(r);
    }
    p->ranks.push_back(std::move(ranks));
  }
  const int64_t h = m.num_kv_heads, d = m.head_dim;
  auto copy = [](const Tensor& t, int64_t head, int64_t n) {
    const float* x = t.as<float>() + head * n;
    return std::vector<float>(x, x + n);
  };
  for (int64_t l = 0; l < m.num_layers; ++l) {
    const std::string prefix = absl::StrCat("matryoshka.layers.", l, ".");
    KVFOLD_ASSIGN_OR_RETURN(Tensor kb, file.LoadF32(prefix + "key_basis", {h, d, d}));
    if (l == 0) p->heads.resize(m.num_layers * h);  // the first tensor is really there
    KVFOLD_ASSIGN_OR_RETURN(Tensor vb, file.LoadF32(prefix + "value_basis", {h, d, d}));
    KVFOLD_ASSIGN_OR_RETURN(Tensor km, file.LoadF32(prefix + "key_mean", {h, d}));
    KVFOLD_ASSIGN_OR_RETURN(Tensor vm, file.LoadF32(prefix + "value_mean", {h, d}));
    for (int64_t g = 0; g < h; ++g) {
      MatryoshkaParams::Head& x = p->heads[l * h + g];
      x.key_basis = copy(kb, g, d * d);
      x.value_basis = copy(vb, g, d * d);
      x.key_mean = copy(km, g, d);
      x.value_mean = copy(vm, g, d);
    }
  }
  if (absl::Status st = p->Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  return std::shared_ptr<const MatryoshkaParams>(std::move(p));
}

}  // namespace

absl::Status SaveMatryoshkaFile(const std::string& path, const MatryoshkaParams& p,
                                const CalibratedFor& m,
                                const std::map<std::string, std::string>& notes) {
  KVFOLD_RETURN_IF_ERROR(p.Validate());
  std::map<std::string, std::string> meta = notes;
  meta["format"] = "kvfold-compressor";
  meta["format_version"] = "1";
  meta["method"] = "matryoshka";
  meta["model.name"] = m.name;
  meta["model.num_hidden_layers"] = absl::StrCat(m.num_layers);
  meta["model.hidden_size"] = absl::StrCat(m.hidden_size);
  meta["model.num_attention_heads"] = absl::StrCat(m.num_heads);
  meta["model.num_key_value_heads"] = absl::StrCat(m.num_kv_heads);
  meta["model.head_dim"] = absl::StrCat(m.head_dim);
  meta["model.vocab_size"] = absl::StrCat(m.vocab_size);
  meta["rank_budgets"] = absl::StrJoin(p.budgets, ",", [](std::string* out, double b) {
    absl::StrAppend(out, absl::StrFormat("%.17g", b));  // reads back exactly
  });
  for (size_t a = 0; a < p.ranks.size(); ++a) {
    meta[absl::StrCat("ranks.", a)] = absl::StrJoin(p.ranks[a], ",");
  }
  const int64_t h = p.kv_heads, d = p.head_dim;
  std::vector<NamedTensor> tensors;
  for (int64_t l = 0; l < p.num_layers; ++l) {
    const std::string prefix = absl::StrCat("matryoshka.layers.", l, ".");
    NamedTensor kb{prefix + "key_basis", {h, d, d}, {}}, vb{prefix + "value_basis", {h, d, d}, {}};
    NamedTensor km{prefix + "key_mean", {h, d}, {}}, vm{prefix + "value_mean", {h, d}, {}};
    for (int64_t g = 0; g < h; ++g) {
      const MatryoshkaParams::Head& x = p.head(l, g);
      kb.values.insert(kb.values.end(), x.key_basis.begin(), x.key_basis.end());
      vb.values.insert(vb.values.end(), x.value_basis.begin(), x.value_basis.end());
      km.values.insert(km.values.end(), x.key_mean.begin(), x.key_mean.end());
      vm.values.insert(vm.values.end(), x.value_mean.begin(), x.value_mean.end());
    }
    for (NamedTensor* t : {&kb, &vb, &km, &vm}) tensors.push_back(std::move(*t));
  }
  return WriteSafetensorsF32(path, tensors, meta);
}

absl::StatusOr<std::shared_ptr<const CompressorFile>> LoadCompressorFile(
    const std::string& path) {
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                          SafetensorsFile::Open(path));
  auto out = std::make_shared<CompressorFile>();
  out->path = path;
  out->metadata = file->metadata();
  const Fields f(path, out->metadata);
  KVFOLD_ASSIGN_OR_RETURN(std::string format, f.Text("format"));
  if (format != "kvfold-compressor") {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": format is \"", format, "\", not a kvfold compressor file"));
  }
  KVFOLD_ASSIGN_OR_RETURN(int64_t version, f.Int("format_version"));
  if (version != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": format_version ", version, " is not supported (this kvfold reads 1)"));
  }
  CalibratedFor& m = out->model;
  KVFOLD_ASSIGN_OR_RETURN(m.name, f.Text("model.name"));
  KVFOLD_ASSIGN_OR_RETURN(m.num_layers, f.Int("model.num_hidden_layers"));
  KVFOLD_ASSIGN_OR_RETURN(m.hidden_size, f.Int("model.hidden_size"));
  KVFOLD_ASSIGN_OR_RETURN(m.num_heads, f.Int("model.num_attention_heads"));
  KVFOLD_ASSIGN_OR_RETURN(m.num_kv_heads, f.Int("model.num_key_value_heads"));
  KVFOLD_ASSIGN_OR_RETURN(m.head_dim, f.Int("model.head_dim"));
  KVFOLD_ASSIGN_OR_RETURN(m.vocab_size, f.Int("model.vocab_size"));
  KVFOLD_ASSIGN_OR_RETURN(out->method, f.Text("method"));
  if (out->method == "lococo") {
    KVFOLD_ASSIGN_OR_RETURN(out->lococo, ReadLoCoCo(*file, f, m.num_layers));
  } else if (out->method == "matryoshka") {
    KVFOLD_ASSIGN_OR_RETURN(out->matryoshka, ReadMatryoshka(*file, f, m));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": method \"", out->method,
        "\" is not one kvfold learns (lococo, matryoshka)"));
  }
  return std::shared_ptr<const CompressorFile>(std::move(out));
}

absl::Status CheckCompressorModel(const CompressorFile& file,
                                  const ModelConfig& c) {
  const CalibratedFor& m = file.model;
  if (m.num_layers == c.num_layers && m.hidden_size == c.hidden_size &&
      m.num_heads == c.num_heads && m.num_kv_heads == c.num_kv_heads &&
      m.head_dim == c.head_dim && m.vocab_size == c.vocab_size) {
    return absl::OkStatus();
  }
  auto shape = [](int64_t layers, int64_t hidden, int64_t heads, int64_t kv,
                  int64_t head_dim, int64_t vocab) {
    return absl::StrCat(layers, " layers, hidden ", hidden, ", ", heads, " heads / ", kv,
                        " KV heads of ", head_dim, ", vocabulary ", vocab);
  };
  return absl::InvalidArgumentError(absl::StrCat(
      file.path, " was calibrated for the model \"", m.name, "\" (",
      shape(m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim,
            m.vocab_size),
      ") but --model has ",
      shape(c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
            c.vocab_size),
      ": calibrate one for this model (",
      file.method == "matryoshka" ? "kvfold calibrate --method=pca"
                                  : "tools/calibrate/calibrate.py",
      " --model=...)"));
}

}  // namespace kvfold
