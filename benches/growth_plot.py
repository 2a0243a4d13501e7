#!/usr/bin/env python3
"""Turns the rows of one run of benches/growth.sh into benches/growth.tsv (merged with the rows of
series/tools not run this time), benches/growth-meta.json, benches/growth.png (log-log, one panel per
series and one of kiln's peak RSS, a dotted slope-1 line through the first point of every curve) and
the "growth" section of benches/RESULTS.md. The growth exponent of a curve is the slope between its
last two points on the log-log plot: 1 is linear, above 1 grows faster than its input.

usage: growth_plot.py --rows ROWS --meta META --series "…" --tools "…" --tsv OUT.tsv
                      --meta-json OUT.json --png OUT.png --results RESULTS.md
       growth_plot.py --tsv growth.tsv --meta-json growth-meta.json --png … --results …
                      (no --rows: redraw and rewrite the section from the stored files)
Notes written by hand (profiles, explanations) are read from growth-notes.md beside OUT.tsv.
"""
import argparse
import csv
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from write_section import write_section  # noqa: E402

COLUMNS = ["series", "op", "tool", "n", "runs", "median_s", "min_s", "max_s", "cpu_s", "peak_rss_kb", "note"]
SERIES = ["context", "steps", "stages", "saveload"]
TITLES = {
    "context": "context size (files of 2 KiB)",
    "steps": "steps in one stage, cold (--no-cache)",
    "stages": "stages (fan-in), cold (--no-cache)",
    "saveload": "image size (MiB)",
}
OPS = {
    "context": [("cold", "cold build"), ("noop", "no-op rebuild"), ("changed", "rebuild, one file changed")],
    "steps": [("cold-run", "N × `RUN echo I > /fI`"), ("cold-env", "N × `ENV KI=vI`")],
    "stages": [("cold", "N stages `RUN echo`, last stage COPYs from all")],
    "saveload": [("save", "save -o FILE"), ("load", "load -i FILE, fresh store")],
}
TOOL_NAMES = {"kiln": "kiln", "docker": "BuildKit"}
SATURATION = 1.15  # an exponent above this is flagged as super-linear


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [dict(r) for r in csv.DictReader(f, delimiter="\t")]


