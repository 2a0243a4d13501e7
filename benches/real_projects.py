#!/usr/bin/env python3
"""Helper of benches/real_projects.sh.

  real_projects.py measure WORK KEY RUN COMMAND
      runs COMMAND (bash) once, output to WORK/log/KEY.RUN.log, and appends one JSON line to
      WORK/json/KEY.jsonl: wall time, exit status, the RUN command times the Dockerfiles print
      ("@@bench NAME START END", taken with `date +%s.%N` inside the RUN), and, where the tool's
      progress output says it, the wall time of the step that printed each marker (kiln
      `--progress rawjson`: started/completed timestamps; BuildKit `--progress plain`: `#N DONE 1.2s`).
  real_projects.py report WORK RESULTS.md
      writes the "real-projects" section of RESULTS.md from WORK/json, WORK/meta and WORK/log.
"""

import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from write_section import write_section  # noqa: E402

MARK = re.compile(r"@@bench (\S+) (\d+\.\d+) (\d+\.\d+)")


def ts(s):
    # RFC 3339 with nanoseconds; fromisoformat takes at most microseconds
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        s = head + "." + frac[:6]
    return datetime.datetime.fromisoformat(s + "+00:00").timestamp()


def parse(output):
    """(markers {name: seconds}, step_wall {name: seconds}) from one build's output."""
    markers, step_of, step_wall = {}, {}, {}
    kiln_steps, docker_done = {}, {}
    for line in output.splitlines():
        text = line
        vertex = None
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                event = {}
            for v in event.get("vertexes", []):
                if "started" in v and "completed" in v:
                    kiln_steps[v["digest"]] = ts(v["completed"]) - ts(v["started"])
            logs = event.get("logs", [])
            if logs:
                text = logs[0].get("data", "")
                vertex = logs[0].get("vertex")
        else:
            m = re.match(r"#(\d+) DONE (\d+(?:\.\d+)?)s", line)
            if m:
                docker_done[m.group(1)] = float(m.group(2))
            m = re.match(r"#(\d+) ", line)
            if m:
                vertex = m.group(1)
        m = MARK.search(text)
        # the command line itself holds "@@bench NAME $s …", never digits: only real output matches
        if m:
            markers[m.group(1)] = float(m.group(3)) - float(m.group(2))
            step_of[m.group(1)] = vertex
    for name, vertex in step_of.items():
        if vertex in kiln_steps:
            step_wall[name] = kiln_steps[vertex]
        elif vertex in docker_done:
            step_wall[name] = docker_done[vertex]
    return markers, step_wall


def kiln_steps(path):
    """[(name, started, completed, marker name or None)] of a kiln --progress rawjson log, by start."""
    steps, marks = {}, {}
    try:
        lines = open(path, errors="replace").read().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        for v in event.get("vertexes", []):
            if "started" in v and "completed" in v and not v.get("cached"):
                steps[v["digest"]] = (v.get("name", ""), ts(v["started"]), ts(v["completed"]))
        for entry in event.get("logs", []):
            m = MARK.search(entry.get("data", ""))
            if m:
                marks[entry.get("vertex")] = m.group(1)
    return sorted(((n, st, c, marks.get(d)) for d, (n, st, c) in steps.items()), key=lambda s: s[1])


