// Reading the small text files of a checkpoint (JSON) and of the user.
#ifndef KVFOLD_MODELS_FILES_H_
#define KVFOLD_MODELS_FILES_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace kvfold {

// Reads a whole regular file of at most `max_bytes`; errors name the path.
absl::StatusOr<std::string> ReadTextFile(const std::string& path,
                                         size_t max_bytes);

}  // namespace kvfold

#endif  // KVFOLD_MODELS_FILES_H_
