// kvfold: long-context LLM inference with a fixed-size KV cache.
#include <cstdio>
#include <functional>
#include <map>
#include <new>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/ranks.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face checkpoint directory (config.json + safetensors)");
ABSL_FLAG(std::string, ids, "", "prompt token ids, comma or space separated");
ABSL_FLAG(std::string, ids_file, "", "file holding the prompt token ids");
ABSL_FLAG(std::string, text, "",
          "prompt (generate) or sequence (score) as text, tokenized with the "
          "model's tokenizer.json");
ABSL_FLAG(std::string, text_file, "", "file holding the prompt text (UTF-8)");
ABSL_FLAG(std::string, question, "",
          "generate: a question about the document, as text");
ABSL_FLAG(std::string, questions_file, "",
          "generate: file of text questions about the document, one per line");
ABSL_FLAG(std::string, chat, "auto",
          "text questions: auto (wrap document and question in the model's "
          "chat_template when tokenizer_config.json has one) or raw (send the "
          "text as is)");
ABSL_FLAG(std::string, system, "",
          "text questions with a chat template: the system message");
ABSL_FLAG(bool, stream, false,
          "generate: print the answer text to stderr as it is produced");
ABSL_FLAG(int64_t, max_new_tokens, 32, "generate: tokens to produce at most");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 = greedy");
ABSL_FLAG(int32_t, top_k, 0, "sample among the k most likely tokens; 0 = all");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "random seed for sampling");
ABSL_FLAG(bool, ignore_eos, false, "generate: do not stop at end-of-sequence");
ABSL_FLAG(int64_t, prefill_chunk, 512, "tokens per prefill step (>= 1)");
ABSL_FLAG(int32_t, threads, 0, "CPU worker threads; 0 = one per core");
ABSL_FLAG(std::string, device, "auto",
          "where the model runs: auto (the first CUDA device if this binary has "
          "CUDA and one is usable, else cpu), cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "auto",
          "weight type: f32, bf16, f16, or auto (f32 on cpu, bf16 on cuda)");
ABSL_FLAG(std::string, shape, "llama-3.2-1b",
          "bench: model shape (llama-3.2-1b, smollm-135m, tinyllama-1.1b)");
ABSL_FLAG(int64_t, prefill_tokens, 256, "bench: prompt length");
ABSL_FLAG(int64_t, decode_tokens, 16, "bench: tokens decoded");
ABSL_FLAG(int64_t, bench_layers, 0, "bench: override the layer count; 0 = shape's");
ABSL_FLAG(int32_t, repeats, 3, "bench: repetitions (the median is reported)");
ABSL_FLAG(int32_t, batch, 1, "sequences decoded together in one batch (run, bench)");
ABSL_FLAG(std::string, questions, "",
          "generate: questions about the --ids document, token ids, separated "
          "by ';' (one answer each)");
ABSL_FLAG(std::string, cache, "",
          "KV cache policy: full (default), streaming, h2o, snapkv, pyramidkv, "
          "kvmerger, lococo");
ABSL_FLAG(int32_t, cache_slots, 0, "cache budget: slots per layer and KV head");
ABSL_FLAG(std::string, cache_layer_slots, "",
          "per-layer budgets, comma separated, one per model layer");
ABSL_FLAG(int32_t, cache_sinks, -1, "streaming: sink tokens kept (default 4)");
ABSL_FLAG(int32_t, cache_window, -1,
          "recent/observation window of the policy (default: the policy's)");
ABSL_FLAG(std::string, cache_config, "",
          "text-format CacheConfig file (cache/cache_config.proto); --cache* "
          "flags override its fields");
ABSL_FLAG(std::string, compressor, "",
          "learned compressor files, comma separated, at most one per method: "
          "a LoCoCo module (tools/calibrate/calibrate.py; selects --cache=lococo "
          "when --cache is not given) and/or MatryoshkaKV projections (kvfold "
          "calibrate --method=pca, tools/calibrate/matryoshka_calibrate.py)");
ABSL_FLAG(std::string, memory_limit, "",
          "refuse at start-up a job whose estimated peak per rank (weights + "
          "caches + workspace) exceeds this many bytes (e.g. 20G; default: the "
          "machine's memory on the CPU, the device's free memory on CUDA)");
ABSL_FLAG(double, feature_budget, 0,
          "MatryoshkaKV: fraction of key/value features kept, one of the rank "
          "allocations stored in the projection file (0: its only one)");
