#!/usr/bin/env bash
# Container latency: kiln beside docker (dockerd 20.10) and podman, on one busybox image each
# imported from the same rootfs tar:
#   run --rm IMG true          a foreground container start to finish
#   run -d IMG sleep 1000      until the detached container runs and its ID is printed
#   stop -t 10 (TERM-handling) and stop -t 0 of a detached container
# Each tool runs its own `--network none` and (kiln) its default network too. Medians of RUNS
# runs each, interleaved per tool so that load drifts hit every tool alike; the load average is
# printed before and after. Writes the `containers` section of benches/RESULTS.md.
#
# usage: benches/containers.sh        (as root; docker and podman are used if present)
# env:   RUNS=30  WORK=/var/tmp/kiln-bench-containers  KILN=path (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
RUNS=${RUNS:-30}
WORK=${WORK:-/var/tmp/kiln-bench-containers}
if [ -n "${KILN:-}" ]; then
  kiln=$KILN
  desc=${KILN_DESC:-$KILN}
else
  cargo build --release --quiet
  kiln=$repo/target/release/kiln
  desc="release build of $(git rev-parse --short HEAD)"
fi
rm -rf "$WORK"
mkdir -p "$WORK"
root=$WORK/store
tar=$WORK/busybox.tar
bash fixtures/busybox-rootfs.sh "$tar" >/dev/null
K() { "$kiln" --root "$root" "$@"; }
K import "$tar" bench/busybox:1 >/dev/null

tools=(kiln)
docker=/usr/bin/docker
if [ -x "$docker" ] && "$docker" info >/dev/null 2>&1; then
  "$docker" import "$tar" bench/busybox:1 >/dev/null
  tools+=(docker)
fi
if command -v podman >/dev/null && podman info >/dev/null 2>&1; then
  podman import "$tar" bench/busybox:1 >/dev/null 2>&1
  tools+=(podman)
fi
cleanup() {
  K rm -f $(K ps -aq) >/dev/null 2>&1 || true
  [ -x "$docker" ] && "$docker" rm -f $("$docker" ps -aq --filter name=kbench) >/dev/null 2>&1 || true
  command -v podman >/dev/null && podman rm -f $(podman ps -aq --filter name=kbench) >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

KILN_CLI="$kiln --root $root" python3 - "$RUNS" "$load_before" "$desc" "${tools[@]}" <<'EOF' >"$WORK/section.md"
import os, statistics, subprocess, sys, time
runs = int(sys.argv[1]); load_before = sys.argv[2]; desc = sys.argv[3]; tools = sys.argv[4:]
kiln = os.environ.get("KILN_CLI")
def cli(tool):
    return {"kiln": kiln.split(), "docker": ["/usr/bin/docker"], "podman": ["podman"]}[tool]
def run(args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw).stdout.decode().strip()
def timed(args):
    t = time.perf_counter(); run(args); return time.perf_counter() - t
cases = []
for tool in tools:
    cases.append((tool, "none"))
    if tool == "kiln":
        cases.append((tool, "default"))
results = {c: {"rm": [], "d": [], "stop_term": [], "stop0": []} for c in cases}
for i in range(-1, runs):  # run -1 warms up (unpacks the image) and is not recorded
    for tool, net in cases:
        c = cli(tool); netf = [] if net == "default" else ["--network", net]
        if tool == "podman":
            # runc cannot raise podman's default rlimits inside this sandbox (EPERM): keep them low.
            netf += ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
        r = results[(tool, net)] if i >= 0 else {k: [] for k in ("rm", "d", "stop_term", "stop0")}
        r["rm"].append(timed(c + ["run", "--rm"] + netf + ["bench/busybox:1", "true"]))
        t = time.perf_counter()
        cid = run(c + ["run", "-d", "--name", f"kbench{i + 1}"] + netf + ["bench/busybox:1", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"])
        r["d"].append(time.perf_counter() - t)
        r["stop_term"].append(timed(c + ["stop", "-t", "10", cid]))
        run(c + ["start", cid])
        r["stop0"].append(timed(c + ["stop", "-t", "0", cid]))
        run(c + ["rm", "-f", cid])
def ms(xs): return f"{statistics.median(xs) * 1000:.1f} ms"
load_after = open("/proc/loadavg").read().split()[:3]
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
print("<!-- containers:begin -->")
print("## containers: run and stop latency beside docker and podman\n")
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(cpu)} cores ({cpu[0]}), kernel {os.uname().release}. kiln {desc}.")
print(f"Medians of {runs} runs per cell, the tools interleaved run by run. Load average before: {load_before}; after: {' '.join(load_after)}")
print("(the machine is shared; anything above ~0.5 means other work competed for the 2 cores).\n")
print("| tool | network | `run --rm IMG true` | `run -d` until the ID is printed | `stop -t 10` (program exits on TERM) | `stop -t 0` |")
print("|---|---|---|---|---|---|")
for (tool, net), r in results.items():
    print(f"| {tool} | {net} | {ms(r['rm'])} | {ms(r['d'])} | {ms(r['stop_term'])} | {ms(r['stop0'])} |")
base = results.get(("kiln", "none"))
for other in [c for c in results if c[0] != "kiln"]:
    o = results[other]
    print(f"\nkiln (none) vs {other[0]}: run --rm {statistics.median(o['rm']) / statistics.median(base['rm']):.1f}× faster, "
          f"run -d {statistics.median(o['d']) / statistics.median(base['d']):.1f}× faster.")
print("\npodman runs with `--ulimit nofile=1024:1024 --ulimit nproc=1000:1000` (runc cannot raise its default")
print("rlimits in this sandbox); docker with its dockerd started `--iptables=false --bridge=none`.")
print("\nReproduce: `sudo benches/containers.sh` (env RUNS, WORK, KILN).")
print("<!-- containers:end -->")
EOF
python3 benches/write_section.py containers benches/RESULTS.md "$(cat "$WORK/section.md")"
cat "$WORK/section.md"
