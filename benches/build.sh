#!/usr/bin/env bash
# Build benchmarks: kiln beside `docker build` (BuildKit, dockerd from Debian's docker.io) and
# `buildah bud --layers`, in one run, on the same busybox base image, medians of hyperfine runs.
# Scenarios (issues 4 and 5):
#   many-steps  ten `RUN echo N > /fN` steps with --no-cache, and the same Dockerfile without the
#               RUN steps: per-RUN-step overhead = (difference) / 10
#   parallel    four independent stages each `RUN sleep 2 && echo x > /x`, copied into a final stage
#   many-files  10,000 files in 100 dirs (~210 MB), `COPY src /app/src` + `RUN find … > /count`:
#               cold build, no-op rebuild, rebuild after one file changed
#   big         four `RUN head -c 268435456 /dev/urandom > /lN` layers (1 GiB image): cold build
#               (busybox's head rejects the issue's `256M`: "invalid number '256M'")
# plus kiln's peak RSS per scenario, per-step timings from `--progress rawjson`, and a `perf`
# profile (and `strace -c`) of the kiln builds that take seconds.
# Writes the "build" section of benches/RESULTS.md.
#
# usage: benches/build.sh                  (from anywhere; as root: RUN needs namespaces and mounts)
# env:   WORK=/var/tmp/kiln-bench-build    scratch directory, on the same disk as /var/lib/docker
#                                          (needs ~12 GiB free); not a tmpfs
#        RUNS=5 BIG_RUNS=3                 hyperfine runs (after 1 warm-up) per measurement
#        SCENARIOS="many-steps parallel many-files big"
#        TOOLS="kiln docker buildah"       leave one out to skip it
#        PROFILE=1                         0 skips the rawjson/perf/strace profiling runs
#        KEEP=0                            1 keeps WORK, the docker images and buildah's storage
#        RESULTS=benches/RESULTS.md       where the section is written
#        KILN=path/to/kiln KILN_DESC=…     measure this binary instead of building the working tree
#                                          (e.g. one built from a clean `git archive` of a commit
#                                          while others edit the tree); KILN_DESC names its source
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WORK=${WORK:-/var/tmp/kiln-bench-build}
RUNS=${RUNS:-5}
BIG_RUNS=${BIG_RUNS:-3}
SCENARIOS=${SCENARIOS:-many-steps parallel many-files big}
TOOLS=${TOOLS:-kiln docker buildah}
PROFILE=${PROFILE:-1}
KEEP=${KEEP:-0}
DOCKER=/usr/bin/docker
BASE=kiln-bench-busybox:latest # the same name in all three tools
PREFIX=kiln-bench-build        # every image this script tags starts with it
results=${RESULTS:-$repo/benches/RESULTS.md}
script_start=$(date +%s)

has() { [[ " $1 " == *" $2 "* ]]; }
note() { echo "== $*" >&2; }
meta() { printf '%s' "$2" >"$WORK/meta/$1"; } # a value for the report

if [ -n "${KILN:-}" ]; then
  kiln=$KILN
else
  cargo build --release --quiet
  kiln=$repo/target/release/kiln
fi

# --- scratch space -------------------------------------------------------------------------------
buildah_roots() { find "$WORK/buildah" -mindepth 1 -maxdepth 1 -type d 2>/dev/null || true; }
unmount_under() { findmnt -rn -o TARGET | { grep "^$1/" || true; } | sort -r | xargs -r -n1 umount -l; }
if [ -d "$WORK" ]; then
  for root in $(buildah_roots); do
    d=$(basename "$root")
    buildah --root "$root/root" --runroot "$root/run" --storage-driver "$d" rm -a >/dev/null 2>&1 || true
    buildah --root "$root/root" --runroot "$root/run" --storage-driver "$d" rmi -a -f >/dev/null 2>&1 || true
  done
  unmount_under "$WORK"
  rm -rf "$WORK"
fi
mkdir -p "$WORK"/{json,meta,log,ctx,kiln,prof}
fstype=$(df -T "$WORK" | awk 'NR==2 {print $2}')
[ "$fstype" = tmpfs ] && { echo "WORK=$WORK is on tmpfs; pick a directory on the disk docker uses" >&2; exit 1; }

