// kvfold bench_gpu: the CUDA backend on random-weight models of real shapes.
//
// Measured in one run, on the same device: the copy bandwidth and the bf16
// GEMM peak (cuBLAS, 8192^3) as ceilings; then per shape and document length,
// prefill into a fixed-size cache (tokens/s and the linear layers' TFLOP/s
// against the peak) and batch-1 decode step times against
// (weight bytes + cache bytes) / bandwidth. One JSON object per line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "cache/policies.h"
#include "kernels/device_stream.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/report.h"
#include "launch/flags.h"
#include "runtime/engine.h"

#ifdef KVFOLD_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

ABSL_FLAG(std::string, gpu_shapes, "llama-3.2-1b,llama-3.1-8b",
          "bench_gpu: model shapes (random bf16 weights) or checkpoint "
          "directories (any name with a '/')");
ABSL_FLAG(std::string, gpu_doc_lengths, "4096,32768,131072",
          "bench_gpu: document lengths prefilled before decoding");
ABSL_FLAG(int64_t, gpu_max_doc_8b, 32768,
          "bench_gpu: longest document for shapes over 4B parameters (time)");
ABSL_FLAG(int64_t, gpu_decode_tokens, 64, "bench_gpu: decode steps per run");
ABSL_FLAG(int64_t, gpu_prefill_chunk, 2048, "bench_gpu: tokens per prefill chunk");
ABSL_FLAG(int32_t, gpu_cache_slots, 512, "bench_gpu: StreamingLLM slots per layer");
ABSL_FLAG(double, gpu_datasheet_tbps, 4.8,
          "bench_gpu: the datasheet bandwidth the decode target is stated against");

namespace kvfold {
namespace {


#ifdef KVFOLD_WITH_CUDA
// Device-to-device copy bandwidth, counting bytes read and written.
absl::StatusOr<double> CopyBandwidth(const Stream& s) {
  const int64_t n = int64_t(1) << 29;  // 2 GiB of f32
  KVFOLD_ASSIGN_OR_RETURN(Tensor a, Tensor::Allocate({n}, DType::kF32, s.device));
  KVFOLD_ASSIGN_OR_RETURN(Tensor b, Tensor::Allocate({n}, DType::kF32, s.device));
  std::vector<double> rates;
  for (int r = 0; r < 8; ++r) {
    KVFOLD_RETURN_IF_ERROR(cuda::Synchronize());
    const auto t0 = Clock::now();
    KVFOLD_RETURN_IF_ERROR(CopyOnDevice(s, b.data(), a.data(), a.bytes()));
    KVFOLD_RETURN_IF_ERROR(cuda::Synchronize());
    if (r > 1) rates.push_back(2.0 * a.bytes() / Since(t0));
  }
  return Median(rates);
}

// cuBLAS bf16 GEMM, f32 accumulation, 8192^3 on random data.
absl::StatusOr<double> GemmPeak(const Stream& s) {
  const int64_t n = 8192;
  std::vector<uint16_t> host(n * n);
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  for (uint16_t& v : host) v = F32ToBf16(dist(rng));
  KVFOLD_ASSIGN_OR_RETURN(Tensor a, Tensor::Allocate({n, n}, DType::kBF16, s.device));
  KVFOLD_ASSIGN_OR_RETURN(Tensor b, Tensor::Allocate({n, n}, DType::kBF16, s.device));
  KVFOLD_ASSIGN_OR_RETURN(Tensor c, Tensor::Allocate({n, n}, DType::kF32, s.device));
  KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, a.data(), host.data(), a.bytes()));
  std::shuffle(host.begin(), host.end(), rng);
  KVFOLD_RETURN_IF_ERROR(CopyToDevice(s, b.data(), host.data(), b.bytes()));
  std::vector<double> rates;
  for (int r = 0; r < 13; ++r) {
    KVFOLD_RETURN_IF_ERROR(cuda::Synchronize());
    const auto t0 = Clock::now();
    KVFOLD_RETURN_IF_ERROR(cuda::GemmHalf(*s.cuda, a.data(), b.data(),
                                          DType::kBF16, c.as<float>(), n, n, n));
    KVFOLD_RETURN_IF_ERROR(cuda::Synchronize());
    if (r >= 3) rates.push_back(2.0 * n * n * n / Since(t0));
  }
  return Median(rates);
}
#endif

// Parameters of the matrices a prefill token multiplies (not the embedding
// lookup; the LM head runs for the last token only).
double LinearParams(const ModelConfig& c) {
  const double h = c.hidden_size;
  return c.num_layers * (h * (c.q_dim() + 2.0 * c.kv_dim()) + c.q_dim() * h +
                         3.0 * h * c.intermediate_size);
}

