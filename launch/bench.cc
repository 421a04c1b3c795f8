// kvfold bench: a random-weight model of a named shape, timed on this
// machine next to what the machine can do (read bandwidth, plain sgemm on the
// same GEMM shapes), so the ratios come from one run. Prints JSON.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/report.h"
#include "launch/flags.h"
#include "kernels/sampling.h"
#include "models/llama.h"
#include "runtime/engine.h"

namespace kvfold {
namespace {

// Read bandwidth: each thread streams its part of a buffer much larger than
// the caches through OpenBLAS's (vectorised) sdot, as decode streams weights.
// Returns GB/s; the first of the passes warms up.
double ReadBandwidth(ThreadPool& pool, const std::vector<float>& buf,
                     int passes) {
  const int64_t n = static_cast<int64_t>(buf.size());
  std::vector<double> gbps;
  for (int r = 0; r < passes + 1; ++r) {
    std::atomic<double> total{0};
    const auto t0 = Clock::now();
    pool.ParallelFor(n, [&](int64_t b, int64_t e) {
      // x . x reads each cache line once.
      total = total + cblas_sdot(e - b, buf.data() + b, 1, buf.data() + b, 1);
    });
    const double secs = Since(t0);
    if (total < 0) std::fprintf(stderr, "bench: impossible sum\n");  // keeps the reads
    if (r > 0) gbps.push_back(n * sizeof(float) / secs / 1e9);  // first warms
  }
  return Median(gbps);
}

// Plain multi-threaded OpenBLAS sgemm on the GEMM shapes of one prefill.
double PlainSgemmGflops(const ModelConfig& c, int64_t rows, int threads,
                        int repeats) {
  const int64_t h = c.hidden_size;
  // (out, in) of q, k, v, o, gate, up, down.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {c.q_dim(), h}, {c.kv_dim(), h}, {c.kv_dim(), h}, {h, c.q_dim()},
      {c.intermediate_size, h}, {c.intermediate_size, h},
      {h, c.intermediate_size}};
  int64_t max_w = 0, max_in = 0, max_out = 0;
  for (auto [out, in] : shapes) {
    max_w = std::max(max_w, out * in);
    max_in = std::max(max_in, in);
    max_out = std::max(max_out, out);
  }
  std::vector<float> a(rows * max_in, 0.5f), w(max_w, 0.25f), y(rows * max_out);
  openblas_set_num_threads(threads);
  std::vector<double> rates;
  for (int r = 0; r < repeats + 1; ++r) {
    double flops = 0;
    const auto t0 = Clock::now();
    for (auto [out, in] : shapes) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f,
                  a.data(), in, w.data(), in, 0.0f, y.data(), out);
      flops += 2.0 * rows * out * in;
    }
    if (r > 0) rates.push_back(flops / Since(t0) / 1e9);
  }
  openblas_set_num_threads(1);  // kvfold threads GEMMs itself
  return Median(rates);
}

}  // namespace

