#include "models/files.h"

#include <sys/stat.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace kvfold {

absl::StatusOr<std::string> ReadTextFile(const std::string& path,
                                         size_t max_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  }
  if (!S_ISREG(st.st_mode)) {  // a directory or FIFO would hang or mislead
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::DataLossError(absl::StrCat(path, ": cannot read file"));
  if (static_cast<uint64_t>(size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file is ", size, " bytes, more than the limit of ", max_bytes));
  }
  in.seekg(0);
  std::string text(size, '\0');
  if (!in.read(text.data(), size)) {
    return absl::DataLossError(absl::StrCat(path, ": short read"));
  }
  return text;
}

}  // namespace kvfold
