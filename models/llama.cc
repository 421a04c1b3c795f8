#include "models/llama.h"

#include <unistd.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "kernels/thread_pool.h"
#include "models/safetensors.h"

namespace kvfold {

// ---- Named weights --------------------------------------------------------

namespace {

// A host f32 tensor as the model holds it: unchanged on the CPU; on a device
// matrices in options.dtype, vectors (norms, biases) in f32.
absl::StatusOr<Tensor> Place(Tensor host, bool matrix, const LoadOptions& o) {
  if (o.device.kind == Device::Kind::kCpu) return host;
  const DType type = matrix ? o.dtype : DType::kF32;
  KVFOLD_ASSIGN_OR_RETURN(Tensor t, Tensor::Allocate(host.shape(), type, o.device));
  Stream s;
  s.device = o.device;
  if (type == DType::kF32) {
    KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, t.data(), host.data(), host.bytes()));
    return t;
  }
  std::vector<uint16_t> bits(host.numel());
  const float* src = host.as<float>();
  ThreadPool pool(0);
  pool.ParallelFor(int64_t(bits.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      bits[i] = type == DType::kBF16 ? F32ToBf16(src[i]) : F32ToF16(src[i]);
    }
  });
  KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, t.data(), bits.data(), bits.size() * 2));
  return t;
}

absl::Status LoadLayer(const WeightStore& store, const ModelConfig& c, int i,
                       const LoadOptions& o, LlamaLayerWeights* l) {
  const std::string p = absl::StrCat("model.layers.", i, ".");
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(),
                inter = c.intermediate_size;
  struct Named {
    const char* name;
    Shape shape;
    Tensor* dst;
  };
  std::vector<Named> required = {
      {"input_layernorm.weight", {h}, &l->attn_norm},
      {"self_attn.q_proj.weight", {q, h}, &l->wq},
      {"self_attn.k_proj.weight", {kv, h}, &l->wk},
      {"self_attn.v_proj.weight", {kv, h}, &l->wv},
      {"self_attn.o_proj.weight", {h, q}, &l->wo},
      {"post_attention_layernorm.weight", {h}, &l->mlp_norm},
      {"mlp.gate_proj.weight", {inter, h}, &l->w_gate},
      {"mlp.up_proj.weight", {inter, h}, &l->w_up},
      {"mlp.down_proj.weight", {h, inter}, &l->w_down},
  };
  if (c.qkv_bias) {
    required.push_back({"self_attn.q_proj.bias", {q}, &l->bq});
    required.push_back({"self_attn.k_proj.bias", {kv}, &l->bk});
    required.push_back({"self_attn.v_proj.bias", {kv}, &l->bv});
  }
  if (c.o_bias) required.push_back({"self_attn.o_proj.bias", {h}, &l->bo});
  for (Named& n : required) {
    KVFOLD_ASSIGN_OR_RETURN(Tensor host, store.LoadF32(p + n.name, n.shape));
    KVFOLD_ASSIGN_OR_RETURN(*n.dst, Place(std::move(host), n.shape.size() == 2, o));
  }
  return absl::OkStatus();
}

// Uniform in [-scale, scale) from splitmix64, a counter-based generator, so
// the tensor is filled in parallel and still depends only on the seed.
void FillRandom(ThreadPool& pool, Tensor& t, uint64_t& seed, float scale) {
  float* p = t.as<float>();
  const uint64_t base = seed;
  seed += 0x632be59bd9b4e019ull;
  pool.ParallelFor(t.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint64_t z = base + uint64_t(i) * 0x9e3779b97f4a7c15ull;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      p[i] = scale * (float(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
    }
  });
}

}  // namespace

absl::Status ValidateLoadOptions(const LoadOptions& o) {
  if (o.device.kind == Device::Kind::kCpu && o.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype=", DTypeName(o.dtype),
        ": the CPU backend holds weights as f32; use --dtype=f32 or a CUDA device"));
  }
  if (o.dtype != DType::kF32 && o.dtype != DType::kBF16 && o.dtype != DType::kF16) {
    return absl::InvalidArgumentError("--dtype must be f32, bf16 or f16");
  }
  return absl::OkStatus();
}

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights,
                       LoadOptions options)
    : config_(std::move(config)),
      w_(std::move(weights)),
      options_(options),
      inv_freq_(RopeInvFreq(config_.rope)) {
  stats_.parameters = config_.NumParameters();
  stats_.weight_bytes = w_.embed.bytes() + w_.final_norm.bytes() + w_.lm_head.bytes();
  for (const LlamaLayerWeights& l : w_.layers) {
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq,
                            &l.bk, &l.bv, &l.bo, &l.mlp_norm, &l.w_gate,
                            &l.w_up, &l.w_down}) {
      stats_.weight_bytes += t->bytes();
    }
  }
}