ABSL_FLAG(int32_t, cache_buffer, -1,
          "lococo: slots a layer may hold past M before it is compressed "
          "(default: the compressor's calibration buffer, 16)");
ABSL_FLAG(std::string, question_mode, "",
          "agnostic (compress the document alone; default) or aware (the "
          "question joins the last compression)");

ABSL_FLAG(int32_t, tp, 1,
          "tensor-parallel ranks per model replica (under mpirun; divides the "
          "attention heads and MLP width; KV heads split or replicated)");
ABSL_FLAG(int32_t, sp, 1,
          "sequence-parallel ranks per model replica (under mpirun): each "
          "prefills one block of every document; the data-parallel degree is "
          "world / (tp x sp)");
ABSL_FLAG(int64_t, sp_anchor, -1,
          "--sp > 1: the document's first tokens prefixed to every block but "
          "the first (-1 = a quarter of a block, at most 4096 and at most "
          "--cache_slots; 0 = none)");
ABSL_FLAG(int64_t, sp_passing_slots, 0,
          "--sp > 1: slots per layer and KV head each rank passes to the later "
          "ranks, the most recent of its compressed cache (0 = its whole cache; "
          "at most --cache_slots)");
ABSL_FLAG(bool, sp_balance, true,
          "--sp > 1: size the blocks by a cost model (projections, MLP and "
          "attention FLOPs of each rank's rows) so that later ranks, which also "
          "attend over the passing blocks and the anchor, get fewer tokens; "
          "false = blocks of equal size");
ABSL_FLAG(double, collective_timeout, 120,
          "seconds a rank waits in one collective before the job fails");
ABSL_FLAG(double, job_timeout, 86400,
          "seconds the writer waits for one document's results from another "
          "data-parallel replica");
ABSL_FLAG(std::string, documents_file, "",
          "generate: one document per line as token ids, shared out over the "
          "data-parallel replicas; each gets the --questions");
ABSL_FLAG(std::string, fault, "",
          "testing failure handling: RANK:error|throw|kill|hang makes that rank "
          "fail (or stop answering) after start-up");

