// Timing and JSON output shared by the kvfold subcommands and benchmarks.
#ifndef KVFOLD_LAUNCH_REPORT_H_
#define KVFOLD_LAUNCH_REPORT_H_

#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvfold {

using Clock = std::chrono::steady_clock;

// Seconds since `t`.
inline double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The median (upper middle for an even count); 0 for none.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// This process's peak resident memory so far.
inline int64_t PeakRssBytes() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss) * 1024;  // KiB on Linux
}

// One JSON object per line on stdout, flushed (results are read as they
// come).
inline void PrintJson(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_REPORT_H_