absl::StatusOr<ModelConfig> BenchShape(const std::string& name) {
  ModelConfig c;
  c.rms_norm_eps = 1e-5f;
  if (name == "llama-3.2-1b") {
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192;
    c.num_layers = 16, c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 64;
    c.rope = {500000.0, 64, RopeScalingType::kLlama3, 32.0, 1.0, 4.0, 8192.0};
    c.tie_word_embeddings = true;
  } else if (name == "llama-3.1-8b") {
    c.vocab_size = 128256, c.hidden_size = 4096, c.intermediate_size = 14336;
    c.num_layers = 32, c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 128;
    c.rope = {500000.0, 128, RopeScalingType::kLlama3, 8.0, 1.0, 4.0, 8192.0};
  } else if (name == "llama-3.1-70b") {
    c.vocab_size = 128256, c.hidden_size = 8192, c.intermediate_size = 28672;
    c.num_layers = 80, c.num_heads = 64, c.num_kv_heads = 8, c.head_dim = 128;
    c.rope = {500000.0, 128, RopeScalingType::kLlama3, 8.0, 1.0, 4.0, 8192.0};
  } else if (name == "tinyllama-1.1b") {
    c.vocab_size = 32000, c.hidden_size = 2048, c.intermediate_size = 5632;
    c.num_layers = 22, c.num_heads = 32, c.num_kv_heads = 4, c.head_dim = 64;
    c.rope.theta = 10000.0;
    c.rope.rotary_dim = 64;
  } else if (name == "smollm-135m") {
    c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536;
    c.num_layers = 30, c.num_heads = 9, c.num_kv_heads = 3, c.head_dim = 64;
    c.rope.theta = 10000.0;
    c.rope.rotary_dim = 64;
    c.tie_word_embeddings = true;
  } else if (name == "tiny-256") {
    // Small enough to prefill 128K tokens in a minute on 2 cores.
    c.vocab_size = 4096, c.hidden_size = 256, c.intermediate_size = 768;
    c.num_layers = 4, c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 64;
    c.rope.theta = 10000.0;
    c.rope.rotary_dim = 64;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "shape \"", name,
        "\" is unknown (known: llama-3.2-1b, llama-3.1-8b, llama-3.1-70b, tinyllama-1.1b, "
        "smollm-135m, "
        "tiny-256)"));
  }
  c.max_position_embeddings = 131072;
  return c;
}

