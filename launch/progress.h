// Progress and the end-of-run summary of `kvfold run`, kept by world rank 0
// (the writer): jobs done/total, throughput, the prefill progress of the
// document rank 0 is reading, and an ETA. On a terminal one status line is
// redrawn in place; otherwise a plain log line is printed every `interval`.
#ifndef KVFOLD_LAUNCH_PROGRESS_H_
#define KVFOLD_LAUNCH_PROGRESS_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launch/report.h"

namespace kvfold {

class Progress {
 public:
  // `total` jobs in the input, of which `skipped` were done by an earlier
  // run. `out` is where lines go (stderr); `terminal` redraws in place.
  Progress(int64_t total, int64_t skipped, FILE* out, bool terminal, double interval_seconds);

  // Rank 0's current document: `done` of `total` tokens prefilled.
  void Prefill(const std::string& id, int64_t done, int64_t total);
  // A job's result line, as written (stats are read from it).
  void Finished(const nlohmann::json& result);
  // Redraws or logs if it is time (`force`: now).
  void Tick(bool force = false);
  // Ends the status line (terminal) before other output.
  void Close();

  int64_t finished() const { return ok_ + failed_; }
  // Totals of this run, for the summary.
  nlohmann::json Totals() const;
  // A few lines for people: throughput, compression, memory, failures.
  std::string Table(const nlohmann::json& summary) const;

 private:
  std::string Status() const;

  int64_t total_, skipped_;
  FILE* out_;
  bool terminal_;
  double interval_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = Clock::now();
  bool drawn_ = false;
  bool changed_ = false;  // since the last log line
  int64_t ok_ = 0, failed_ = 0;
  int64_t tokens_in_ = 0, tokens_out_ = 0, document_tokens_ = 0;
  double prefill_seconds_ = 0, decode_seconds_ = 0, compression_sum_ = 0;
  std::vector<nlohmann::json> failures_;
  std::string prefill_id_;
  int64_t prefill_done_ = 0, prefill_total_ = 0;
};

// Human sizes: "12.3 MiB".
std::string Bytes(double bytes);

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_PROGRESS_H_