absl::Status LlamaModel::PlaceTables() {
  if (options_.device.kind == Device::Kind::kCpu) return absl::OkStatus();
  Tensor host({int64_t(inv_freq_.size())}, DType::kF32);
  std::copy(inv_freq_.begin(), inv_freq_.end(), host.as<float>());
  KVFOLD_ASSIGN_OR_RETURN(inv_freq_device_, Place(std::move(host), false, options_));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(
    const std::string& dir, const LoadOptions& options) {
  KVFOLD_RETURN_IF_ERROR(ValidateLoadOptions(options));
  KVFOLD_ASSIGN_OR_RETURN(ModelConfig c,
                          ModelConfig::FromFile(dir + "/config.json"));
  const std::string generation = dir + "/generation_config.json";
  if (::access(generation.c_str(), F_OK) == 0) {
    KVFOLD_RETURN_IF_ERROR(c.MergeGenerationConfig(generation));
  }
  // Weights are held as f32 on the CPU: refuse up front what cannot fit in
  // memory (a device reports its own shortfall at the failing allocation).
  const double need =
      options.device.kind == Device::Kind::kCpu ? 4.0 * c.NumParameters() : 0.0;
  const double have =
      double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (have > 0 && need > have) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: the model needs %.1f GB for its weights as f32, this machine "
        "has %.1f GB of memory",
        dir, need / 1e9, have / 1e9));
  }
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store,
                          WeightStore::Open(dir));
  LlamaWeights w;
  const int64_t h = c.hidden_size;
  const LoadOptions& o = options;
  KVFOLD_ASSIGN_OR_RETURN(
      Tensor embed, store->LoadF32("model.embed_tokens.weight", {c.vocab_size, h}));
  KVFOLD_ASSIGN_OR_RETURN(w.embed, Place(std::move(embed), true, o));
  KVFOLD_ASSIGN_OR_RETURN(Tensor norm, store->LoadF32("model.norm.weight", {h}));
  KVFOLD_ASSIGN_OR_RETURN(w.final_norm, Place(std::move(norm), false, o));
  if (!c.tie_word_embeddings) {
    KVFOLD_ASSIGN_OR_RETURN(
        Tensor head, store->LoadF32("lm_head.weight", {c.vocab_size, h}));
    KVFOLD_ASSIGN_OR_RETURN(w.lm_head, Place(std::move(head), true, o));
  }
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    KVFOLD_RETURN_IF_ERROR(LoadLayer(*store, c, i, o, &w.layers[i]));
  }
  std::unique_ptr<LlamaModel> m(new LlamaModel(std::move(c), std::move(w), o));
  KVFOLD_RETURN_IF_ERROR(m->PlaceTables());
  m->stats_.bytes_read = store->bytes_read();
  return m;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Random(
    const ModelConfig& c, uint64_t seed, const LoadOptions& options) {
  KVFOLD_RETURN_IF_ERROR(ValidateLoadOptions(options));
  uint64_t rng = seed;
  ThreadPool pool(0);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(),
                inter = c.intermediate_size;
  absl::Status status;
  auto make = [&](Shape shape, float scale) {
    const bool matrix = shape.size() == 2;
    Tensor t(std::move(shape), DType::kF32);
    FillRandom(pool, t, rng, scale);
    absl::StatusOr<Tensor> placed = Place(std::move(t), matrix, options);
    if (!placed.ok()) {
      if (status.ok()) status = placed.status();
      return Tensor();
    }
    return std::move(*placed);
  };
  const float ws = 1.0f / std::sqrt(float(h));
  LlamaWeights w;
  w.embed = make({c.vocab_size, h}, 1.0f);
  w.final_norm = make({h}, 1.0f);
  if (!c.tie_word_embeddings) w.lm_head = make({c.vocab_size, h}, ws);
  w.layers.resize(c.num_layers);
  for (LlamaLayerWeights& l : w.layers) {
    l.attn_norm = make({h}, 1.0f);
    l.wq = make({q, h}, ws);
    l.wk = make({kv, h}, ws);
    l.wv = make({kv, h}, ws);
    l.wo = make({h, q}, ws);
    if (c.qkv_bias) {
      l.bq = make({q}, 0.1f);
      l.bk = make({kv}, 0.1f);
      l.bv = make({kv}, 0.1f);
    }
    if (c.o_bias) l.bo = make({h}, 0.1f);
    l.mlp_norm = make({h}, 1.0f);
    l.w_gate = make({inter, h}, ws);
    l.w_up = make({inter, h}, ws);
    l.w_down = make({h, inter}, 1.0f / std::sqrt(float(inter)));
    KVFOLD_RETURN_IF_ERROR(status);
  }
  KVFOLD_RETURN_IF_ERROR(status);
  std::unique_ptr<LlamaModel> m(new LlamaModel(c, std::move(w), options));
  KVFOLD_RETURN_IF_ERROR(m->PlaceTables());
  return m;
}

