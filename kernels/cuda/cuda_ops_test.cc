// Every CUDA op against its CPU op on odd sizes, through the same dispatching
// entry points (kernels/ops.h). Tolerances are max |gpu - cpu| / max |cpu|:
// 1e-5 for f32 arithmetic, 2e-5 for GEMMs over bf16/f16 inputs (both sides
// see the same rounded inputs; only the summation order differs). Without a
// usable GPU every test is SKIPPED with the reason, never passed.
#include "kernels/cuda/cuda_ops.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/test_util.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace kvfold {
namespace {

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    absl::Status s = cuda::DeviceCount(&count);
    if (!s.ok()) GTEST_SKIP() << "no usable CUDA device: " << s.message();
    if (count == 0) GTEST_SKIP() << "no CUDA device";
    absl::StatusOr<cuda::Context*> cx = cuda::Context::Create(0);
    ASSERT_TRUE(cx.ok()) << cx.status();
    cx_.reset(*cx);
    gpu_.device = Device::Cuda(0);
    gpu_.cuda = cx_.get();
  }

  // A device copy of host data.
  template <typename T>
  Tensor Up(const std::vector<T>& host, DType dtype) {
    Tensor t({int64_t(host.size())}, dtype, gpu_.device);
    EXPECT_TRUE(CopyToDevice(gpu_, t.data(), host.data(), host.size() * sizeof(T)).ok());
    return t;
  }
  Tensor Up(const std::vector<float>& host) { return Up(host, DType::kF32); }
  Tensor Up(const std::vector<int32_t>& host) { return Up(host, DType::kI32); }
  // A device buffer poisoned with NaN, so unwritten outputs fail.
  Tensor Poisoned(int64_t n) {
    return Up(std::vector<float>(n, std::nanf("")));
  }
  template <typename T = float>
  std::vector<T> Down(const Tensor& t, int64_t n) {
    std::vector<T> host(n);
    EXPECT_TRUE(CopyToHost(gpu_, host.data(), t.data(), n * sizeof(T)).ok());
    return host;
  }

  std::unique_ptr<cuda::Context> cx_;
  Stream cpu_;
  Stream gpu_;
};

std::vector<uint16_t> Round(const std::vector<float>& x, DType t,
                            std::vector<float>* rounded) {
  std::vector<uint16_t> bits(x.size());
  rounded->resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    bits[i] = t == DType::kBF16 ? F32ToBf16(x[i]) : F32ToF16(x[i]);
    (*rounded)[i] = t == DType::kBF16 ? Bf16ToF32(bits[i]) : F16ToF32(bits[i]);
  }
  return bits;
}

TEST_F(CudaOpsTest, MatMulNTMatchesCpu) {
  const int64_t n = 131, k = 333;
  for (int64_t m : {1, 3, 70, 257}) {
    for (DType wt : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (bool acc : {false, true}) {
        std::vector<float> a = Random(m * k, m), b = Random(n * k, m + 1);
        std::vector<float> c = Random(m * n, m + 2);
        Tensor db;
        if (wt == DType::kF32) {
          db = Up(b);
        } else {
          std::vector<float> ra;
          Round(a, wt, &ra);
          a = ra;  // the GPU rounds a to the weights' type: so does the reference
          db = Up(Round(b, wt, &b), wt);
        }
        std::vector<float> want = c;
        ASSERT_TRUE(MatMulNT(cpu_, a.data(), k, b.data(), k, want.data(), n, m, n, k, acc).ok());
        Tensor da = Up(a), dc = acc ? Up(c) : Poisoned(m * n);
        ASSERT_TRUE(MatMulNT(gpu_, da.as<float>(), k, db.data(), wt, k,
                             dc.as<float>(), n, m, n, k, acc).ok());
        EXPECT_LT(RelErr(Down(dc, m * n), want), wt == DType::kF32 ? 1e-5 : 2e-5)
            << "m=" << m << " type=" << DTypeName(wt) << " accumulate=" << acc;
      }
    }
  }
}