absl::Status RunBench() {
  KVFOLD_ASSIGN_OR_RETURN(ModelConfig c, BenchShape(absl::GetFlag(FLAGS_shape)));
  const int64_t layers = absl::GetFlag(FLAGS_bench_layers);
  const int64_t prompt = absl::GetFlag(FLAGS_prefill_tokens);
  const int64_t decode = absl::GetFlag(FLAGS_decode_tokens);
  const int64_t chunk = absl::GetFlag(FLAGS_prefill_chunk);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  if (layers < 0) return absl::InvalidArgumentError("--bench_layers must be >= 0");
  if (prompt < 1 || decode < 1 || repeats < 1) {
    return absl::InvalidArgumentError(
        "--prefill_tokens, --decode_tokens and --repeats must be >= 1");
  }
  KVFOLD_ASSIGN_OR_RETURN(EngineOptions options, EngineOptionsFromFlags());
  const int batch = options.batch;  // --batch, checked by EngineOptionsFromFlags
  if (layers > 0) c.num_layers = layers;
  KVFOLD_RETURN_IF_ERROR(ValidateCacheOptions(options, c));

  // The engine's pool runs the model; this one, of the same size, measures
  // the machine (bandwidth, plain sgemm).
  ThreadPool pool(absl::GetFlag(FLAGS_threads));
  OpTimers timers;
  options.timers = &timers;
  auto t0 = Clock::now();
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::Random(c, 1234));
  const double init_seconds = Since(t0);
  Engine engine(*model, options);

  std::vector<int32_t> tokens(prompt);
  for (int64_t i = 0; i < prompt; ++i) tokens[i] = int32_t((i * 7919) % c.vocab_size);
  std::vector<float> logits;
  std::vector<double> prefill_secs, gemm_gflops, decode_secs, decode_gemm_share;
  // The machine's bandwidth is measured right after each decode run (a
  // shared machine's bandwidth drifts), and the ratio taken per run.
  const std::vector<float> bw_buf(int64_t{1} << 28, 1.0f);  // 1 GiB
  std::vector<double> bandwidths, decode_ratios;
  std::vector<double> batch_secs, batch_gemm_share;
  for (int r = 0; r < repeats; ++r) {
    KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, engine.NewCache());
    timers = {};
    t0 = Clock::now();
    KVFOLD_RETURN_IF_ERROR(engine.Prefill(tokens, LogitsFor::kLast, *cache, &logits));
    prefill_secs.push_back(Since(t0));
    gemm_gflops.push_back(timers.matmul_flops / timers.matmul_seconds / 1e9);
    if (batch > 1) {
      // `batch` sequences decoded together, one forward per step: copies of
      // the prefilled document's cache (the cost does not depend on what
      // they hold), each row continuing greedily from its own logits.
      std::vector<std::unique_ptr<KvCache>> rows;
      std::vector<KvCache*> caches;
      for (int b = 0; b < batch; ++b) {
        rows.push_back(cache->Clone());
        caches.push_back(rows.back().get());
      }
      std::vector<int32_t> next(batch, Argmax(logits.data(), c.vocab_size));
      std::vector<float> batch_logits;
      timers = {};
      t0 = Clock::now();
      for (int64_t i = 0; i < decode; ++i) {
        KVFOLD_RETURN_IF_ERROR(engine.DecodeBatch(next, caches, &batch_logits));
        for (int b = 0; b < batch; ++b) {
          next[b] = Argmax(batch_logits.data() + b * c.vocab_size, c.vocab_size);
        }
      }
      batch_secs.push_back(Since(t0));
      batch_gemm_share.push_back(timers.matmul_seconds / batch_secs.back());
    }
    timers = {};
    t0 = Clock::now();
    for (int64_t i = 0; i < decode; ++i) {
      const int32_t tok = Argmax(logits.data(), c.vocab_size);
      KVFOLD_RETURN_IF_ERROR(engine.Decode(tok, *cache, &logits));
    }
    decode_secs.push_back(Since(t0));
    decode_gemm_share.push_back(timers.matmul_seconds / decode_secs.back());
    bandwidths.push_back(ReadBandwidth(pool, bw_buf, 1));
  }
  const double bandwidth = Median(bandwidths);
  const double sgemm = PlainSgemmGflops(c, std::min(chunk, prompt), pool.size(), repeats);

  // Decode reads every weight once per token, except the embedding table
  // (one row) unless it doubles as the LM head.
  const ModelStats& st = model->stats();
  const int64_t embed_bytes = c.vocab_size * c.hidden_size * 4;
  const int64_t bytes_per_token =
      st.weight_bytes - (c.tie_word_embeddings ? 0 : embed_bytes);
  const double decode_tps = decode / Median(decode_secs);
  const double bound_tps = bandwidth * 1e9 / bytes_per_token;
  for (int r = 0; r < repeats; ++r) {
    decode_ratios.push_back(decode / decode_secs[r] /
                            (bandwidths[r] * 1e9 / bytes_per_token));
  }
  const double gemm = Median(gemm_gflops);
  nlohmann::json j = {
      {"shape", absl::GetFlag(FLAGS_shape)},
      {"layers", c.num_layers},
      {"parameters", st.parameters},
      {"weight_bytes", st.weight_bytes},
      {"threads", pool.size()},
      {"repeats", repeats},
      {"random_init_seconds", init_seconds},
      {"prefill_tokens", prompt},
      {"prefill_chunk", chunk},
      {"prefill_tokens_per_s", prompt / Median(prefill_secs)},
      {"prefill_gemm_gflops", gemm},
      {"plain_sgemm_gflops_same_shapes", sgemm},
      {"prefill_gemm_vs_sgemm", gemm / sgemm},
      {"decode_tokens", decode},
      {"decode_tokens_per_s", decode_tps},
      {"decode_bytes_per_token", bytes_per_token},
      {"decode_time_in_gemv", Median(decode_gemm_share)},
      {"memory_read_gb_per_s", bandwidth},
      {"decode_bound_tokens_per_s", bound_tps},
      {"decode_vs_bound", Median(decode_ratios)},
      {"peak_rss_bytes", PeakRssBytes()},
  };
  if (batch > 1) {
    const double batch_tps = double(batch) * decode / Median(batch_secs);
    j["decode_batch"] = batch;
    j["decode_batch_tokens_per_s"] = batch_tps;  // all rows together
    j["decode_batch_vs_batch1"] = batch_tps / decode_tps;
    j["decode_batch_step_ms"] = Median(batch_secs) / decode * 1e3;
    j["decode_batch_time_in_gemm"] = Median(batch_gemm_share);
  }
  std::printf("%s\n", j.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace kvfold