// ---- Forward pass ---------------------------------------------------------

namespace {

absl::Status Ensure(Tensor& t, Shape shape, Device device,
                    DType type = DType::kF32) {
  if (t.empty() || t.numel() < NumElements(shape)) {
    KVFOLD_ASSIGN_OR_RETURN(t, Tensor::Allocate(std::move(shape), type, device));
  }
  return absl::OkStatus();
}

// y[n, out] = x[n, in] . W^T (+ bias), or y += that when `accumulate`
// (row-parallel outputs added straight into the residual stream).
absl::Status Linear(const Stream& s, const float* x, int64_t n,
                    const Tensor& w, const Tensor& bias, float* y,
                    bool accumulate = false) {
  const int64_t out = w.dim(0), in = w.dim(1);
  KVFOLD_RETURN_IF_ERROR(MatMulNT(s, x, in, w.data(), w.dtype(), in, y, out, n,
                                  out, in, accumulate));
  if (bias.empty()) return absl::OkStatus();
  return AddBias(s, y, bias.as<float>(), n, out);
}

}  // namespace

absl::Status LlamaModel::Attention(const Stream& s, int layer,
                                   const int32_t* positions, int64_t n,
                                   KvCache& cache,
                                   ForwardScratch& sc) const {
  const ModelConfig& c = config_;
  const LlamaLayerWeights& l = w_.layers[layer];
  float* xn = sc.xn.as<float>();
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.wq, l.bq, sc.q.as<float>()));
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.wk, l.bk, sc.k.as<float>()));
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.wv, l.bv, sc.v.as<float>()));
  // Rotation uses the cache's positions (they differ from the absolute ones
  // only under StreamingLLM re-indexing); the cache records absolute ones.
  sc.rope_positions.resize(n);
  cache.RopePositions(layer, positions, n, sc.rope_positions.data());
  const int32_t* rope = sc.rope_positions.data();
  const float* inv_freq = inv_freq_.data();
  if (s.device.kind != Device::Kind::kCpu) {
    // Layers usually share positions: upload (a synchronising copy) only
    // when they change.
    if (sc.rope_uploaded != sc.rope_positions) {
      KVFOLD_RETURN_IF_ERROR(Ensure(sc.rope_device, {n}, s.device, DType::kI32));
      KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, sc.rope_device.data(), rope,
                                          n * sizeof(int32_t)));
      sc.rope_uploaded = sc.rope_positions;
    }
    rope = sc.rope_device.as<int32_t>();
    inv_freq = inv_freq_device_.as<float>();
  }
  KVFOLD_RETURN_IF_ERROR(ApplyRope(s, sc.q.as<float>(), rope, inv_freq, n,
                                   c.num_heads, c.head_dim));
  KVFOLD_RETURN_IF_ERROR(ApplyRope(s, sc.k.as<float>(), rope, inv_freq, n,
                                   c.num_kv_heads, c.head_dim));
  KVFOLD_RETURN_IF_ERROR(cache.Append(layer, sc.k.as<float>(), sc.v.as<float>(),
                                      positions, n));
  const LayerView view = cache.View(layer);
  AttentionArgs a;
  a.q = sc.q.as<float>();
  a.k = view.keys;
  a.v = view.values;
  a.out = sc.attn.as<float>();
  const int64_t summed = cache.ColumnSumQueries(n);
  if (summed > 0) {
    KVFOLD_RETURN_IF_ERROR(
        Ensure(sc.col_sums, {c.num_kv_heads, view.length}, s.device));
    a.col_sums = sc.col_sums.as<float>();
    a.col_sums_from_query = n - std::min(summed, n);
  }
  a.num_queries = n;
  a.num_keys = view.length;
  a.kv_stride = view.stride;
  a.causal_offset = view.length - n;
  a.q_heads = c.num_heads;
  a.kv_heads = c.num_kv_heads;
  a.head_dim = c.head_dim;
  a.scale = 1.0f / std::sqrt(float(c.head_dim));
  KVFOLD_RETURN_IF_ERROR(kvfold::Attention(s, a));
  KVFOLD_RETURN_IF_ERROR(
      cache.AfterAttention(layer, {a.col_sums, nullptr, n}));
  // x += attn . Wo^T (+ bo)
  return Linear(s, sc.attn.as<float>(), n, l.wo, l.bo, sc.x.as<float>(),
                /*accumulate=*/true);
}