TEST_F(CudaOpsTest, RowOpsMatchCpu) {
  const int64_t rows = 7, dim = 1001;
  std::vector<float> x = Random(rows * dim, 1), w = Random(dim, 2);
  std::vector<float> want(rows * dim);
  ASSERT_TRUE(RmsNorm(cpu_, x.data(), w.data(), 1e-5f, want.data(), rows, dim).ok());
  Tensor dx = Up(x), dw = Up(w), dy = Poisoned(rows * dim);
  ASSERT_TRUE(RmsNorm(gpu_, dx.as<float>(), dw.as<float>(), 1e-5f, dy.as<float>(), rows, dim).ok());
  EXPECT_LT(RelErr(Down(dy, rows * dim), want), 1e-5) << "rms_norm";

  want = x;
  ASSERT_TRUE(Softmax(cpu_, want.data(), rows, dim).ok());
  ASSERT_TRUE(Softmax(gpu_, dx.as<float>(), rows, dim).ok());
  EXPECT_LT(RelErr(Down(dx, rows * dim), want), 1e-5) << "softmax";

  std::vector<float> y = Random(rows * dim, 3);
  std::vector<float> got_cpu(rows * dim);
  ASSERT_TRUE(SiluMul(cpu_, x.data(), y.data(), got_cpu.data(), rows * dim).ok());
  dx = Up(x);
  Tensor dyy = Up(y), dout = Poisoned(rows * dim);
  ASSERT_TRUE(SiluMul(gpu_, dx.as<float>(), dyy.as<float>(), dout.as<float>(), rows * dim).ok());
  EXPECT_LT(RelErr(Down(dout, rows * dim), got_cpu), 1e-5) << "silu_mul";

  want = x;
  ASSERT_TRUE(AddInPlace(cpu_, want.data(), y.data(), rows * dim).ok());
  ASSERT_TRUE(AddBias(cpu_, want.data(), w.data(), rows, dim).ok());
  ASSERT_TRUE(AddInPlace(gpu_, dx.as<float>(), dyy.as<float>(), rows * dim).ok());
  ASSERT_TRUE(AddBias(gpu_, dx.as<float>(), dw.as<float>(), rows, dim).ok());
  EXPECT_LT(RelErr(Down(dx, rows * dim), want), 1e-6) << "add, add_bias";

  // Argmax with a tie: the first index wins on both.
  std::vector<float> logits = Random(3 * 50257, 4);
  logits[50257 + 7] = logits[50257 + 9000] = 100.0f;
  std::vector<int32_t> want_ids(3);
  ASSERT_TRUE(Argmax(cpu_, logits.data(), 3, 50257, want_ids.data()).ok());
  Tensor dl = Up(logits), ids = Up(std::vector<int32_t>(3, -1));
  ASSERT_TRUE(Argmax(gpu_, dl.as<float>(), 3, 50257, ids.as<int32_t>()).ok());
  EXPECT_EQ(Down<int32_t>(ids, 3), want_ids);
  EXPECT_EQ(want_ids[1], 7);
}

TEST_F(CudaOpsTest, RopeMatchesCpu) {
  const int64_t n = 13, heads = 5, d = 80;
  std::vector<float> x = Random(n * heads * d, 5), inv(d / 2);
  for (int64_t i = 0; i < d / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / d);
  std::vector<int32_t> pos(n);
  for (int64_t i = 0; i < n; ++i) pos[i] = int32_t(i * 9973);  // up to ~120K
  std::vector<float> want = x;
  ASSERT_TRUE(ApplyRope(cpu_, want.data(), pos.data(), inv.data(), n, heads, d).ok());
  Tensor dx = Up(x), dp = Up(pos), di = Up(inv);
  ASSERT_TRUE(ApplyRope(gpu_, dx.as<float>(), dp.as<int32_t>(), di.as<float>(), n, heads, d).ok());
  EXPECT_LT(RelErr(Down(dx, x.size()), want), 1e-5);
  EXPECT_FALSE(ApplyRope(gpu_, dx.as<float>(), dp.as<int32_t>(), di.as<float>(), n, heads, 7).ok());
}

TEST_F(CudaOpsTest, EmbeddingMatchesCpu) {
  const int64_t vocab = 1009, dim = 333;
  std::vector<float> table = Random(vocab * dim, 6);
  std::vector<int32_t> ids = {0, 1008, 5, -1, 5, 777};  // -1: a zero row
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<float> ref = table;
    Tensor dt = t == DType::kF32 ? Up(table) : Up(Round(table, t, &ref), t);
    std::vector<float> want(ids.size() * dim);
    ASSERT_TRUE(Embedding(cpu_, ref.data(), DType::kF32, ids.data(), ids.size(), dim, want.data()).ok());
    Tensor di = Up(ids), dout = Poisoned(want.size());
    ASSERT_TRUE(Embedding(gpu_, dt.data(), t, di.as<int32_t>(), ids.size(), dim, dout.as<float>()).ok());
    EXPECT_EQ(RelErr(Down(dout, want.size()), want), 0.0) << DTypeName(t);
  }
}