namespace {

constexpr char kUsage[] =
    "kvfold COMMAND [--flags]\n\n"
    "Commands:\n"
    "  run       --model=DIR --input=jobs.jsonl --output=answers.jsonl\n"
    "            [--batch --max_document_tokens --summary --progress_interval]\n"
    "            answer every job of a JSONL file (under mpirun: shared out\n"
    "            over the data-parallel replicas); resumable\n"
    "  demo      [--demo_ranks=2] kvfold run on the bundled demo (tools/demo)\n"
    "            through mpirun; prints the answers and the summary\n"
    "  eval      --model=DIR --tasks=tasks.jsonl [--eval_tasks=passkey,kv\n"
    "            --eval_lengths=8192 --per_group=N --output=F --predictions=F]\n"
    "            exact-match accuracy per task and length with the --cache*\n"
    "            policy (task files: tools/tasks/make_tasks.py); prints JSON\n"
    "  generate  --model=DIR --ids=1,2,3 [--questions=4,5;6,7\n"
    "            or --text=... | --text_file=F [--question=... |\n"
    "            --questions_file=F --chat=auto|raw --system=... --stream]\n"
    "            --max_new_tokens --temperature --top_k --top_p --seed\n"
    "            --ignore_eos --prefill_chunk]\n"
    "            continue a prompt of token ids, or answer each question\n"
    "            about it; prints JSON (one line per answer)\n"
    "  score     --model=DIR --ids=...|--text=...|--text_file=F per-token\n"
    "            log-probabilities, NLL and\n"
    "            perplexity of a token sequence; prints JSON\n"
    "  bench     [--shape --prefill_tokens --decode_tokens --bench_layers]\n"
    "            random-weight model of a named shape: prefill/decode speed,\n"
    "            memory bandwidth and sgemm GFLOP/s measured in the same run\n"
    "  bench_tp  [--shape --prefill_tokens --decode_tokens --bench_layers]\n"
    "            under mpirun -np T: tensor-parallel traffic per step, the\n"
    "            share of time in collectives, and planned all-reduce volume\n"
    "            per token of Llama-3.1-8B/70B at T = 2/4/8 (JSON)\n"
    "  bench_sp  [--sp_doc_lengths --bench_model --cache=...] under mpirun\n"
    "            -np S: sequence-parallel prefill per rank (block, CPU and\n"
    "            wall seconds, bytes exchanged) for 32K-256K-token documents\n"
    "  bench_cache  [--cache=... --doc_lengths=4096,...]  memory and speed\n"
    "            of a compressed cache vs document length (random model)\n"
    "  bench_gpu [--gpu_shapes --gpu_doc_lengths]  CUDA prefill/decode vs the\n"
    "            device's copy bandwidth and bf16 GEMM peak (random models)\n"
    "  tokenize  --model=DIR (--text=...|--text_file=F) [--chat=...] ids\n"
    "            of a text, or (--ids=...) the text of ids; prints JSON\n"
    "  calibrate --method=pca --model=DIR --text_file=F|--ids=... --output=FILE\n"
    "            [--rank_budgets=1,0.75,0.5,0.25 --rank_granularity=G]\n"
    "            MatryoshkaKV projections: PCA of post-RoPE keys and values\n"
    "            per layer and KV head (under mpirun --tp=T: each rank its heads)\n"
    "  bench_tokenizer --tokenizer=DIR --text_file=F [--repeats --ids_out]\n"
    "            encode MB/s of tokenizer.json on a text (one core)\n\n"
    "Device: --device=auto|cpu|cuda|cuda:N --dtype=auto|f32|bf16|f16\n\n"
    "Ranks (run, generate, score under mpirun -np N): --tp=T [--sp=1]\n"
    "  [--documents_file=F] --collective_timeout=S; data-parallel degree\n"
    "  N / (T x S); rank 0 writes every result\n\n"
    "KV cache (run, generate, score): --cache=full|streaming|h2o|snapkv|\n"
    "  pyramidkv|kvmerger --cache_slots=N [--cache_window --cache_sinks\n"
    "  --cache_layer_slots --cache_config=FILE --question_mode=agnostic|aware]\n"
    "  --cache=lococo --compressor=FILE [--cache_slots=M --cache_buffer=B]\n"
    "  MatryoshkaKV, with any of them: --compressor=PROJ[,LOCOCO]\n"
    "  --feature_budget=F\n\n"
    "Run `kvfold --helpfull` for every flag.";

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "%s\n", kUsage);
    return 2;
  }
  const std::string command = args[1];
  using Command = std::function<absl::Status(kvfold::Ranks&)>;
  auto alone = [](absl::Status (*run)()) {
    return Command([run](kvfold::Ranks&) { return run(); });
  };
  static const std::map<std::string, Command> kCommands = {
      {"run", kvfold::RunRun},
      {"demo", kvfold::RunDemo},
      {"eval", kvfold::RunEval},
      {"generate", kvfold::RunGenerate},
      {"score", kvfold::RunScore},
      {"tokenize", alone(kvfold::RunTokenize)},
      {"bench", alone(kvfold::RunBench)},
      {"bench_cache", alone(kvfold::RunBenchCache)},
      {"bench_gpu", alone(kvfold::RunBenchGpu)},
      {"bench_sp", kvfold::RunBenchSp},
      {"bench_tp", kvfold::RunBenchTp},
      {"bench_tokenizer", alone(kvfold::RunBenchTokenizer)},
      {"calibrate", kvfold::RunCalibrate},
  };
  auto run = kCommands.find(command);
  if (run == kCommands.end()) {
    std::fprintf(stderr, "kvfold: error: unknown command \"%s\"\n\n%s\n", command.c_str(),
                 kUsage);
    return 2;
  }
  absl::StatusOr<std::unique_ptr<kvfold::Ranks>> ranks = kvfold::Ranks::Start();
  if (!ranks.ok()) {
    std::fprintf(stderr, "kvfold: error: %s\n", std::string(ranks.status().message()).c_str());
    return 1;
  }
  absl::Status status;
  try {
    status = run->second(**ranks);
  } catch (const std::bad_alloc&) {
    // Allocation is not checked at every Tensor; say what happened, not abort.
    status = absl::ResourceExhaustedError(absl::StrCat("out of memory (", command, ")"));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("unexpected exception: ", e.what()));
  }
  if (status.ok()) return 0;
  // Start-up failures were agreed and printed by rank 0; any other failure
  // ends the whole job from here.
  if (!(*ranks)->reported()) (*ranks)->Fail(std::string(status.message()), 1);
  return 1;
}
