#!/usr/bin/env python3
"""Draws the plots of docs/benchmarks.md from the JSON lines that
benches/plots/run.sh writes to docs/benchmarks/.

    python3 benches/plots/plot.py [RESULTS_DIR]   # default: docs/benchmarks
    python3 benches/plots/plot.py --tables [RESULTS_DIR]   # the markdown tables

Reads concurrency.jsonl, baselines.jsonl, scaling.jsonl and
bytes_vs_rotations.jsonl (each line one JSON object from `rotoken bench
--json` or `bytes_per_family`) and writes throughput_vs_concurrency.png,
latency_percentiles.png, bytes_per_family.png, rotoken_vs_sqlite.png and
scaling.png beside them. Needs matplotlib (`pip install matplotlib`).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(directory, name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def save(fig, directory, name):
    fig.tight_layout()
    path = os.path.join(directory, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def baseline(rows, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def throughput_vs_concurrency(d, conc, base):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    c = [r["concurrency"] for r in conc]
    ax.plot(c, [r["rotations_per_sec"] for r in conc], "o-", label="rotoken, durable, group commit")
    if all("sqlite_rotations_per_sec" in r for r in conc):
        ax.plot(c, [r["sqlite_rotations_per_sec"] for r in conc], "s-",
                label="SQLite one row per token, FULL, 1 rotation/txn")
        ax.plot(c, [r["sqlite_batched_rotations_per_sec"] for r in conc], "^--",
                label="SQLite, handed batches of up to 100/txn")
    nogc = [r for r in base if r.get("max_batch") == 1]
    if nogc:
        ax.plot([r["concurrency"] for r in nogc], [r["rotations_per_sec"] for r in nogc], "x:",
                label="rotoken, durable, group commit off")
    relaxed = baseline(base, durability="none", concurrency=1)
    if relaxed:
        ax.axhline(relaxed["rotations_per_sec"], color="grey", linestyle="--", linewidth=1,
                   label="rotoken, non-durable, 1 caller")
        ax.axhline(relaxed["rotations_per_sec"] / 2, color="grey", linestyle=":", linewidth=1,
                   label="target: half of that")
    ax.set_xscale("log", base=2)
    ax.set_xticks(c)
    ax.set_xticklabels([str(x) for x in c])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("rotations per second")
    ax.set_title(f"Rotation throughput against concurrency ({conc[0]['families']:,} families)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, d, "throughput_vs_concurrency.png")


def latency_percentiles(d, conc):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    c = [r["concurrency"] for r in conc]
    for key, style, label in [("p50_us", "o-", "rotoken p50"), ("p99_us", "s-", "rotoken p99"),
                              ("p999_us", "^-", "rotoken p99.9")]:
        ax.plot(c, [r[key] / 1000 for r in conc], style, label=label)
    if all("sqlite_p50_us" in r for r in conc):
        for key, style, label in [("sqlite_p50_us", "o--", "SQLite p50"), ("sqlite_p99_us", "s--", "SQLite p99")]:
            ax.plot(c, [r[key] / 1000 for r in conc], style, alpha=0.6, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(c)
    ax.set_xticklabels([str(x) for x in c])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("latency of one rotation (ms)")
    ax.set_title("Rotation latency percentiles, durable")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, d, "latency_percentiles.png")


def bytes_per_family(d, rows):
    rows = sorted(rows, key=lambda r: r["rotations_per_family"])
    # Zero does not sit on a log axis: plot K rotations at K + 1 tokens issued.
    x = [r["rotations_per_family"] + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(x, [r["bytes_per_family"] for r in rows], "o-", label="rotoken (after compact)")
    if all("sqlite_bytes_per_family" in r for r in rows):
        ax.plot(x, [r["sqlite_bytes_per_family"] for r in rows], "s-",
                label="SQLite one row per token (after VACUUM)")
    ax.axhline(512, color="grey", linestyle=":", linewidth=1, label="512 bytes")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([str(r["rotations_per_family"]) for r in rows])
    ax.set_xlabel("rotations per family")
    ax.set_ylabel("bytes on disk per live family")
    ax.set_title(f"Storage per family against rotations ({rows[0]['families']:,} families)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, d, "bytes_per_family.png")


def rotoken_vs_sqlite(d, conc):
    rows = [r for r in conc if "sqlite_rotations_per_sec" in r]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = 0.27
    xs = range(len(rows))
    ax.bar([x - width for x in xs], [r["rotations_per_sec"] for r in rows], width, label="rotoken, durable")
    ax.bar(list(xs), [r["sqlite_rotations_per_sec"] for r in rows], width, label="SQLite FULL, 1/txn")
    ax.bar([x + width for x in xs], [r["sqlite_batched_rotations_per_sec"] for r in rows], width,
           label="SQLite FULL, batches of up to 100")
    for x, r in zip(xs, rows):
        ax.annotate(f"{r['ratio_vs_sqlite']:.1f}x", (x - width, r["rotations_per_sec"]),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r['concurrency']} callers" for r in rows])
    ax.set_ylabel("rotations per second")
    ax.set_title("rotoken against the one-row-per-token SQLite design (labels: ratio to 1/txn)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, d, "rotoken_vs_sqlite.png")


def scaling(d, rows):
    if not rows:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for mode, style, label in [("immediate", "o-", "durable, 64 callers"), ("none", "s-", "non-durable, 1 caller")]:
        rs = sorted([r for r in rows if r["durability"] == mode], key=lambda r: r["families"])
        if rs:
            ax1.plot([r["families"] for r in rs], [r["rotations_per_sec"] for r in rs], style, label=label)
    rs = sorted([r for r in rows if r["durability"] == "immediate"] or rows, key=lambda r: r["families"])
    ax2.plot([r["families"] for r in rs], [r["bytes_per_family"] for r in rs], "o-")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("live families")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("rotations per second")
    ax1.set_title("Throughput against live families")
    ax1.legend(fontsize=8)
    ax2.set_ylabel("bytes per family after compact")
    ax2.set_title("Storage per family against live families")
    ax2.set_ylim(bottom=0)
    save(fig, d, "scaling.png")


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def tables(d):
    """Prints the tables of docs/benchmarks.md (markdown) from the same files."""
    conc = sorted(load(d, "concurrency.jsonl"), key=lambda r: r["concurrency"])
    print("| callers | rotoken rot/s | p50 µs | p99 µs | p99.9 µs | rotations per commit | bytes written per rotation "
          "| SQLite FULL 1/txn rot/s | SQLite batched rot/s (batch) | rotoken ÷ SQLite | rotoken ÷ SQLite batched |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in conc:
        print(f"| {r['concurrency']} | {fmt(r['rotations_per_sec'])} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} "
              f"| {fmt(r['p999_us'])} | {fmt(r.get('mean_batch'), 1)} | {fmt(r.get('write_bytes_per_rotation'))} "
              f"| {fmt(r.get('sqlite_rotations_per_sec'))} | {fmt(r.get('sqlite_batched_rotations_per_sec'))} "
              f"({r.get('sqlite_batch', '-')}) | {fmt(r.get('ratio_vs_sqlite'), 2)} "
              f"| {fmt(r.get('ratio_vs_sqlite_batched'), 2)} |")
    print()
    print("| baseline | callers | rot/s | p50 µs | p99 µs | p99.9 µs | rotations per commit | bytes written per rotation |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in load(d, "baselines.jsonl"):
        what = "non-durable (relaxed)" if r["durability"] == "none" else (
            "durable, group commit off" if r.get("max_batch") == 1 else "durable")
        print(f"| {what} | {r['concurrency']} | {fmt(r['rotations_per_sec'])} | {fmt(r['p50_us'])} "
              f"| {fmt(r['p99_us'])} | {fmt(r['p999_us'])} | {fmt(r.get('mean_batch'), 1)} "
              f"| {fmt(r.get('write_bytes_per_rotation'))} |")
    print()
    print("| live families | mode | callers | rot/s | p50 µs | p99 µs | rotations per commit "
          "| bytes written per rotation | bytes per family | populate s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(load(d, "scaling.jsonl"), key=lambda r: (r["families"], r["durability"])):
        mode = "durable" if r["durability"] == "immediate" else "non-durable"
        print(f"| {r['families']:,} | {mode} | {r['concurrency']} | {fmt(r['rotations_per_sec'])} "
              f"| {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | {fmt(r.get('mean_batch'), 1)} "
              f"| {fmt(r.get('write_bytes_per_rotation'))} | {fmt(r['bytes_per_family'], 1)} "
              f"| {fmt(r['populate_secs'], 1)} |")
    print()
    print("| rotations per family | rotoken bytes per family | SQLite bytes per family | SQLite rows |")
    print("|---:|---:|---:|---:|")
    for r in sorted(load(d, "bytes_vs_rotations.jsonl"), key=lambda r: r["rotations_per_family"]):
        print(f"| {r['rotations_per_family']} | {fmt(r['bytes_per_family'], 1)} "
              f"| {fmt(r.get('sqlite_bytes_per_family'), 1)} | {fmt(r.get('sqlite_rows'))} |")


def main():
    if "--tables" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--tables"]
        tables(args[0] if args else "docs/benchmarks")
        return
    d = sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks"
    conc = sorted(load(d, "concurrency.jsonl"), key=lambda r: r["concurrency"])
    base = load(d, "baselines.jsonl")
    if conc:
        throughput_vs_concurrency(d, conc, base)
        latency_percentiles(d, conc)
        rotoken_vs_sqlite(d, conc)
    rows = load(d, "bytes_vs_rotations.jsonl")
    if rows:
        bytes_per_family(d, rows)
    scaling(d, load(d, "scaling.jsonl"))


if __name__ == "__main__":
    main()
