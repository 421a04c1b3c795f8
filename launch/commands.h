// The kvfold subcommands. Each returns a status; main() prints it as one
// line and sets the exit code.
#ifndef KVFOLD_LAUNCH_COMMANDS_H_
#define KVFOLD_LAUNCH_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine.h"

namespace kvfold {

// "1,2, 3" or "1 2 3" -> ids; errors name `source` and the bad item.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text,
                                              const std::string& source);

// Engine options from --threads and --prefill_chunk, and their check (done
// before a possibly large model is loaded).
EngineOptions EngineOptionsFromFlags();
absl::Status CheckEngineFlags();

absl::Status RunGenerate();  // flags: --model --ids|--ids_file, sampling
absl::Status RunScore();     // flags: --model --ids|--ids_file
absl::Status RunBench();     // flags: --shape --prefill_tokens ...

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_COMMANDS_H_
