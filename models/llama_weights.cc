// Loading a Llama-family model: its tensor-parallel slice of every weight,
// from a checkpoint's safetensors files or from a seeded generator, placed on
// the model's device.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "kernels/thread_pool.h"
#include "models/llama.h"
#include "models/safetensors.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"

namespace kvfold {

absl::StatusOr<TpSlice> MakeTpSlice(const ModelConfig& c, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor-parallel rank ", rank, " of ", size));
  }
  KVFOLD_ASSIGN_OR_RETURN(
      const TpHeads heads,
      SplitHeads(size, {int(c.num_heads), int(c.num_kv_heads), c.intermediate_size}));
  TpSlice s;
  s.rank = rank;
  s.size = size;
  s.q_heads = int(c.num_heads / size);
  s.q_head_begin = rank * s.q_heads;
  s.kv_heads = heads.local_kv_heads;
  // Replicated: ranks [k * rep, (k + 1) * rep) share KV head k, whose query
  // heads are exactly theirs.
  s.kv_head_begin = heads.kv_replication > 1 ? rank / heads.kv_replication
                                             : rank * heads.local_kv_heads;
  s.kv_replication = heads.kv_replication;
  s.inter = c.intermediate_size / size;
  s.inter_begin = rank * s.inter;
  s.vocab_pad = (c.vocab_size + size - 1) / size;
  s.vocab_begin = std::min<int64_t>(c.vocab_size, rank * s.vocab_pad);
  s.vocab_rows = std::min<int64_t>(c.vocab_size, s.vocab_begin + s.vocab_pad) - s.vocab_begin;
  return s;
}

// Where weights come from. `Rows`/`Cols` give a slice of the named tensor of
// (full) shape `shape`; [begin, end) covering everything loads it whole.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual absl::StatusOr<Tensor> Rows(const std::string& name, const Shape& shape,
                                      int64_t begin, int64_t end) = 0;
  virtual absl::StatusOr<Tensor> Cols(const std::string& name, const Shape& shape,
                                      int64_t begin, int64_t end) = 0;
  virtual uint64_t bytes_read() const { return 0; }
};

namespace {

class FileSource : public WeightSource {
 public:
  explicit FileSource(std::unique_ptr<WeightStore> store) : store_(std::move(store)) {}
  absl::StatusOr<Tensor> Rows(const std::string& name, const Shape& shape,
                              int64_t begin, int64_t end) override {
    return store_->LoadRowsF32(name, shape, begin, end);
  }
  absl::StatusOr<Tensor> Cols(const std::string& name, const Shape& shape,
                              int64_t begin, int64_t end) override {
    return store_->LoadColsF32(name, shape, begin, end);
  }
  uint64_t bytes_read() const override { return store_->bytes_read(); }

 private:
  std::unique_ptr<WeightStore> store_;
};

// Uniform values in [-scale, scale) that depend only on the seed and the
// tensor's name, so every TP rank slices the same full tensor. Scales keep
// activations of a random model in range: norms 1, biases 0.1, matrices
// 1/sqrt(fan_in).
class RandomSource : public WeightSource {
 public:
  explicit RandomSource(uint64_t seed) : seed_(seed) {}
  absl::StatusOr<Tensor> Rows(const std::string& name, const Shape& shape,
                              int64_t begin, int64_t end) override {
    Tensor full = Generate(name, shape);
    const int64_t row = full.numel() / shape[0];
    Shape out_shape = shape;
    out_shape[0] = end - begin;
    Tensor out(std::move(out_shape), DType::kF32);
    std::memcpy(out.data(), full.as<float>() + begin * row, out.bytes());
    return out;
  }
  absl::StatusOr<Tensor> Cols(const std::string& name, const Shape& shape,
                              int64_t begin, int64_t end) override {
    Tensor full = Generate(name, shape);
    Tensor out({shape[0], end - begin}, DType::kF32);
    for (int64_t r = 0; r < shape[0]; ++r) {
      std::memcpy(out.as<float>() + r * (end - begin),
                  full.as<float>() + r * shape[1] + begin, (end - begin) * sizeof(float));
    }
    return out;
  }

 private:
  Tensor Generate(const std::string& name, const Shape& shape) {
    float scale = 1.0f;
    if (name.find("bias") != std::string::npos) {
      scale = 0.1f;
    } else if (shape.size() == 2 && name.find("embed") == std::string::npos) {
      scale = 1.0f / std::sqrt(float(shape[1]));
    }
    Tensor t(shape, DType::kF32);
    const uint64_t base = seed_ ^ std::hash<std::string>()(name);
    float* p = t.as<float>();
    pool_.ParallelFor(t.numel(), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        // splitmix64 of a counter: parallel and still seed-determined.
        uint64_t z = base + uint64_t(i) * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        p[i] = scale * (float(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
      }
    });
    return t;
  }

