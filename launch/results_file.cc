#include "launch/results_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "models/json_parse.h"

namespace kvfold {
namespace {

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::PermissionDeniedError(
      absl::StrCat(path, ": cannot ", what, ": ", std::strerror(errno)));
}

// Reads the whole file from the start.
absl::StatusOr<std::string> ReadAll(int fd, const std::string& path) {
  std::string text;
  char buffer[1 << 16];
  off_t offset = 0;
  for (;;) {
    const ssize_t n = pread(fd, buffer, sizeof(buffer), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("read it", path);
    }
    if (n == 0) return text;
    text.append(buffer, n);
    offset += n;
  }
}

}  // namespace

absl::StatusOr<ResultsFile> ResultsFile::Open(const std::string& path,
                                              std::vector<std::string>* warnings) {
  if (path.empty()) return absl::InvalidArgumentError("--output is required");
  int fd = open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  const bool created = fd >= 0;
  // (A dangling symlink gives EEXIST: the file is created through it.)
  if (!created && errno == EEXIST) {
    fd = open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  }
  if (fd < 0) return Errno("open it for writing", path);
  ResultsFile f(path, fd);
  f.created_ = created;
  struct stat st;
  if (fstat(fd, &st) != 0) return Errno("stat it", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": another process (a kvfold run?) holds it; one run per output file"));
  }
  std::string text;
  {
    absl::StatusOr<std::string> read = ReadAll(fd, path);
    if (!read.ok()) return read.status();
    text = std::move(*read);
  }
  const size_t complete = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  if (complete < text.size()) {
    if (ftruncate(fd, static_cast<off_t>(complete)) != 0) return Errno("truncate it", path);
    if (warnings != nullptr) {
      warnings->push_back(absl::StrCat(path, ": cut off a half-written last line (",
                                       text.size() - complete,
                                       " bytes) left by an interrupted run"));
    }
  }
  int64_t line = 0;
  for (size_t begin = 0; begin < complete;) {
    const size_t end = text.find('\n', begin);
    ++line;
    const std::string_view s(text.data() + begin, end - begin);
    begin = end + 1;
    if (s.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const absl::StatusOr<nlohmann::json> parsed =
        ParseJsonLimited(absl::string_view(s.data(), s.size()), path);
    const nlohmann::json j = parsed.ok() ? *parsed : nlohmann::json();
    if (!parsed.ok() || !j.is_object() || !j.contains("id") || !j["id"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line,
          ": not a kvfold result line (a JSON object with a string \"id\"); refusing to "
          "append to this file"));
    }
    f.done_.insert(j["id"].get<std::string>());
    ++f.lines_before_;
  }
  return f;
}

ResultsFile::ResultsFile(ResultsFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(other.fd_),
      done_(std::move(other.done_)),
      lines_before_(other.lines_before_),
      created_(other.created_),
      appended_(other.appended_) {
  other.fd_ = -1;
}

ResultsFile::~ResultsFile() {
  if (fd_ >= 0) close(fd_);
}

absl::Status ResultsFile::Append(const std::string& id, const std::string& json_line) {
  const std::string line = json_line + "\n";
  // One write: with O_APPEND the line lands whole at the end of the file.
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const absl::Status error = Errno("append a result", path_);
      // Leave no half line behind (e.g. a full disk).
      if (written > 0) {
        struct stat st;
        if (fstat(fd_, &st) == 0) (void)!ftruncate(fd_, st.st_size - off_t(written));
      }
      return error;
    }
    written += size_t(n);
  }
  if (fdatasync(fd_) != 0) return Errno("flush a result to the disk", path_);
  done_.insert(id);
  appended_ = true;
  return absl::OkStatus();
}

void ResultsFile::RemoveIfUnused() {
  if (created_ && !appended_ && fd_ >= 0) unlink(path_.c_str());
}

}  // namespace kvfold
