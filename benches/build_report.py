#!/usr/bin/env python3
"""Writes the "build" section of benches/RESULTS.md from what benches/build.sh left in WORK:
json/KEY.json (hyperfine exports), log/KEY.fail (a failed measurement's last output lines),
meta/NAME (one value per file: versions, load, commands, peak RSS), prof/ (rawjson phases, perf,
strace).

usage: build_report.py WORK RESULTS.md
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from write_section import write_section  # noqa: E402

work, results = sys.argv[1], sys.argv[2]


def meta(name, default=""):
    try:
        return open(os.path.join(work, "meta", name)).read().strip()
    except FileNotFoundError:
        return default


def fail(key):
    try:
        return open(os.path.join(work, "log", key + ".fail")).read().strip()
    except FileNotFoundError:
        return None


def result(key):
    try:
        return json.load(open(os.path.join(work, "json", key + ".json")))["results"][0]
    except FileNotFoundError:
        return None


def median(key):
    r = result(key)
    return r["median"] if r else None


def cpu(key):
    r = result(key)
    return r["user"] + r["system"] if r else None


def secs(v):
    if v is None:
        return "—"
    return f"{v:.3f} s" if v >= 0.1 else f"{v * 1000:.1f} ms"


def cell(key):
    if median(key) is not None:
        return secs(median(key))
    if fail(key):
        return "**failed**"
    return "—"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "—"


def rss(name):
    v = meta("rss." + name)
    return f"{int(v) / 1024:.1f} MiB" if v else "—"


def verdict(ok):
    return "met" if ok else "**missed**"


rows = []
failures = []
cache_text = {
    "no": "kiln has no build cache yet (issue 5): its no-op and one-file-changed rebuilds are full builds over a store\n"
    "that already holds the base snapshot, so they cost what a cold build costs. ",
    "yes": "kiln's rebuilds use its build cache (a second build reported cached steps). ",
}.get(meta("kiln_cache"), "")
mib150 = lambda name: (lambda v: v is not None and int(v) / 1024 <= 150)(meta("rss." + name) or None)


def row(label, key, bars, rss_name=None, note=""):
    k, d, b = median(key + ".kiln"), median(key + ".docker"), median(key + ".buildah")
    for tool in ("kiln", "docker", "buildah"):
        if fail(f"{key}.{tool}"):
            failures.append((f"{key}.{tool}", fail(f"{key}.{tool}")))
    bar_text = []
    for text, check in bars:
        bar_text.append(f"{text}: {verdict(check(k, d)) if k is not None else '—'}")
    if rss_name:
        bar_text.append(f"RSS ≤ 150 MiB: {verdict(mib150(rss_name)) if meta('rss.' + rss_name) else '—'}")
    rows.append(
        f"| {label} | {cell(key + '.kiln')} | {cell(key + '.docker')} | {cell(key + '.buildah')} "
        f"| {ratio(k, d)} | {ratio(k, b)} | {secs(cpu(key + '.kiln'))} | {rss(rss_name) if rss_name else ''} "
        f"| {'; '.join(bar_text)}{note} |"
    )


if result("steps10.kiln") or result("steps10.docker") or fail("steps10.kiln"):
    row("many-steps: 10 × `RUN echo`, --no-cache", "steps10", [], "steps10")
    row("many-steps: the same without RUN (`FROM` only)", "steps0", [])
    per = {}
    for tool in ("kiln", "docker", "buildah"):
        a, z = median(f"steps10.{tool}"), median(f"steps0.{tool}")
        per[tool] = (a - z) / 10 if a is not None and z is not None else None
    k, d, b = per["kiln"], per["docker"], per["buildah"]
    rows.append(
        f"| **per RUN step** = (10 steps − none) / 10 | **{secs(k)}** | {secs(d)} | {secs(b)} | {ratio(k, d)} "
        f"| {ratio(k, b)} | | | < 30 ms (issue 4): {verdict(k < 0.030) if k is not None else '—'} |"
    )
if result("parallel.kiln") or result("parallel.docker") or fail("parallel.kiln"):
    row(
        "parallel: 4 stages × `RUN sleep 2`, --no-cache",
        "parallel",
        [("< 3 s (issue 4)", lambda k, d: k < 3.0), ("≤ 2.3 s (issue 5)", lambda k, d: k <= 2.3)],
        "parallel",
    )
    jb = median("parallel.buildah-jobs4")
    if jb is not None:
        k = median("parallel.kiln")
        rows.append(f"| parallel, buildah with `--jobs 4` | | | {secs(jb)} | | {ratio(k, jb)} | | | |")
cache_note = "" if meta("kiln_cache") != "no" else " (kiln: cache not implemented yet, issue 5 — this is a full build)"
if result("mf-cold.kiln") or result("mf-cold.docker") or fail("mf-cold.kiln"):
    row("many-files: cold build", "mf-cold", [("≤ 2.0 s (issue 5)", lambda k, d: k <= 2.0)], "mf-cold")
    row("many-files: no-op rebuild", "mf-noop", [("≤ 50 ms (issue 5)", lambda k, d: k <= 0.050)], "mf-noop", cache_note)
    row(
        "many-files: rebuild, one file changed",
        "mf-changed",
        [("≤ 1.0 s (issue 5)", lambda k, d: k <= 1.0)],
        "mf-changed",
        cache_note,
    )
if result("big.kiln") or result("big.docker") or fail("big.kiln"):
    row(
        "big: 4 × `RUN head -c 268435456 /dev/urandom`, cold",
        "big",
        [("≤ 0.6× BuildKit (issue 5)", lambda k, d: d is not None and k <= 0.6 * d)],
        "big",
    )

commands = []
for name in sorted(os.listdir(os.path.join(work, "meta"))):
    if name.startswith("cmd."):
        key = name[4:]
        prep = meta("prepare." + key)
        commands.append(f"# {key}" + (f"   (before each run, untimed: {prep})" if prep else ""))
        commands.append(meta(name))

prof_dir = os.path.join(work, "prof")
phase_lines = []
for key, label in [
    ("steps10", "many-steps (10 RUN)"),
    ("parallel", "parallel"),
    ("mf-cold", "many-files cold"),
    ("mf-noop", "many-files no-op rebuild"),
    ("mf-changed", "many-files one file changed"),
    ("big", "big cold"),
]:
    path = os.path.join(prof_dir, "phases." + key)
    if os.path.exists(path):
        phase_lines.append(f"- {label}: {open(path).read().strip()}")


def block(path, limit):
    if not os.path.exists(path):
        return None
    lines = [l.rstrip() for l in open(path) if l.strip()]
    return "\n".join(lines[:limit])


profiles = []
for key, label in [
    ("mf-cold", "many-files cold"),
    ("mf-noop", "many-files no-op rebuild"),
    ("mf-changed", "many-files one-file-changed rebuild"),
    ("big", "big cold"),
]:
    perf = block(os.path.join(prof_dir, "perf." + key), 16)
    if perf:
        profiles.append(
            f"`perf record -F 999 -g` of one kiln {label} build (kiln and its containers' processes; self time, "
            f"entries ≥ 1.5 %):\n\n```text\n{perf}\n```"
        )
for key, label in [
    ("steps10", "many-steps (10 RUN)"),
    ("mf-cold", "many-files cold"),
    ("mf-noop", "many-files no-op rebuild"),
    ("big", "big cold"),
]:
    st = block(os.path.join(prof_dir, "strace." + key), 14)
    if st:
        profiles.append(
            f"`strace -f -c -S time` of one kiln {label} build (syscall time of kiln and its containers; strace "
            f"slows the run, so compare counts, not times, with the medians):\n\n```text\n{st}\n```"
        )

runs, big_runs = meta("runs"), meta("big_runs")
failure_text = ""
if failures:
    failure_text = "\n**Failures** (last lines of the output):\n\n" + "\n".join(
        f"- `{key}`:\n\n  ```text\n" + "\n".join("  " + l for l in text.splitlines()) + "\n  ```" for key, text in failures
    ) + "\n"
started = (
    "dockerd was started by the script and stopped at the end"
    if meta("started_dockerd_at_start") == "1"
    else "an already running dockerd, shared with other work on the machine, was used"
)
if meta("dockerd_restarts") and meta("started_dockerd_at_start") != "1":
    started += f"; it was stopped by other work during the run and the script started its own ({meta('dockerd_restarts')}×)"

section = f"""<!-- build:begin -->
## build: kiln beside BuildKit and buildah