  uint64_t seed_;
  ThreadPool pool_{0};
};

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

// How one weight is cut: whole, by rows (column-parallel: its outputs are
// split) or by columns (row-parallel: its inputs are split).
enum class Cut { kWhole, kRows, kCols };

struct Named {
  std::string name;
  Shape shape;  // the full tensor's
  Cut cut;
  int64_t begin, end;  // along the cut
  Tensor* dst;
};

absl::Status LoadAll(WeightSource& src, std::vector<Named>& weights, const LoadOptions& o) {
  for (Named& n : weights) {
    // A TP rank past the end of a small vocabulary holds no rows.
    if (n.cut == Cut::kRows && n.begin == n.end) continue;
    absl::StatusOr<Tensor> host =
        n.cut == Cut::kCols ? src.Cols(n.name, n.shape, n.begin, n.end)
                            : src.Rows(n.name, n.shape, n.begin, n.end);
    KVFOLD_RETURN_IF_ERROR(host.status());
    KVFOLD_ASSIGN_OR_RETURN(*n.dst, Place(std::move(*host), n.shape.size() == 2, o));
  }
  return absl::OkStatus();
}

std::vector<Named> LayerWeights(const ModelConfig& c, const TpSlice& t, int i,
                                LlamaLayerWeights* l) {
  const std::string p = absl::StrCat("model.layers.", i, ".");
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(),
                inter = c.intermediate_size, d = c.head_dim;
  const int64_t q0 = t.q_head_begin * d, q1 = q0 + t.q_heads * d;
  const int64_t k0 = t.kv_head_begin * d, k1 = k0 + t.kv_heads * d;
  const int64_t i0 = t.inter_begin, i1 = i0 + t.inter;
  std::vector<Named> w = {
      {p + "input_layernorm.weight", {h}, Cut::kWhole, 0, h, &l->attn_norm},
      {p + "self_attn.q_proj.weight", {q, h}, Cut::kRows, q0, q1, &l->wq},
      {p + "self_attn.k_proj.weight", {kv, h}, Cut::kRows, k0, k1, &l->wk},
      {p + "self_attn.v_proj.weight", {kv, h}, Cut::kRows, k0, k1, &l->wv},
      {p + "self_attn.o_proj.weight", {h, q}, Cut::kCols, q0, q1, &l->wo},
      {p + "post_attention_layernorm.weight", {h}, Cut::kWhole, 0, h, &l->mlp_norm},
      {p + "mlp.gate_proj.weight", {inter, h}, Cut::kRows, i0, i1, &l->w_gate},
      {p + "mlp.up_proj.weight", {inter, h}, Cut::kRows, i0, i1, &l->w_up},
      {p + "mlp.down_proj.weight", {h, inter}, Cut::kCols, i0, i1, &l->w_down},
  };
  if (c.qkv_bias) {
    w.push_back({p + "self_attn.q_proj.bias", {q}, Cut::kRows, q0, q1, &l->bq});
    w.push_back({p + "self_attn.k_proj.bias", {kv}, Cut::kRows, k0, k1, &l->bk});
    w.push_back({p + "self_attn.v_proj.bias", {kv}, Cut::kRows, k0, k1, &l->bv});
  }
  // Added once: by rank 0, to its part of the row-parallel output.
  if (c.o_bias && t.rank == 0) {
    w.push_back({p + "self_attn.o_proj.bias", {h}, Cut::kWhole, 0, h, &l->bo});
  }
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Build(ModelConfig c,
                                                              WeightSource& src,
                                                              const LoadOptions& o) {
  const int rank = o.tp ? o.tp->rank() : 0, size = o.tp ? o.tp->size() : 1;
  KVFOLD_ASSIGN_OR_RETURN(const TpSlice t, MakeTpSlice(c, rank, size));
  const int64_t h = c.hidden_size;
  LlamaWeights w;
  const int64_t v0 = t.vocab_begin, v1 = v0 + t.vocab_rows;
  std::vector<Named> top = {
      {"model.embed_tokens.weight", {c.vocab_size, h}, Cut::kRows, v0, v1, &w.embed},
      {"model.norm.weight", {h}, Cut::kWhole, 0, h, &w.final_norm},
  };
  if (!c.tie_word_embeddings) {
    top.push_back({"lm_head.weight", {c.vocab_size, h}, Cut::kRows, v0, v1, &w.lm_head});
  }
  KVFOLD_RETURN_IF_ERROR(LoadAll(src, top, o));
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    std::vector<Named> layer = LayerWeights(c, t, i, &w.layers[i]);
    KVFOLD_RETURN_IF_ERROR(LoadAll(src, layer, o));
  }
  std::unique_ptr<LlamaModel> m(new LlamaModel(std::move(c), std::move(w), o, t));
  KVFOLD_RETURN_IF_ERROR(m->PlaceTables());
  m->stats_.bytes_read = src.bytes_read();
  return m;
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
  const int ranks = options.tp ? options.tp->size() : 1;
  const double need = options.device.kind == Device::Kind::kCpu
                          ? 4.0 * c.NumParameters() / ranks
                          : 0.0;
  const double have =
      double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (have > 0 && need > have) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: the model needs %.1f GB per rank for its weights as f32, this "
        "machine has %.1f GB of memory",
        dir, need / 1e9, have / 1e9));
  }
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store,
                          WeightStore::Open(dir));
  FileSource src(std::move(store));
  return Build(std::move(c), src, options);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Random(
    const ModelConfig& c, uint64_t seed, const LoadOptions& options) {
  KVFOLD_RETURN_IF_ERROR(ValidateLoadOptions(options));
  RandomSource src(seed);
  return Build(c, src, options);
}

}  // namespace kvfold