TEST_F(CudaOpsTest, AppendAndGatherMatchCpu) {
  const int64_t heads = 3, d = 72, cap = 53, n = 9, offset = 17;
  std::vector<float> k = Random(n * heads * d, 7), v = Random(n * heads * d, 8);
  std::vector<float> keys = Random(heads * cap * d, 9), values = Random(heads * cap * d, 10);
  Tensor dk = Up(k), dv = Up(v), dkeys = Up(keys), dvalues = Up(values);
  ASSERT_TRUE(AppendKv(cpu_, k.data(), v.data(), n, heads, d, keys.data(), values.data(), cap, offset).ok());
  ASSERT_TRUE(AppendKv(gpu_, dk.as<float>(), dv.as<float>(), n, heads, d, dkeys.as<float>(),
                       dvalues.as<float>(), cap, offset).ok());
  EXPECT_EQ(RelErr(Down(dkeys, keys.size()), keys), 0.0);
  EXPECT_EQ(RelErr(Down(dvalues, values.size()), values), 0.0);
  // Keep 11 ascending slots per head, different per head.
  const int64_t count = 11;
  std::vector<int32_t> keep;
  for (int64_t g = 0; g < heads; ++g) {
    for (int64_t i = 0; i < count; ++i) keep.push_back(int32_t(i * (g + 2) + g));
  }
  ASSERT_TRUE(GatherRows(cpu_, keys.data(), keep.data(), count, heads, cap, d).ok());
  Tensor dkeep = Up(keep);
  ASSERT_TRUE(GatherRows(gpu_, dkeys.as<float>(), dkeep.as<int32_t>(), count, heads, cap, d).ok());
  std::vector<float> got = Down(dkeys, keys.size());
  for (int64_t g = 0; g < heads; ++g) {
    for (int64_t j = 0; j < count * d; ++j) {
      ASSERT_EQ(got[g * cap * d + j], keys[g * cap * d + j]) << "head " << g;
    }
  }
}

struct AttnCase {
  int64_t nq, nk, q_heads, kv_heads, d, col_from;
};

TEST_F(CudaOpsTest, AttentionMatchesCpu) {
  // Prefill chunks over a cache, decode steps (split keys), GQA groups of 1
  // to 8, head sizes 16 to 256, column sums from a window of queries.
  const std::vector<AttnCase> cases = {
      {1, 1, 4, 2, 64, 0},       {1, 1000, 32, 8, 128, 0},
      {1, 517, 8, 8, 256, 0},    {3, 3000, 28, 4, 128, 1},
      {77, 300, 6, 2, 80, 40},   {64, 64, 4, 1, 16, 0},
      {200, 1200, 32, 8, 128, 168}, {33, 70, 12, 3, 64, 33},
  };
  for (const AttnCase& c : cases) {
    std::vector<float> q = Random(c.nq * c.q_heads * c.d, c.nk);
    const int64_t stride = c.nk + 5;
    std::vector<float> k = Random(c.kv_heads * stride * c.d, c.nk + 1);
    std::vector<float> v = Random(c.kv_heads * stride * c.d, c.nk + 2);
    std::vector<float> out(c.nq * c.q_heads * c.d), lse(c.q_heads * c.nq),
        cols(c.kv_heads * c.nk);
    AttentionArgs a;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    a.out = out.data();
    a.lse = lse.data();
    a.col_sums = cols.data();
    a.col_sums_from_query = c.col_from;
    a.num_queries = c.nq;
    a.num_keys = c.nk;
    a.kv_stride = stride;
    a.causal_offset = c.nk - c.nq;
    a.q_heads = c.q_heads;
    a.kv_heads = c.kv_heads;
    a.head_dim = c.d;
    a.scale = 1.0f / std::sqrt(float(c.d));
    ASSERT_TRUE(Attention(cpu_, a).ok());
    Tensor dq = Up(q), dk = Up(k), dv = Up(v), dout = Poisoned(out.size()),
           dlse = Poisoned(lse.size()), dcols = Poisoned(cols.size());
    AttentionArgs g = a;
    g.q = dq.as<float>();
    g.k = dk.as<float>();
    g.v = dv.as<float>();
    g.out = dout.as<float>();
    g.lse = dlse.as<float>();
    g.col_sums = dcols.as<float>();
    ASSERT_TRUE(Attention(gpu_, g).ok());
    const std::string what = "nq=" + std::to_string(c.nq) + " nk=" + std::to_string(c.nk) +
                             " d=" + std::to_string(c.d);
    EXPECT_LT(RelErr(Down(dout, out.size()), out), 1e-5) << what;
    EXPECT_LT(RelErr(Down(dlse, lse.size()), lse), 1e-5) << what;
    EXPECT_LT(RelErr(Down(dcols, cols.size()), cols), 1e-5) << what;
    // Without the optional outputs (the decode path).
    g.lse = nullptr;
    g.col_sums = nullptr;
    Tensor dout2 = Poisoned(out.size());
    g.out = dout2.as<float>();
    ASSERT_TRUE(Attention(gpu_, g).ok());
    EXPECT_LT(RelErr(Down(dout2, out.size()), out), 1e-5) << what;
  }
}

}  // namespace
}  // namespace kvfold
