#!/usr/bin/env python3
"""Turns benches/scale.tsv (from benches/scale.sh) into scale.md (a table) and, when matplotlib
is installed (Debian: python3-matplotlib), scale.png: build time against the number of stages or
steps, log-log, with a line of slope 1 (linear cost) through the largest size for reference.

usage: scale_plot.py SCALE_TSV OUT_DIR [NOTE]
"""
import csv
import os
import sys


def main():
    tsv, out = sys.argv[1], sys.argv[2]
    note = sys.argv[3] if len(sys.argv) > 3 else ""
    with open(tsv) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))

    lines = [
        "| kind | n | cold build (s) | cold CPU (s) | cached rebuild (s) | cached CPU (s) | per item, cold (ms) | peak RSS (MiB) | peak threads |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = int(r["n"])
        per = float(r["cold_s"]) * 1000 / n
        lines.append(
            f"| {r['kind']} | {n:,} | {float(r['cold_s']):.2f} | {float(r['cold_cpu_s']):.2f} "
            f"| {float(r['cached_s']):.2f} | {float(r['cached_cpu_s']):.2f} | {per:.2f} "
            f"| {int(r['peak_rss_kb']) / 1024:.0f} | {r['peak_threads']} |"
        )
    if note:
        lines += ["", note]
    with open(os.path.join(out, "scale.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (apt-get install python3-matplotlib): no PNG", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, column, title in [(axes[0], "cold_s", "cold build"), (axes[1], "cached_s", "cached rebuild")]:
        for kind in sorted({r["kind"] for r in rows}):
            pts = [(int(r["n"]), float(r[column])) for r in rows if r["kind"] == kind]
            pts.sort()
            xs, ys = [p[0] for p in pts], [max(p[1], 1e-3) for p in pts]
            ax.plot(xs, ys, marker="o", label=kind)
            ax.plot(xs, [ys[-1] * x / xs[-1] for x in xs], linestyle=":", color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("stages or steps")
        ax.set_ylabel("seconds")
        ax.set_title(f"kiln build, {title} (dotted: linear)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if note:
        fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scale.png"), dpi=110)


if __name__ == "__main__":
    main()
