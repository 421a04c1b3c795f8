// Flags of `kvfold run` (defined in run.cc), shared with `kvfold demo`.
#ifndef KVFOLD_LAUNCH_RUN_H_
#define KVFOLD_LAUNCH_RUN_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, input);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(std::string, summary);
ABSL_DECLARE_FLAG(double, progress_interval);
ABSL_DECLARE_FLAG(int64_t, max_document_tokens);

#endif  // KVFOLD_LAUNCH_RUN_H_