absl::Status LlamaModel::Forward(const Stream& s,
                                 absl::Span<const int32_t> tokens,
                                 absl::Span<const int32_t> positions,
                                 LogitsFor which, KvCache& cache,
                                 ForwardScratch& sc, float* logits) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("forward: no tokens");
  if (positions.size() != tokens.size()) {
    return absl::InvalidArgumentError("forward: tokens and positions differ in length");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", tokens[i], " at index ", i,
          " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (!(s.device == options_.device)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward: the model is on ", options_.device.ToString(),
        ", the stream on ", s.device.ToString()));
  }
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  if (sc.rows < n) {
    const Device d = s.device;
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.x, {n, h}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.xn, {n, h}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.q, {n, c.q_dim()}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.k, {n, c.kv_dim()}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.v, {n, c.kv_dim()}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.attn, {n, c.q_dim()}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.gate, {n, inter}, d));
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.up, {n, inter}, d));
    sc.rows = n;
  }
  float* x = sc.x.as<float>();
  float* xn = sc.xn.as<float>();
  const int32_t* ids = tokens.data();
  if (s.device.kind != Device::Kind::kCpu) {
    KVFOLD_RETURN_IF_ERROR(Ensure(sc.ids, {n}, s.device, DType::kI32));
    KVFOLD_RETURN_IF_ERROR(
        CopyToDevice(s, sc.ids.data(), tokens.data(), n * sizeof(int32_t)));
    ids = sc.ids.as<int32_t>();
  }
  KVFOLD_RETURN_IF_ERROR(
      Embedding(s, w_.embed.data(), w_.embed.dtype(), ids, n, h, x));
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LlamaLayerWeights& l = w_.layers[layer];
    KVFOLD_RETURN_IF_ERROR(
        RmsNorm(s, x, l.attn_norm.as<float>(), c.rms_norm_eps, xn, n, h));
    KVFOLD_RETURN_IF_ERROR(Attention(s, layer, positions.data(), n, cache, sc));
    KVFOLD_RETURN_IF_ERROR(
        RmsNorm(s, x, l.mlp_norm.as<float>(), c.rms_norm_eps, xn, n, h));
    KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.w_gate, Tensor(), sc.gate.as<float>()));
    KVFOLD_RETURN_IF_ERROR(Linear(s, xn, n, l.w_up, Tensor(), sc.up.as<float>()));
    KVFOLD_RETURN_IF_ERROR(SiluMul(s, sc.gate.as<float>(), sc.up.as<float>(),
                                   sc.gate.as<float>(), n * inter));
    KVFOLD_RETURN_IF_ERROR(Linear(s, sc.gate.as<float>(), n, l.w_down, Tensor(),
                                  x, /*accumulate=*/true));
  }
  if (which == LogitsFor::kNone) return absl::OkStatus();
  // Only the rows whose logits are wanted go through the final norm and head.
  const int64_t first = (which == LogitsFor::kLast) ? n - 1 : 0;
  const int64_t rows = n - first;
  KVFOLD_RETURN_IF_ERROR(RmsNorm(s, x + first * h, w_.final_norm.as<float>(),
                                 c.rms_norm_eps, xn, rows, h));
  const Tensor& head = w_.lm_head.empty() ? w_.embed : w_.lm_head;
  if (s.device.kind == Device::Kind::kCpu) {
    return Linear(s, xn, rows, head, Tensor(), logits);
  }
  KVFOLD_RETURN_IF_ERROR(Ensure(sc.logits, {rows, c.vocab_size}, s.device));
  KVFOLD_RETURN_IF_ERROR(Linear(s, xn, rows, head, Tensor(), sc.logits.as<float>()));
  return CopyToHost(s, logits, sc.logits.data(),
                    rows * c.vocab_size * sizeof(float));
}

}  // namespace kvfold
