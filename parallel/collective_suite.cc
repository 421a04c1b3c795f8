#include "parallel/collective_suite.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvfold {
namespace {

TensorView View(std::vector<float>& v) {
  return {v.data(), DType::kF32, Device::Cpu(), {static_cast<int64_t>(v.size())}};
}
TensorView View(std::vector<int32_t>& v) {
  return {v.data(), DType::kI32, Device::Cpu(), {static_cast<int64_t>(v.size())}};
}

}  // namespace

std::vector<std::string> RunCollectiveSuite(Communicator& comm) {
  std::vector<std::string> failures;
  const int r = comm.rank(), n = comm.size();
  auto fail = [&](const std::string& what) {
    failures.push_back(absl::StrCat(comm.kind(), " rank ", r, "/", n, ": ", what));
  };
  auto ok = [&](const absl::Status& s, const char* op) {
    if (!s.ok()) fail(absl::StrCat(op, " failed: ", s.message()));
    return s.ok();
  };
  // Sizes that are not multiples of anything, and an empty one.
  for (int64_t len : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{0}}) {
    std::vector<float> x(len);
    for (int64_t i = 0; i < len; ++i) x[i] = float(r * 1000 + i) * 0.5f;
    if (ok(comm.AllReduce(View(x), ReduceOp::kSum), "AllReduce sum")) {
      for (int64_t i = 0; i < len; ++i) {
        const float want = 0.5f * float(1000 * n * (n - 1) / 2 + n * i);
        if (x[i] != want) {
          fail(absl::StrCat("AllReduce sum len ", len, " [", i, "] = ", x[i], ", want ", want));
          break;
        }
      }
    }
    std::vector<int32_t> m(len);
    for (int64_t i = 0; i < len; ++i) m[i] = int32_t((r * 7 + i) % n);
    if (ok(comm.AllReduce(View(m), ReduceOp::kMax), "AllReduce max")) {
      for (int64_t i = 0; i < len; ++i) {
        int32_t want = 0;
        for (int q = 0; q < n; ++q) want = std::max<int32_t>(want, int32_t((q * 7 + i) % n));
        if (m[i] != want) {
          fail(absl::StrCat("AllReduce max [", i, "] = ", m[i], ", want ", want));
          break;
        }
      }
    }
    std::vector<float> all(len * n);
    std::vector<float> mine(len);
    for (int64_t i = 0; i < len; ++i) mine[i] = float(r) + float(i) / 1024.0f;
    if (ok(comm.AllGather(View(mine), View(all)), "AllGather")) {
      for (int q = 0; q < n; ++q) {
        for (int64_t i = 0; i < len; ++i) {
          if (all[q * len + i] != float(q) + float(i) / 1024.0f) {
            fail(absl::StrCat("AllGather block ", q, " [", i, "]"));
            q = n;
            break;
          }
        }
      }
    }
    std::vector<float> blocks(len * n), out(len);
    for (int64_t j = 0; j < len * n; ++j) blocks[j] = float(r + 1) * float(j);
    if (ok(comm.ReduceScatter(View(blocks), View(out), ReduceOp::kSum), "ReduceScatter")) {
      for (int64_t i = 0; i < len; ++i) {
        const float want = float(n * (n + 1) / 2) * float(r * len + i);
        if (out[i] != want) {
          fail(absl::StrCat("ReduceScatter [", i, "] = ", out[i], ", want ", want));
          break;
        }
      }
    }
    for (int root = 0; root < n; root += std::max(1, n - 1)) {
      std::vector<int32_t> b(len, r == root ? 42 + root : -1);
      if (ok(comm.Broadcast(View(b), root), "Broadcast")) {
        for (int64_t i = 0; i < len; ++i) {
          if (b[i] != 42 + root) {
            fail(absl::StrCat("Broadcast from ", root, " [", i, "] = ", b[i]));
            break;
          }
        }
      }
    }
  }
  // A ring of sends: each rank sends to the next and receives from the
  // previous, with two tags in the opposite order.
  if (n > 1) {
    std::vector<float> a(5, float(r)), b(3, float(-r));
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    ok(comm.Send(View(a), next, 1), "Send tag 1");
    ok(comm.Send(View(b), next, 2), "Send tag 2");
    std::vector<float> ra(5), rb(3);
    if (ok(comm.Recv(View(rb), prev, 2), "Recv tag 2") && rb[0] != float(-prev)) {
      fail("Recv tag 2 got the wrong message");
    }
    if (ok(comm.Recv(View(ra), prev, 1), "Recv tag 1") && ra[4] != float(prev)) {
      fail("Recv tag 1 got the wrong message");
    }
  }
  ok(comm.Barrier(), "Barrier");
  // Text: every rank's own length (rank 0 empty), and a ring of messages.
  const std::string text(size_t(r) * 5, char('a' + r));
  absl::StatusOr<std::vector<std::string>> texts = AllGatherText(comm, text);
  if (ok(texts.status(), "AllGatherText")) {
    for (int q = 0; q < n; ++q) {
      if ((*texts)[q] != std::string(size_t(q) * 5, char('a' + q))) {
        fail(absl::StrCat("AllGatherText: rank ", q, "'s text is \"", (*texts)[q], "\""));
      }
    }
  }
  if (n > 1) {
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    ok(SendText(comm, text + "!", next, 3), "SendText");
    absl::StatusOr<std::string> got = RecvText(comm, prev, 3);
    if (ok(got.status(), "RecvText") && *got != std::string(size_t(prev) * 5, char('a' + prev)) + "!") {
      fail(absl::StrCat("RecvText got \"", *got, "\""));
    }
  }
  std::string root_text = r == n - 1 ? "from the last rank" : "";
  if (ok(BroadcastText(comm, &root_text, n - 1), "BroadcastText") &&
      root_text != "from the last rank") {
    fail(absl::StrCat("BroadcastText got \"", root_text, "\""));
  }
  // Probe (not in NCCL): nothing waits before the send; the message shows
  // up after it, and is gone once received.
  if (n > 1 && comm.kind() != "nccl") {
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    absl::StatusOr<bool> early = comm.Probe(prev, 4);
    if (ok(early.status(), "Probe") && *early) fail("Probe saw a message before any was sent");
    ok(comm.Barrier(), "Barrier before Probe");
    ok(SendText(comm, "probe", next, 4), "SendText for Probe");
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    absl::StatusOr<bool> seen = false;
    while (seen.ok() && !*seen && absl::Now() < deadline) seen = comm.Probe(prev, 4);
    if (ok(seen.status(), "Probe") && !*seen) fail("Probe never saw the message sent");
    absl::StatusOr<std::string> got = RecvText(comm, prev, 4);
    if (ok(got.status(), "RecvText after Probe") && *got != "probe") fail("wrong probed message");
    absl::StatusOr<bool> after = comm.Probe(prev, 4);
    if (ok(after.status(), "Probe") && *after) fail("Probe still sees a received message");
    ok(comm.Barrier(), "Barrier after Probe");
  }
  // Split into even and odd ranks, in reverse rank order: the new group's
  // ranks and a sum over it follow.
  absl::StatusOr<std::unique_ptr<Communicator>> half = comm.Split(r % 2, -r);
  if (ok(half.status(), "Split")) {
    Communicator& h = **half;
    const int members = (n - r % 2 + 1) / 2;
    std::vector<int32_t> v = {r};
    const int want_rank = (n - 1 - r) / 2;  // members above me come first
    int32_t want_sum = 0;
    for (int q = r % 2; q < n; q += 2) want_sum += q;
    if (h.size() != members || h.rank() != want_rank) {
      fail(absl::StrCat("Split: rank ", h.rank(), " of ", h.size(), ", want ", want_rank,
                        " of ", members));
    } else if (ok(h.AllReduce(View(v), ReduceOp::kSum), "AllReduce after Split") &&
               v[0] != want_sum) {
      fail(absl::StrCat("AllReduce after Split = ", v[0], ", want ", want_sum));
    }
  }
  // Bad arguments fail on every rank without a collective starting.
  std::vector<float> x(3), y(4);
  if (comm.AllGather(View(x), View(y)).ok()) fail("AllGather with a wrong size succeeded");
  if (comm.Broadcast(View(x), n).ok()) fail("Broadcast from a missing root succeeded");
  ok(comm.Barrier(), "Barrier after bad calls");
  return failures;
}

}  // namespace kvfold