{meta('date')}, {meta('machine')}. kiln {meta('kiln_version')}, release build.
docker {meta('docker_version', 'n/a')} (BuildKit, storage driver {meta('docker_driver', 'n/a')}; {started});
buildah {meta('buildah_version', 'n/a')} with runc {meta('runc_version', 'n/a')} ({meta('buildah_config', 'n/a')}, own storage under the work dir).
Load average (1/5/15 min) before: {meta('load_before')}; after: {meta('load_after')}. The machine is shared: other
engineers' builds and tests competed for the 2 cores during the run, so wall times are noisy; kiln's CPU time
(user + sys, mean; includes the RUN processes) is less affected. Whole script: {int(meta('elapsed', '0')) // 60} min.

Medians of {runs} hyperfine runs after 1 warm-up ({big_runs} for *big*). All three build `FROM {'kiln-bench-busybox:latest'}`, the same
busybox rootfs (`fixtures/busybox-rootfs.sh`) brought in with `kiln import`, `docker import`, and `buildah from
scratch` + `buildah add` + `buildah commit`. RUN steps use `--network none` in all three. kiln: each scenario has
its own store under the work dir; *cold* means a fresh store per run (the busybox import is untimed, unpacking its
snapshot is timed). docker *cold*: `--no-cache` and the image removed before each run; BuildKit's context-transfer
cache is not cleared (that would need `docker builder prune` on a shared daemon). buildah *cold*: `--no-cache` and
the image and dangling intermediates removed. Rebuild rows run without `--no-cache` after an untimed first build;
*one file changed* gives one 21 KiB file new random bytes before each run. many-files context: 10,000 files of
21,504 random bytes in 100 dirs, {int(meta('context_bytes', '0')) / 1e6:.0f} MB.

| scenario | kiln | BuildKit | buildah | kiln / BuildKit | kiln / buildah | kiln CPU | kiln peak RSS | bars |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{cache_text}buildah runs one stage at a time unless given `--jobs`; the `--jobs 4` row shows it with the stages in
parallel.
{failure_text}
Per-step wall times of one kiln run each (from `--progress rawjson` timestamps; start-up = process start to the
first step):

{chr(10).join(phase_lines) if phase_lines else '(profiling skipped: PROFILE=0)'}

{chr(10).join(p + chr(10) for p in profiles)}
Reproduce: `benches/build.sh` as root (env WORK, RUNS, BIG_RUNS, SCENARIOS, TOOLS, PROFILE, KEEP). The exact commands:

```sh
{chr(10).join(commands)}
```
<!-- build:end -->"""

write_section("build", results, section)
print(section)