def measure(work, key, run, command):
    log = os.path.join(work, "log", f"{key}.{run}.log")
    start = time.time()
    with open(log, "w") as out:
        status = subprocess.run(["bash", "-c", command], stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.time() - start
    markers, step_wall = parse(open(log, errors="replace").read())
    record = {"run": int(run), "wall": wall, "status": status, "markers": markers, "step_wall": step_wall}
    with open(os.path.join(work, "json", key + ".jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{key} #{run}: {wall:.2f} s, exit {status}, RUN {sum(markers.values()):.2f} s {markers}", file=sys.stderr)
    return status


# --- report ---------------------------------------------------------------------------------------

SCENARIOS = [
    ("c", "C: Debian + `apt-get install gcc libc6-dev`, static binary into `FROM scratch`"),
    ("python", "Python: Debian + apt python3-pip, `pip install -r` (flask, requests, pyyaml), app copied last"),
    ("python-cache", "Python, pip with `RUN --mount=type=cache,target=/root/.cache/pip`"),
    ("node", "Node: Debian + apt nodejs npm, `npm ci` (express, lodash), source copied after"),
]
PHASES = [("cold", "cold"), ("change", "one-line change"), ("noop", "no-op")]
TOOLS = [("kiln", "kiln"), ("buildkit", "BuildKit"), ("buildah", "buildah")]


def report(work, results):
    def meta(name, default=""):
        try:
            return open(os.path.join(work, "meta", name)).read().strip()
        except FileNotFoundError:
            return default

    def records(key):
        try:
            return [json.loads(l) for l in open(os.path.join(work, "json", key + ".jsonl")) if l.strip()]
        except FileNotFoundError:
            return []

    def secs(v):
        if v is None:
            return "—"
        return f"{v:.2f} s" if v >= 0.1 else f"{v * 1000:.0f} ms"

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    rows, failures, own_rows, notes, step_rows = [], [], [], [], []
    for scen, label in SCENARIOS:
        if not any(records(f"{scen}.{p}.{t}") or meta(f"skip.{scen}.{t}") for p, _ in PHASES for t, _ in TOOLS):
            continue
        for phase, plabel in PHASES:
            cells, owns = [], {}
            for tool, _ in TOOLS:
                key = f"{scen}.{phase}.{tool}"
                recs = records(key)
                ok = [r for r in recs if r["status"] == 0]
                bad = [r for r in recs if r["status"] != 0]
                for r in bad:
                    failures.append((key, r["run"]))
                if meta(f"skip.{scen}.{tool}"):
                    cells.append("n/a")
                    continue
                if not ok:
                    cells.append("**failed**" if bad else "—")
                    continue
                wall = med([r["wall"] for r in ok])
                run = med([sum(r["markers"].values()) for r in ok])
                own = med([r["wall"] - sum(r["markers"].values()) for r in ok])
                owns[tool] = own
                spread = f" ({min(r['wall'] for r in ok):.2f}–{max(r['wall'] for r in ok):.2f})" if len(ok) > 1 else ""
                cells.append(f"{secs(wall)}{spread} / {secs(run)} / **{secs(own)}**" + (f" ({len(ok)} runs)" if len(ok) != int(meta('runs_' + phase, '0') or 0) else ""))
            k, d = owns.get("kiln"), owns.get("buildkit")
            ratio = f"{k / d:.2f}×" if k is not None and d else "—"
            rows.append(f"| {label if phase == 'cold' else ''} | {plabel} | " + " | ".join(cells) + f" | {ratio} |")
        # the apt step: the biggest layer, and each builder's own time on it (step wall − command time)
        parts = []
        for tool, tlabel in TOOLS:
            ok = [r for r in records(f"{scen}.cold.{tool}") if r["status"] == 0 and "apt" in r["step_wall"]]
            if ok:
                step = med([r["step_wall"]["apt"] for r in ok])
                cmd = med([r["markers"]["apt"] for r in ok])
                own = med([r["step_wall"]["apt"] - r["markers"]["apt"] for r in ok])
                res = " (BuildKit prints step times to 0.1 s)" if tool == "buildkit" else ""
                parts.append(f"{tlabel}: step {secs(step)}, command {secs(cmd)}, own **{secs(own)}**{res}")
        size = meta(f"layer.{scen}")
        verdict = ""
        ok = [r for r in records(f"{scen}.cold.kiln") if r["status"] == 0 and "apt" in r["step_wall"]]
        if ok:
            own = med([r["step_wall"]["apt"] - r["markers"]["apt"] for r in ok])
            verdict = f"; target ≤ 0.3 s of kiln's own (issue 14): {'met' if own <= 0.3 else '**missed**'}"
        if parts or size:
            own_rows.append(f"- {label.split(':')[0]}: biggest layer {size or '—'}; apt RUN step, cold: " + "; ".join(parts) + verdict)
        # where kiln's time went in its last cold run: each step's wall, and the RUN command's own time in it
        kiln_cold = [r for r in records(f"{scen}.cold.kiln") if r["status"] == 0]
        if kiln_cold:
            last = kiln_cold[-1]
            steps = kiln_steps(os.path.join(work, "log", f"{scen}.cold.kiln.{last['run']}.log"))
            if steps:
                first = min(st for _, st, _, _ in steps)
                lastc = max(c for _, _, c, _ in steps)
                parts = []
                for name, st, c, mark in steps:
                    cmd = last["markers"].get(mark) if mark else None
                    parts.append(f"`{name[:50]}` {secs(c - st)}" + (f" (command {secs(cmd)})" if cmd is not None else ""))
                step_rows.append(
                    f"- {label.split(':')[0]} (run {last['run']}, total {secs(last['wall'])}): "
                    + "; ".join(parts)
                    + f"; the steps span {secs(lastc - first)}, so start-up and the image write outside the steps take "
                    f"{secs(last['wall'] - (lastc - first))}"
                )
        check = meta(f"check.{scen}")
        if check:
            notes.append(f"- {label.split(':')[0]}: {check}")

    for scen, _ in SCENARIOS:
        for tool, tlabel in TOOLS:
            why = meta(f"skip.{scen}.{tool}")
            if why:
                notes.append(f"- {tlabel} cannot build {scen} here: {why}")

    failure_text = ""
    if failures:
        lines = []
        for key, run in failures:
            try:
                tail = open(os.path.join(work, "log", f"{key}.{run}.log"), errors="replace").read().splitlines()[-4:]
            except FileNotFoundError:
                tail = []
            lines.append(f"- `{key}` run {run}:\n\n  ```text\n" + "\n".join("  " + l[:200] for l in tail) + "\n  ```")
        failure_text = "\n**Failed runs** (last lines of the output; left out of the medians):\n\n" + "\n".join(lines) + "\n"

    commands = []
    for name in sorted(os.listdir(os.path.join(work, "meta"))):
        if name.startswith("cmd."):
            key = name[4:]
            prep = meta("prepare." + key)
            commands.append(f"# {key}" + (f"   (before each run, untimed: {prep})" if prep else ""))
            commands.append(meta(name))

    section = f"""<!-- real-projects:begin -->
## real projects: C, Python and Node services, kiln beside BuildKit and buildah (issue 14)

{meta('date')}, {meta('machine')}. kiln {meta('kiln_version', 'n/a (not measured)')}, release build. docker {meta('docker_version', 'n/a')}
(BuildKit, {meta('docker_driver', 'n/a')}; a dockerd shared with other work on the machine); buildah
{meta('buildah_version', 'n/a')} with runc ({meta('buildah_config', 'n/a')}, own storage under the work dir).
Load average (1/5/15 min) before: {meta('load_before')}; after: {meta('load_after')}. The machine is shared with other
engineers' builds and tests (2 cores), so wall times are noisy. Whole script: {int(meta('elapsed', '0')) // 60} min.

The Dockerfiles and sources are in `benches/real_projects/`. The base is the same Debian bookworm minbase rootfs
(`debootstrap --variant=minbase bookworm`, {meta('base_bytes', '?')} bytes of tar) brought in with `kiln import`,
`docker import` and `buildah from scratch` + `add` + `commit`. All RUN steps use `--network host` in all three; the
Debian mirror, PyPI and npm are fetched live. HTTPS from RUN trusts the build machine's CA bundle, put in the
context and named by `PIP_CERT` / `NODE_EXTRA_CA_CERTS` / `npm_config_cafile`, alike for the three tools.

**Fetch time apart.** Every RUN records its own command's time inside the container (`date +%s.%N` before and
after; a `@@bench NAME START END` line in the build output). Each cell is *total wall / sum of RUN command times
(fetch + install + compile) / the builder's own share = total − RUN time*, medians of {meta('runs_cold')} runs for
*cold* and {meta('runs_change')} for the rebuilds (min–max of the total in brackets); the last column compares the
builders' own shares. *cold*: `--no-cache`, the tagged image removed before each run (untimed); the base stays in
each tool's store, and RUN cache mounts are not emptied (in the `python-cache` rows the cold pip step therefore
installs from a warm pip cache — what the cache mount is for; the first, untimed, build filled it). BuildKit's
context-transfer cache is not cleared. *one-line change*: one line of the application source (`hello.c`,
`app.py`, `index.js`) gets a new value before each run (untimed), after an untimed build that filled the cache;
only the steps from that `COPY` on run. *no-op*: the same build again with nothing changed. On a loaded machine
the RUN command times themselves (dpkg above all) vary by up to 2× between runs and tools; the own shares are the
figures to compare.

| project | build | kiln: total / RUN / **own** | BuildKit: total / RUN / **own** | buildah: total / RUN / **own** | kiln own / BuildKit own |
|---|---|---|---|---|---|
{chr(10).join(rows)}

The layer the apt RUN step writes (`apt-get update && apt-get install -y --no-install-recommends …` as written, so it
also holds the package lists and the downloaded `.deb`s), and each builder's own time on that step (step wall time
from kiln's `--progress rawjson` timestamps and BuildKit's `#N DONE` line, minus the command's own time measured
inside it; buildah prints no step times):

{chr(10).join(own_rows) if own_rows else '(none measured)'}

kiln's steps in its last cold run of each project (wall from `--progress rawjson`; a step's own share is its wall
minus the command time; steps of independent stages may overlap):

{chr(10).join(step_rows) if step_rows else '(none measured)'}

Checks (a bench that builds a broken image is worthless; each tool's image of the last change run was run):

{chr(10).join(notes) if notes else '(none)'}
{failure_text}
Reproduce: `benches/real_projects.sh` as root (env PROJECTS="c python node", TOOLS="kiln buildkit buildah",
RUNS, COLD_RUNS, WORK, KEEP, KILN). The exact commands:

```sh
{chr(10).join(commands)}
```
<!-- real-projects:end -->"""
    write_section("real-projects", results, section)
    print(section)


if __name__ == "__main__":
    if sys.argv[1] == "measure":
        sys.exit(measure(*sys.argv[2:6]))
    elif sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
