#include "launch/progress.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvfold {
namespace {

constexpr double kRedrawSeconds = 0.25;
constexpr size_t kMaxFailuresKept = 100;

std::string Duration(double seconds) {
  const int64_t s = std::llround(seconds);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
}

}  // namespace

std::string Bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return absl::StrFormat(u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
}

Progress::Progress(int64_t total, int64_t skipped, FILE* out, bool terminal,
                   double interval_seconds)
    : total_(total), skipped_(skipped), out_(out), terminal_(terminal),
      interval_(interval_seconds) {}

void Progress::Prefill(const std::string& id, int64_t done, int64_t total) {
  prefill_id_ = id;
  prefill_done_ = done;
  prefill_total_ = total;
  changed_ = true;
  Tick();
}

void Progress::Finished(const nlohmann::json& r) {
  if (r.contains("error")) {
    ++failed_;
    if (failures_.size() < kMaxFailuresKept) {
      failures_.push_back({{"id", r["id"]}, {"error", r["error"]}});
    }
  } else {
    ++ok_;
    tokens_in_ += r.value("tokens_in", int64_t{0});
    tokens_out_ += r.value("tokens_out", int64_t{0});
    document_tokens_ += r.value("document_tokens", int64_t{0});
    const nlohmann::json& t = r["timings"];
    prefill_seconds_ += t.value("prefill_seconds", 0.0);
    decode_seconds_ += t.value("decode_seconds", 0.0);
    compression_sum_ += r["cache"].value("compression_ratio", 0.0);
  }
  if (prefill_total_ > 0 && prefill_done_ >= prefill_total_) prefill_total_ = 0;
  changed_ = true;
  Tick();
}

std::string Progress::Status() const {
  const double wall = Since(start_);
  const int64_t done = finished();
  std::string s = absl::StrCat(skipped_ + done, "/", total_, " jobs");
  if (failed_ > 0) absl::StrAppend(&s, " (", failed_, " failed)");
  if (skipped_ > 0) absl::StrAppend(&s, " [", skipped_, " from an earlier run]");
  absl::StrAppend(&s, absl::StrFormat(", %.0f tok/s", (tokens_in_ + tokens_out_) / wall));
  if (prefill_total_ > 0 && prefill_done_ < prefill_total_) {
    absl::StrAppend(&s, absl::StrFormat(", prefill %s %d/%d tokens (%.0f%%)", prefill_id_,
                                        prefill_done_, prefill_total_,
                                        100.0 * prefill_done_ / prefill_total_));
  }
  const int64_t left = total_ - skipped_ - done;
  if (done > 0 && left > 0) absl::StrAppend(&s, ", ETA ", Duration(wall / done * left));
  absl::StrAppend(&s, ", ", Duration(wall), " elapsed");
  return s;
}

void Progress::Tick(bool force) {
  const double since = Since(last_);
  if (!force && since < (terminal_ ? kRedrawSeconds : interval_)) return;
  // A log line only says something new.
  if (!force && !terminal_ && !changed_) return;
  last_ = Clock::now();
  changed_ = false;
  if (terminal_) {
    std::fprintf(out_, "\r\033[Kkvfold: %s", Status().c_str());
    drawn_ = true;
  } else {
    std::fprintf(out_, "kvfold: progress: %s\n", Status().c_str());
  }
  std::fflush(out_);
}

void Progress::Close() {
  if (terminal_ && drawn_) std::fprintf(out_, "\r\033[K");
  drawn_ = false;
  std::fflush(out_);
}

nlohmann::json Progress::Totals() const {
  const double wall = Since(start_);
  const int64_t done = finished();
  return {{"jobs",
           {{"total", total_},
            {"done_before", skipped_},
            {"run", done},
            {"ok", ok_},
            {"failed", failed_}}},
          {"wall_seconds", wall},
          {"documents_per_hour", done / wall * 3600},
          {"tokens_in", tokens_in_},
          {"tokens_out", tokens_out_},
          {"tokens_per_s", (tokens_in_ + tokens_out_) / wall},
          {"output_tokens_per_s", tokens_out_ / wall},
          {"prefill_tokens_per_s", prefill_seconds_ > 0 ? document_tokens_ / prefill_seconds_ : 0},
          {"decode_tokens_per_s", decode_seconds_ > 0 ? tokens_out_ / decode_seconds_ : 0},
          {"average_compression_ratio", ok_ > 0 ? compression_sum_ / ok_ : 0},
          {"failures", failures_}};
}

std::string Progress::Table(const nlohmann::json& s) const {
  const nlohmann::json& jobs = s["jobs"];
  std::string t = absl::StrFormat(
      "kvfold run: %d jobs: %d ok, %d failed, %d done before; %s\n", jobs["total"].get<int64_t>(),
      jobs["ok"].get<int64_t>(), jobs["failed"].get<int64_t>(),
      jobs["done_before"].get<int64_t>(), Duration(s["wall_seconds"].get<double>()));
  absl::StrAppend(&t, absl::StrFormat("  %-18s %.1f\n", "documents/hour",
                                      s["documents_per_hour"].get<double>()));
  absl::StrAppend(&t, absl::StrFormat("  %-18s %.1f (%d in, %d out; decode %.1f tok/s)\n",
                                      "tokens/s", s["tokens_per_s"].get<double>(),
                                      s["tokens_in"].get<int64_t>(),
                                      s["tokens_out"].get<int64_t>(),
                                      s["decode_tokens_per_s"].get<double>()));
  absl::StrAppend(&t, absl::StrFormat("  %-18s %.1fx average (%s)\n", "compression",
                                      s["average_compression_ratio"].get<double>(),
                                      s["cache_policy"].get<std::string>()));
  std::string memory, exchanged;
  for (const nlohmann::json& r : s["ranks"]) {
    absl::StrAppend(&memory, memory.empty() ? "" : ", ", "rank ", r["rank"].get<int>(), " ",
                    Bytes(r["peak_rss_bytes"].get<double>()));
  }
  absl::StrAppend(&t, absl::StrFormat("  %-18s %s\n", "peak memory", memory));
  absl::StrAppend(&t, absl::StrFormat("  %-18s %s over %d ranks\n", "bytes exchanged",
                                      Bytes(s["bytes_exchanged"].get<double>()),
                                      s["ranks"].size()));
  for (const nlohmann::json& f : s["failures"]) {
    absl::StrAppend(&t, absl::StrFormat("  %-18s %s: %s\n", "failed", f["id"].get<std::string>(),
                                        f["error"].get<std::string>()));
  }
  return t;
}

}  // namespace kvfold
