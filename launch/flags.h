// Flags shared by the kvfold subcommands (defined in main.cc).
#ifndef KVFOLD_LAUNCH_FLAGS_H_
#define KVFOLD_LAUNCH_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, ids);
ABSL_DECLARE_FLAG(std::string, ids_file);
ABSL_DECLARE_FLAG(std::string, text);
ABSL_DECLARE_FLAG(std::string, text_file);
ABSL_DECLARE_FLAG(std::string, question);
ABSL_DECLARE_FLAG(std::string, questions_file);
ABSL_DECLARE_FLAG(std::string, chat);
ABSL_DECLARE_FLAG(std::string, system);
ABSL_DECLARE_FLAG(bool, stream);
ABSL_DECLARE_FLAG(int64_t, max_new_tokens);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(int32_t, top_k);
ABSL_DECLARE_FLAG(double, top_p);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(bool, ignore_eos);
ABSL_DECLARE_FLAG(int64_t, prefill_chunk);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(std::string, shape);
ABSL_DECLARE_FLAG(int64_t, prefill_tokens);
ABSL_DECLARE_FLAG(int64_t, decode_tokens);
ABSL_DECLARE_FLAG(int64_t, bench_layers);
ABSL_DECLARE_FLAG(int32_t, repeats);
ABSL_DECLARE_FLAG(int32_t, batch);
ABSL_DECLARE_FLAG(std::string, questions);
ABSL_DECLARE_FLAG(std::string, cache);
ABSL_DECLARE_FLAG(int32_t, cache_slots);
ABSL_DECLARE_FLAG(std::string, cache_layer_slots);
ABSL_DECLARE_FLAG(int32_t, cache_sinks);
ABSL_DECLARE_FLAG(int32_t, cache_window);
ABSL_DECLARE_FLAG(std::string, cache_config);
ABSL_DECLARE_FLAG(std::string, compressor);
ABSL_DECLARE_FLAG(double, feature_budget);
ABSL_DECLARE_FLAG(std::string, memory_limit);
ABSL_DECLARE_FLAG(int32_t, cache_buffer);
ABSL_DECLARE_FLAG(std::string, question_mode);
ABSL_DECLARE_FLAG(int32_t, tp);
ABSL_DECLARE_FLAG(int32_t, sp);
ABSL_DECLARE_FLAG(int64_t, sp_anchor);
ABSL_DECLARE_FLAG(int64_t, sp_passing_slots);
ABSL_DECLARE_FLAG(bool, sp_balance);
ABSL_DECLARE_FLAG(double, collective_timeout);
ABSL_DECLARE_FLAG(double, job_timeout);
ABSL_DECLARE_FLAG(std::string, documents_file);
ABSL_DECLARE_FLAG(std::string, fault);

#endif  // KVFOLD_LAUNCH_FLAGS_H_