def merge(args):
    old = read_tsv(args.tsv)
    series, tools = set(args.series.split()), set(args.tools.split())
    with open(args.rows) as f:
        new = [dict(zip(COLUMNS, line.rstrip("\n").split("\t"))) for line in f if line.strip()]
    kept = [r for r in old if not (r["series"] in series and r["tool"] in tools)]
    rows = kept + new
    order = {s: i for i, s in enumerate(SERIES)}
    rows.sort(key=lambda r: (order.get(r["series"], 99), r["op"], r["tool"], int(r["n"])))
    with open(args.tsv, "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(r.get(c, "") for c in COLUMNS) + "\n")

    meta = json.load(open(args.meta_json)) if os.path.exists(args.meta_json) else {}
    run = {}
    with open(args.meta) as f:
        for line in f:
            s, k, v = line.rstrip("\n").split("\t", 2)
            run.setdefault(s, {})[k] = v
    common = run.get("all", {})
    for s in series:
        if s not in run:
            continue
        entry = meta.get(s, {})
        # What this run measured replaces what an earlier run of the same tools wrote.
        for tool in tools:
            entry.setdefault("tools", {})[tool] = {**common, **run[s]}
        meta[s] = entry
    with open(args.meta_json, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    return rows, meta


def curve(rows, series, op, tool, column="median_s"):
    pts = []
    for r in rows:
        if r["series"] == series and r["op"] == op and r["tool"] == tool and r.get(column):
            pts.append((int(r["n"]), float(r[column])))
    return sorted(pts)


def exponent(pts):
    if len(pts) < 2 or pts[-1][0] == pts[-2][0] or pts[-2][1] <= 0 or pts[-1][1] <= 0:
        return None
    (n1, t1), (n2, t2) = pts[-2], pts[-1]
    return math.log(t2 / t1) / math.log(n2 / n1)


def fmt_s(v):
    if v is None:
        return ""
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def fmt_n(series, n):
    if series == "saveload":
        return f"{n / 1024:.1f} GiB" if n >= 1024 else f"{n} MiB"
    return f"{n:,}"


def row(rows, series, op, tool, n):
    for r in rows:
        if r["series"] == series and r["op"] == op and r["tool"] == tool and int(r["n"]) == n:
            return r
    return None


def plot(rows, png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (apt-get install python3-matplotlib): no PNG", file=sys.stderr)
        return False
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    panels = [s for s in SERIES if any(r["series"] == s for r in rows)]
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for ax, series in zip(axes.flat, panels):
        for (op, label), color in zip(OPS[series], colors):
            for tool, style in [("kiln", "-"), ("docker", "--")]:
                pts = curve(rows, series, op, tool)
                if not pts:
                    continue
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                e = exponent(pts)
                name = f"{TOOL_NAMES[tool]}: {op}" + (f" (exp {e:.2f})" if e is not None else "")
                ax.plot(xs, ys, style, marker="o" if tool == "kiln" else "s", color=color, label=name)
                ax.plot(xs, [ys[0] * x / xs[0] for x in xs], ":", color=color, alpha=0.5, linewidth=1)
                failed = [r for r in rows if r["series"] == series and r["op"] == op and r["tool"] == tool
                          and r["note"].startswith("failed")]
                for r in failed:
                    ax.axvline(int(r["n"]), color=color, linestyle="-.", alpha=0.4)
                    ax.annotate(f"{TOOL_NAMES[tool]} fails", (int(r["n"]), ys[-1]), fontsize=7, rotation=90,
                                va="bottom", color=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(TITLES[series])
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"{series}: solid kiln, dashed BuildKit, dotted slope 1", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes.flat[len(panels)]
    for i, series in enumerate(panels):
        for op, _ in OPS[series]:
            pts = curve(rows, series, op, "kiln", "peak_rss_kb")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] / 1024 for p in pts], marker="o", label=f"{series}: {op}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (files, steps, stages or MiB)")
    ax.set_ylabel("MiB")
    ax.set_title("kiln peak RSS (GNU time %M, largest of the runs)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    for extra in list(axes.flat)[len(panels) + 1:]:
        extra.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    return True


def section(rows, meta, png, notes):
    out = ["<!-- growth:begin -->", "## growth: how cost grows, kiln beside BuildKit", ""]
    out.append(f"![growth plots]({os.path.basename(png)})")
    out.append("")
    out.append(
        "Written by `benches/growth.sh` (plots and table by `benches/growth_plot.py`; data in `benches/growth.tsv` "
        "and `benches/growth-meta.json`). Medians of hyperfine runs; kiln's peak RSS is the largest GNU time `%M` "
        "over its runs at a point. BuildKit is `DOCKER_BUILDKIT=1 docker build --network none` on dockerd; both "
        "build `FROM` the busybox rootfs of `fixtures/busybox-rootfs.sh` (`kiln import`, `docker import`). "
        "*exp* is the growth exponent between the last two points (log-log slope: 1 = linear, > 1 grows "
        f"faster than the input; flagged above {SATURATION}); kiln's CPU time (user + sys of kiln and its RUN processes, "
        "mean) is given too, as other work on the shared machine inflates wall times more than CPU times. buildah is left out: the run must stay under "
        "~25 minutes, and buildah takes 0.2 s per RUN step (benches/build.sh), minutes at 1,000 steps."
    )
    out.append("")
    latest = max((info for e in meta.values() for info in e.get("tools", {}).values()),
                 key=lambda i: i.get("date", ""), default={})
    if latest:
        out.append(f"Machine: {latest.get('machine', '?')}. Reproduce: `{latest.get('command', 'benches/growth.sh')}` "
                   "(env SERIES, TOOLS, RUNS, BIG_RUNS, the size lists; see the script's header).")
        out.append("")
    for series in SERIES:
        m = meta.get(series, {}).get("tools", {})
        if not any(r["series"] == series for r in rows):
            continue
        out.append(f"### {series}: {TITLES[series]}")
        out.append("")
        for tool, info in sorted(m.items()):
            out.append(
                f"- {TOOL_NAMES.get(tool, tool)}: measured {info.get('date', '?')}, load average (1/5/15 min) "
                f"before the series {info.get('load_before', '?')}, after {info.get('load_after', '?')}; the series "
                f"took {info.get('elapsed_s', '?')} s; {info.get('runs', '?')} runs after 1 warm-up, "
                f"{info.get('big_runs', '?')} without warm-up at the big points (the largest)"
                + (f"; kiln: {info['kiln']}" if tool == "kiln" and "kiln" in info else "")
                + (f"; docker {info['docker']}" if tool == "docker" and "docker" in info else "")
            )
        sizes = {k[6:]: v for info in m.values() for k, v in info.items() if k.startswith("bytes_")}
        if sizes:
            out.append("- sizes in bytes: " + ", ".join(f"{fmt_n(series, int(k))}: {int(v):,}" for k, v in
                                                        sorted(sizes.items(), key=lambda kv: int(kv[0]))))
        out.append("")
        out.append("| op | N | kiln | BuildKit | kiln / BuildKit | kiln peak RSS | kiln CPU (user+sys) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for op, label in OPS[series]:
            ns = sorted({int(r["n"]) for r in rows if r["series"] == series and r["op"] == op})
            for n in ns:
                k, d = row(rows, series, op, "kiln", n), row(rows, series, op, "docker", n)

                def cell(r):
                    if r is None:
                        return ""
                    if r["note"]:
                        return r["note"].replace("|", "\\|")
                    spread = f" ({fmt_s(float(r['min_s']))}–{fmt_s(float(r['max_s']))}, {r['runs']} runs)"
                    return fmt_s(float(r["median_s"])) + spread

                ratio = ""
                if k and d and k["median_s"] and d["median_s"]:
                    ratio = f"{float(k['median_s']) / float(d['median_s']):.2f}×"
                rss = f"{int(k['peak_rss_kb']) / 1024:.1f} MiB" if k and k.get("peak_rss_kb") else ""
                cpu = fmt_s(float(k["cpu_s"])) if k and k.get("cpu_s") else ""
                out.append(f"| {label} | {fmt_n(series, n)} | {cell(k)} | {cell(d)} | {ratio} | {rss} | {cpu} |")
        out.append("")
        exps = []
        for op, label in OPS[series]:
            for tool in ("kiln", "docker"):
                pts = curve(rows, series, op, tool)
                e = exponent(pts)
                if e is None:
                    continue
                flag = " **super-linear**" if e > SATURATION else ""
                exps.append(f"{TOOL_NAMES[tool]} {op} {e:.2f}{flag} ({fmt_n(series, pts[-2][0])} → {fmt_n(series, pts[-1][0])})")
            e = exponent(curve(rows, series, op, "kiln", "cpu_s"))
            if e is not None:
                exps.append(f"kiln CPU {op} {e:.2f}")
            e = exponent(curve(rows, series, op, "kiln", "peak_rss_kb"))
            if e is not None:
                exps.append(f"kiln RSS {op} {e:.2f}")
        if exps:
            out.append("Growth exponents (last two points): " + "; ".join(exps) + ".")
            out.append("")
    if notes:
        out.append(notes.strip())
        out.append("")
    out.append("<!-- growth:end -->")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows")
    p.add_argument("--meta")
    p.add_argument("--series", default="")
    p.add_argument("--tools", default="")
    p.add_argument("--tsv", required=True)
    p.add_argument("--meta-json", required=True)
    p.add_argument("--png", required=True)
    p.add_argument("--results", required=True)
    args = p.parse_args()
    if args.rows:
        rows, meta = merge(args)
    else:
        rows, meta = read_tsv(args.tsv), json.load(open(args.meta_json))
    plot(rows, args.png)
    notes_path = os.path.join(os.path.dirname(os.path.abspath(args.tsv)), "growth-notes.md")
    notes = open(notes_path).read() if os.path.exists(notes_path) else ""
    text = section(rows, meta, args.png, notes)
    write_section("growth", args.results, text)
    print(text)


if __name__ == "__main__":
    main()
