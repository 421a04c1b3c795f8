"""Pictures and a table from tools/eval/sweep.py results.

    python3 tools/eval/plot.py --results results.jsonl --out DIR [--length 8192]

Writes DIR/accuracy_vs_compression.png (at --length: accuracy against the
mean compression ratio, one line per policy, Full as a dashed line),
DIR/memory_vs_length.png (peak cache bytes allocated per sequence against
document length, Full vs each fixed-size policy measured at two or more
lengths, at its most measured budget),
DIR/throughput_vs_length.png (prompt tokens/s of the whole eval) and
DIR/table.md (accuracy per policy x budget x length, and per task at
--length). Needs matplotlib (tools/eval/requirements.txt).
"""
import argparse
import collections
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["full", "streaming", "h2o", "snapkv", "pyramidkv", "kvmerger", "lococo"]


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--length", type=int, default=8192)
    args = ap.parse_args()
    rows = load(args.results)
    os.makedirs(args.out, exist_ok=True)
    labels = [l for l in ORDER if any(r["label"] == l for r in rows)]

    def ratio(r):
        g = r["groups"]
        return sum(x["mean_compression_ratio"] * x["samples"] for x in g) / sum(
            x["samples"] for x in g)

    at = [r for r in rows if r["length"] == args.length]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        pts = sorted((ratio(r), r["accuracy"]) for r in at if r["label"] == label)
        if not pts:
            continue
        if label == "full":
            ax.axhline(pts[0][1], ls="--", c="k", label=f"full ({pts[0][1]:.2f})")
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compression ratio (full-cache features / features held)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title(f"kvfold built-in model, {args.length}-token tasks")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "accuracy_vs_compression.png"), dpi=110)

    lengths = sorted({r["length"] for r in rows})
    for name, key, ylabel in (("memory_vs_length", "peak", "peak KV cache per sequence (MiB)"),
                              ("throughput_vs_length", "tps", "prompt tokens / s (2 cores)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label in labels:
            # One budget per line: the one measured at the most lengths.
            mine = [r for r in rows if r["label"] == label]
            counts = collections.Counter(r["budget"] for r in mine)
            budget = max(counts, key=lambda b: (counts[b], b))
            by_len = {r["length"]: (budget, r) for r in mine if r["budget"] == budget}
            if len(by_len) < 2:
                continue
            xs = sorted(by_len)
            if key == "peak":
                ys = [max(g["peak_cache_bytes"] for g in by_len[x][1]["groups"]) / 2**20 for x in xs]
            else:
                ys = [by_len[x][1]["prompt_tokens_per_second"] for x in xs]
            budget = by_len[xs[0]][0]
            ax.plot(xs, ys, marker="o", label=label if label == "full" else f"{label} ({budget} slots)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, f"{name}.png"), dpi=110)

    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("| length | policy | slots | compression | accuracy | " +
                " | ".join(sorted({t for r in rows for t in r["accuracy_by_task"]})) + " |\n")
        tasks = sorted({t for r in rows for t in r["accuracy_by_task"]})
        f.write("|---" * (5 + len(tasks)) + "|\n")
        for r in sorted(rows, key=lambda r: (r["length"], ORDER.index(r["label"]), r["budget"])):
            f.write(f"| {r['length']} | {r['label']} | {r['budget'] or 'all'} | "
                    f"{ratio(r):.1f}x | {r['accuracy']:.3f} | " +
                    " | ".join(f"{r['accuracy_by_task'].get(t, float('nan')):.2f}" for t in tasks) +
                    " |\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