absl::Status BenchShapeOnGpu(const std::string& name, const Stream& probe,
                             double copy_bw, double peak) {
  // A name with a '/' is a checkpoint directory (e.g. the random checkpoint
  // the transformers comparison saved); otherwise a built-in shape.
  auto t0 = Clock::now();
  std::unique_ptr<LlamaModel> model;
  if (name.find('/') != std::string::npos) {
    KVFOLD_ASSIGN_OR_RETURN(model, LlamaModel::Load(name, {probe.device, DType::kBF16}));
  } else {
    KVFOLD_ASSIGN_OR_RETURN(ModelConfig shape, BenchShape(name));
    KVFOLD_ASSIGN_OR_RETURN(model,
                            LlamaModel::Random(shape, 1234, {probe.device, DType::kBF16}));
  }
  const ModelConfig& c = model->config();
  const double init = Since(t0);
  const ModelStats& st = model->stats();
  // Decode reads every matrix once per token; the embedding table only one
  // row, unless it doubles as the LM head.
  const int64_t embed_bytes = int64_t(c.vocab_size) * c.hidden_size * 2;
  const int64_t weight_read = st.weight_bytes - (c.tie_word_embeddings ? 0 : embed_bytes);

  EngineOptions o;
  o.prefill_chunk = absl::GetFlag(FLAGS_gpu_prefill_chunk);
  KVFOLD_RETURN_IF_ERROR(SetPolicyByName("streaming", &o.cache));
  o.cache.set_slots(absl::GetFlag(FLAGS_gpu_cache_slots));
  KVFOLD_RETURN_IF_ERROR(ValidateCacheOptions(o, c));
  Engine engine(*model, o);
  const int64_t decode = absl::GetFlag(FLAGS_gpu_decode_tokens);
  const double datasheet = absl::GetFlag(FLAGS_gpu_datasheet_tbps) * 1e12;

  std::vector<int64_t> lengths;
  for (absl::string_view item :
       absl::StrSplit(absl::GetFlag(FLAGS_gpu_doc_lengths), ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(item, &v) || v < 1) {
      return absl::InvalidArgumentError("--gpu_doc_lengths: bad length");
    }
    if (st.parameters > 4e9 && v > absl::GetFlag(FLAGS_gpu_max_doc_8b)) continue;
    lengths.push_back(v);
  }
  {
    // Warm-up (cuBLAS heuristics, workspaces), left out of every number.
    std::vector<int32_t> warm(2 * o.prefill_chunk, 1);
    KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, engine.NewCache());
    std::vector<float> logits;
    KVFOLD_RETURN_IF_ERROR(engine.Prefill(warm, LogitsFor::kLast, *cache, &logits));
    for (int i = 0; i < 8; ++i) {
      KVFOLD_RETURN_IF_ERROR(engine.Decode(1, *cache, &logits));
    }
  }
  for (int64_t length : lengths) {
    std::vector<int32_t> doc(length);
    for (int64_t i = 0; i < length; ++i) doc[i] = int32_t((i * 7919 + 13) % c.vocab_size);
    KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, engine.NewCache());
    std::vector<float> logits;
    KVFOLD_RETURN_IF_ERROR(engine.Synchronize());
    t0 = Clock::now();
    KVFOLD_RETURN_IF_ERROR(engine.Prefill(doc, LogitsFor::kLast, *cache, &logits));
    KVFOLD_RETURN_IF_ERROR(engine.Synchronize());
    const double prefill_s = Since(t0);
    std::vector<double> steps;
    int32_t tok = 0;
    for (int64_t i = 0; i < decode; ++i) {
      tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      t0 = Clock::now();
      KVFOLD_RETURN_IF_ERROR(engine.Decode(tok, *cache, &logits));  // ends synchronized
      steps.push_back(Since(t0));
    }
    const double step = Median(steps);
    const CacheStats cs = cache->Stats();
    const double full_bytes = 2.0 * 4 * c.num_layers * c.num_kv_heads * c.head_dim *
                              double(length + decode);
    const double bound_datasheet = (weight_read + cs.bytes) / datasheet;
    const double bound_measured = (weight_read + cs.bytes) / copy_bw;
    const double linear_tflops = 2.0 * LinearParams(c) * length / prefill_s / 1e12;
    PrintJson({{"shape", name},
           {"parameters", st.parameters},
           {"weights", "bf16"},
           {"load_seconds", init},
           {"doc_tokens", length},
           {"cache", "streaming"},
           {"cache_slots", o.cache.slots()},
           {"prefill_chunk", o.prefill_chunk},
           {"prefill_seconds", prefill_s},
           {"prefill_tokens_per_s", length / prefill_s},
           {"prefill_linear_tflops", linear_tflops},
           {"prefill_vs_bf16_peak", linear_tflops * 1e12 / peak},
           {"decode_steps", decode},
           {"decode_step_ms_median", step * 1e3},
           {"decode_tokens_per_s", 1.0 / step},
           {"decode_weight_bytes", weight_read},
           {"cache_bytes", cs.bytes},
           {"full_cache_bytes_same_length", full_bytes},
           {"decode_bound_ms_datasheet", bound_datasheet * 1e3},
           {"decode_vs_datasheet_bound", step / bound_datasheet},
           {"decode_bound_ms_measured_copy", bound_measured * 1e3},
           {"decode_vs_measured_bound", step / bound_measured}});
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunBenchGpu() {
#ifndef KVFOLD_WITH_CUDA
  return absl::UnimplementedError(
      "bench_gpu needs a binary built with --config=cuda");
#else
  KVFOLD_ASSIGN_OR_RETURN(Device device, ParseDevice("cuda"));
  ThreadPool pool(0);
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<DeviceStream> ds,
                          DeviceStream::Open(device, &pool, nullptr));
  const Stream& s = ds->stream();
  KVFOLD_ASSIGN_OR_RETURN(double copy_bw, CopyBandwidth(s));
  KVFOLD_ASSIGN_OR_RETURN(double peak, GemmPeak(s));
  PrintJson({{"device", DescribeDevice(device)},
         {"copy_bandwidth_tb_per_s", copy_bw / 1e12},
         {"bf16_gemm_peak_tflops", peak / 1e12}});
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_gpu_shapes), ',', absl::SkipEmpty())) {
    KVFOLD_RETURN_IF_ERROR(BenchShapeOnGpu(std::string(name), s, copy_bw, peak));
  }
  return absl::OkStatus();
#endif
}

}  // namespace kvfold