# --- dockerd -------------------------------------------------------------------------------------
# The daemon may be shared with other work on the machine, which may also stop it: every docker
# measurement first makes sure one answers (starting our own if not) and has the base image.
started_dockerd=0
dockerd_pid=
ensure_docker() {
  if ! "$DOCKER" info >/dev/null 2>&1; then
    note "no dockerd answers; starting one"
    dockerd --iptables=false --bridge=none >/tmp/dockerd.log 2>&1 &
    dockerd_pid=$!
    started_dockerd=1
    meta dockerd_restarts "$(($(cat "$WORK/meta/dockerd_restarts" 2>/dev/null || echo 0) + 1))"
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null 2>&1 || { echo "dockerd did not start: $(tail -3 /tmp/dockerd.log)" >&2; return 1; }
  fi
  "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 || "$DOCKER" import "$WORK/busybox.tar" "$BASE" >/dev/null
}

cleanup() {
  if [ "$KEEP" != 1 ]; then
    if has "$TOOLS" docker && "$DOCKER" info >/dev/null 2>&1; then
      "$DOCKER" images --format '{{.Repository}}:{{.Tag}}' | grep -E "^($PREFIX/|${BASE%%:*}:)" |
        xargs -r "$DOCKER" rmi -f >/dev/null 2>&1 || true
    fi
    for root in $(buildah_roots); do
      d=$(basename "$root")
      buildah --root "$root/root" --runroot "$root/run" --storage-driver "$d" rm -a >/dev/null 2>&1 || true
      buildah --root "$root/root" --runroot "$root/run" --storage-driver "$d" rmi -a -f >/dev/null 2>&1 || true
    done
    unmount_under "$WORK"
    rm -rf "$WORK"/{kiln,buildah,ctx,trash}
  fi
  if [ "$started_dockerd" = 1 ] && [ -n "$dockerd_pid" ]; then
    note "stopping the dockerd this script started"
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# --- the base image, in all three tools ----------------------------------------------------------
fixtures/busybox-rootfs.sh "$WORK/busybox.tar"
seed_kiln() { rm -rf "$1" && "$kiln" --root "$1" import "$WORK/busybox.tar" "$BASE" >/dev/null; }

if has "$TOOLS" docker; then
  "$DOCKER" info >/dev/null 2>&1 || meta started_dockerd_at_start 1
  ensure_docker
  "$DOCKER" import "$WORK/busybox.tar" "$BASE" >/dev/null
  meta docker_version "$("$DOCKER" version --format '{{.Server.Version}}')"
  meta docker_driver "$("$DOCKER" info --format '{{.Driver}}')"
fi

# buildah: the first configuration whose smoke build (FROM base + RUN) works, in this order.
B=
BUD=
if has "$TOOLS" buildah; then
  mkdir -p "$WORK/ctx/smoke"
  printf 'FROM %s\nRUN echo ok > /ok\n' "$BASE" >"$WORK/ctx/smoke/Dockerfile"
  for config in overlay:oci vfs:oci overlay:chroot vfs:chroot; do
    driver=${config%%:*}
    isolation=${config##*:}
    root=$WORK/buildah/$driver
    B="buildah --root $root/root --runroot $root/run --storage-driver $driver"
    BUD="$B bud --layers --runtime /usr/sbin/runc --network none --isolation $isolation"
    if ! $B images -q "$BASE" 2>/dev/null | grep -q .; then
      c=$($B from scratch 2>>"$WORK/log/buildah-setup.log") &&
        $B add "$c" "$WORK/busybox.tar" / >>"$WORK/log/buildah-setup.log" 2>&1 &&
        $B commit --rm "$c" "$BASE" >>"$WORK/log/buildah-setup.log" 2>&1 || continue
    fi
    if $BUD -t "$PREFIX/smoke:1" "$WORK/ctx/smoke" >>"$WORK/log/buildah-setup.log" 2>&1; then
      note "buildah: storage driver $driver, isolation $isolation"
      meta buildah_config "storage driver $driver, isolation $isolation"
      break
    fi
    echo "buildah $config failed: $(tail -1 "$WORK/log/buildah-setup.log")" >&2
    B=
    BUD=
  done
  [ -n "$BUD" ] || { echo "no buildah configuration works; see $WORK/log/buildah-setup.log" >&2; exit 1; }
  meta buildah_version "$(buildah --version | awk '{print $3}')"
  meta runc_version "$(/usr/sbin/runc --version | awk 'NR==1 {print $3}')"
fi
meta kiln_version "$("$kiln" --version | awk '{print $2}') (${KILN_DESC:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches' || echo ', with uncommitted changes')})"
dbuild="DOCKER_BUILDKIT=1 $DOCKER build --network none"

# --- measuring -----------------------------------------------------------------------------------
# bench KEY RUNS PREPARE COMMAND: hyperfine median into json/KEY.json; a failing command is recorded
# in log/KEY.fail (the last lines of its output) instead of stopping the script.
bench() {
  local key=$1 runs=$2 prepare=$3 cmd=$4
  note "$key: $cmd"
  [[ $key != *.docker ]] || ensure_docker || true
  printf '%s\n' "$cmd" >"$WORK/meta/cmd.$key"
  [ -z "$prepare" ] || printf '%s\n' "$prepare" >"$WORK/meta/prepare.$key"
  local args=(--style basic --warmup 1 --runs "$runs" --export-json "$WORK/json/$key.json")
  [ -z "$prepare" ] || args+=(--prepare "$prepare")
  if ! hyperfine "${args[@]}" "$cmd" >&2; then
    rm -f "$WORK/json/$key.json"
    [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1 || true
    bash -c "$cmd" >"$WORK/log/$key.out" 2>&1 || true
    tail -5 "$WORK/log/$key.out" >"$WORK/log/$key.fail"
    echo "$key FAILED: $(cat "$WORK/log/$key.fail")" >&2
  fi
}
# Peak RSS (KiB) of one kiln run, from GNU time's "Maximum resident set size".
rss() {
  local key=$1 prepare=$2 cmd=$3
  [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1
  if /usr/bin/time -v -o "$WORK/log/time.$key" bash -c "exec $cmd" >/dev/null 2>&1; then
    awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/log/time.$key" >"$WORK/meta/rss.$key"
  fi
}
# Per-step wall times of one kiln run, from --progress rawjson timestamps.
phases() {
  local key=$1 prepare=$2 cmd=$3
  [ "$PROFILE" = 1 ] || return 0
  [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1
  python3 - "$WORK/prof/phases.$key" "$cmd --progress rawjson" <<'PY' || true
import datetime, json, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2]
start = time.time()
proc = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
end = time.time()
steps = {}
for line in proc.stderr.splitlines():
    try:
        event = json.loads(line)
    except ValueError:
        continue
    for v in event.get("vertexes", []):
        if "started" in v and "completed" in v:
            ts = lambda s: datetime.datetime.fromisoformat(s[:26].rstrip("Z") + "+00:00").timestamp()
            steps[v["name"]] = (ts(v["started"]), ts(v["completed"]))
parts = []
if steps:
    first = min(s for s, _ in steps.values())
    last = max(c for _, c in steps.values())
    parts.append(f"start-up {1000 * (first - start):.0f} ms")
    for name, (s, c) in sorted(steps.items(), key=lambda kv: kv[1][0]):
        parts.append(f"`{name[:60]}` {c - s:.3f} s (at +{s - start:.2f} s)")
    parts.append(f"after the last step (config, image index) {1000 * (end - last):.0f} ms")
parts.append(f"total {end - start:.3f} s" + ("" if proc.returncode == 0 else f" (exit status {proc.returncode})"))
open(out, "w").write("; ".join(parts))
PY
}
# A flat perf profile (self time by process and symbol) and a syscall summary of one kiln run.
profile() {
  local key=$1 prepare=$2 cmd=$3
  [ "$PROFILE" = 1 ] || return 0
  if command -v perf >/dev/null; then
    [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1
    if perf record -q -F 999 -g -o "$WORK/prof/$key.perf" -- bash -c "exec $cmd" >/dev/null 2>"$WORK/log/perf.$key"; then
      perf report -i "$WORK/prof/$key.perf" --no-children --sort comm,dso,symbol --stdio -g none \
        --percent-limit 1.5 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 >"$WORK/prof/perf.$key" || true
    fi
  fi
  if command -v strace >/dev/null; then
    [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1
    strace -f -c -S time -o "$WORK/prof/strace.$key" bash -c "exec $cmd" >/dev/null 2>&1 || true
  fi
}

tag() { echo "$PREFIX/$1:1"; }
kbuild() { echo "$kiln --root $1 build --network none $2 -t $(tag "$3") $4"; }
dbuild() { echo "$dbuild $1 -t $(tag "$2") $3"; }
bbuild() { echo "$BUD $1 -t $(tag "$2") $3"; }
drm() { echo "$DOCKER rmi -f $(tag "$1") >/dev/null 2>&1 || true"; }
brm() { echo "$B rmi -f $(tag "$1") >/dev/null 2>&1 || true; $B rmi --prune >/dev/null 2>&1 || true"; }

meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"

# --- many-steps ----------------------------------------------------------------------------------
if has "$SCENARIOS" many-steps; then
  mkdir -p "$WORK/ctx/steps10" "$WORK/ctx/steps0"
  { echo "FROM $BASE"; for i in $(seq 10); do echo "RUN echo $i > /f$i"; done; } >"$WORK/ctx/steps10/Dockerfile"
  echo "FROM $BASE" >"$WORK/ctx/steps0/Dockerfile"
  for n in 10 0; do
    ctx=$WORK/ctx/steps$n
    store=$WORK/kiln/steps$n
    if has "$TOOLS" kiln; then
      seed_kiln "$store"
      cmd=$(kbuild "$store" --no-cache "steps$n" "$ctx")
      bench "steps$n.kiln" "$RUNS" "" "$cmd"
      [ "$n" = 0 ] || { rss "steps$n" "" "$cmd"; phases "steps$n" "" "$cmd"; }
      [ "$n" = 0 ] || { [ "$PROFILE" = 1 ] && strace -f -c -S time -o "$WORK/prof/strace.steps10" bash -c "exec $cmd" >/dev/null 2>&1 || true; }
    fi
    has "$TOOLS" docker && bench "steps$n.docker" "$RUNS" "" "$(dbuild --no-cache "steps$n" "$ctx")"
    has "$TOOLS" buildah && bench "steps$n.buildah" "$RUNS" "" "$(bbuild --no-cache "steps$n" "$ctx")"
  done
fi

# --- parallel ------------------------------------------------------------------------------------
if has "$SCENARIOS" parallel; then
  ctx=$WORK/ctx/parallel
  mkdir -p "$ctx"
  {
    for s in a b c d; do printf 'FROM %s AS %s\nRUN sleep 2 && echo %s > /%s\n' "$BASE" "$s" "$s" "$s"; done
    echo "FROM $BASE"
    for s in a b c d; do echo "COPY --from=$s /$s /$s"; done
  } >"$ctx/Dockerfile"
  if has "$TOOLS" kiln; then
    store=$WORK/kiln/parallel
    seed_kiln "$store"
    cmd=$(kbuild "$store" --no-cache parallel "$ctx")
    bench parallel.kiln "$RUNS" "" "$cmd"
    rss parallel "" "$cmd"
    phases parallel "" "$cmd"
  fi
  has "$TOOLS" docker && bench parallel.docker "$RUNS" "" "$(dbuild --no-cache parallel "$ctx")"
  if has "$TOOLS" buildah; then
    bench parallel.buildah "$RUNS" "" "$(bbuild --no-cache parallel "$ctx")"
    # buildah runs one stage at a time unless told otherwise: also measure it with --jobs 4.
    bench parallel.buildah-jobs4 "$RUNS" "" "$(bbuild "--no-cache --jobs 4" parallel "$ctx")"
  fi
fi

# --- many-files ----------------------------------------------------------------------------------
if has "$SCENARIOS" many-files; then
  ctx=$WORK/ctx/many-files
  note "making the many-files context"
  python3 benches/make_build_context.py "$ctx" --base "$BASE" --files 10000 --dirs 100 --size 21504
  meta context_bytes "$(du -sb "$ctx/src" | cut -f1)"
  sync
  # One file gets new random bytes before every run of the "changed" measurements (untimed).
  change="head -c 21504 /dev/urandom > $ctx/src/d050/f0050; sync"
  if has "$TOOLS" kiln; then
    cold=$WORK/kiln/mf-cold
    # The previous store is moved aside, not deleted: on ext4 without a journal (this machine's
    # root) new inodes skip every inode freed in the last ~30 s (`recently_deleted`), so deleting
    # 30,000 files just before each run would bill the next run for scanning past them.
    mkdir -p "$WORK/trash"
    fresh="{ [ ! -e $cold ] || mv $cold \$(mktemp -d -p $WORK/trash); } && $kiln --root $cold import $WORK/busybox.tar $BASE >/dev/null && sync"
    cmd=$(kbuild "$cold" "" mf-cold "$ctx")
    bench mf-cold.kiln "$RUNS" "$fresh" "$cmd"
    rss mf-cold "$fresh" "$cmd"
    phases mf-cold "$fresh" "$cmd"
    profile mf-cold "$fresh" "$cmd"
    warm=$WORK/kiln/mf-rebuild
    seed_kiln "$warm"
    cmd=$(kbuild "$warm" "" mf-rebuild "$ctx")
    bash -c "$cmd" >/dev/null 2>&1 || true
    # Does this kiln have a build cache (issue 5)? A second build reports cached steps if so.
    bash -c "$cmd --progress rawjson" >"$WORK/log/cache-probe" 2>&1 || true
    if grep -q '"cached": *true' "$WORK/log/cache-probe"; then meta kiln_cache yes; else meta kiln_cache no; fi
    bench mf-noop.kiln "$RUNS" "" "$cmd"
    rss mf-noop "" "$cmd"
    phases mf-noop "" "$cmd"
    profile mf-noop "" "$cmd"
    bench mf-changed.kiln "$RUNS" "$change" "$cmd"
    rss mf-changed "$change" "$cmd"
    phases mf-changed "$change" "$cmd"
    profile mf-changed "$change" "$cmd"
  fi
  if has "$TOOLS" docker; then
    bench mf-cold.docker "$RUNS" "$(drm mf-cold); sync" "$(dbuild --no-cache mf-cold "$ctx")"
    cmd=$(dbuild "" mf-rebuild "$ctx")
    bash -c "$cmd" >/dev/null 2>&1 || true
    bench mf-noop.docker "$RUNS" "" "$cmd"
    bench mf-changed.docker "$RUNS" "$change" "$cmd"
  fi
  if has "$TOOLS" buildah; then
    bench mf-cold.buildah "$RUNS" "$(brm mf-cold); sync" "$(bbuild --no-cache mf-cold "$ctx")"
    cmd=$(bbuild "" mf-rebuild "$ctx")
    bash -c "$cmd" >/dev/null 2>&1 || true
    bench mf-noop.buildah "$RUNS" "" "$cmd"
    bench mf-changed.buildah "$RUNS" "$change" "$cmd"
  fi
fi

# --- big -----------------------------------------------------------------------------------------
if has "$SCENARIOS" big; then
  ctx=$WORK/ctx/big
  mkdir -p "$ctx"
  { echo "FROM $BASE"; for i in 1 2 3 4; do echo "RUN head -c 268435456 /dev/urandom > /l$i"; done; } >"$ctx/Dockerfile"
  if has "$TOOLS" kiln; then
    store=$WORK/kiln/big
    fresh="rm -rf $store && $kiln --root $store import $WORK/busybox.tar $BASE >/dev/null && sync"
    cmd=$(kbuild "$store" "" big "$ctx")
    bench big.kiln "$BIG_RUNS" "$fresh" "$cmd"
    rss big "$fresh" "$cmd"
    phases big "$fresh" "$cmd"
    profile big "$fresh" "$cmd"
    rm -rf "$store"
  fi
  has "$TOOLS" docker && bench big.docker "$BIG_RUNS" "$(drm big); sync" "$(dbuild --no-cache big "$ctx")"
  has "$TOOLS" buildah && bench big.buildah "$BIG_RUNS" "$(brm big); sync" "$(bbuild --no-cache big "$ctx")"
fi

meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
meta elapsed "$(($(date +%s) - script_start))"
meta machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $fstype under \`$WORK\` ($(df --output=source "$WORK" | tail -1)$(has "$TOOLS" docker && echo ", the same file system as /var/lib/docker: $(df --output=source /var/lib/docker | tail -1)"))"
meta work "$WORK"
meta runs "$RUNS"
meta big_runs "$BIG_RUNS"
meta started_dockerd "$started_dockerd"
python3 benches/build_report.py "$WORK" "$results"
