#!/usr/bin/env bash
# Growth benchmark (issue 14, "how cost grows"): kiln beside BuildKit (`docker build`, dockerd's
# BuildKit) as the input grows, on the same busybox base image (fixtures/busybox-rootfs.sh, brought in
# with `kiln import` and `docker import`). Series:
#   context   `COPY src /app/src` + `RUN find /app -type f | wc -l > /count` on a context of N files of
#             2 KiB (benches/make_build_context.py, 100 files a directory): cold build, no-op rebuild,
#             rebuild after one file changed; N = 1,000 / 10,000 / 100,000
#   steps     one stage of N `RUN echo I > /fI` steps, and of N `ENV KI=vI` steps (no layers), cold
#             (--no-cache); N = 10 / 100 / 300 / 1,000
#   stages    N independent stages `FROM base AS sI` + `RUN echo I > /sI`, and a last stage
#             `FROM base` that COPYs /sI from every one of them (fan-in, not a chain), cold
#             (--no-cache); N = 1 / 10 / 100
#   saveload  an image of 4 layers of random data, N MiB in all: `kiln save -o` / `kiln load -i` (fresh
#             store) beside `docker save -o` / `docker load -i`; N = 100 / 1,024 / 4,096 MiB
# Times are hyperfine medians (RUNS runs after 1 warm-up; BIG_RUNS runs without warm-up at the largest
# point of a series); kiln's peak RSS is the largest GNU time `%M` over all its runs at a point. Each
# series records the load average before and after it.
# Writes benches/growth.tsv (one row per series/op/tool/N), benches/growth-meta.json, benches/growth.png
# (log-log, with a dotted line of slope 1 through the first point of each curve) and the "growth"
# section of benches/RESULTS.md (growth_plot.py). Rows of series or tools not run this time are kept
# from the previous growth.tsv, so one series or one tool can be refreshed alone.
#
# usage: benches/growth.sh                (as root: RUN needs namespaces and mounts)
# env:   SERIES="context steps stages saveload"
#        TOOLS="kiln docker"              leave docker out to refresh kiln's figures only
#        RUNS=3 BIG_RUNS=1                hyperfine runs at the small points / at the big ones: the
#                                         largest of a series and any at or above BIG_<SERIES>
#        CONTEXT_SIZES="1000 10000 100000" STEP_SIZES="10 100 300 1000" STAGE_SIZES="1 10 100"
#        IMAGE_MIB="100 1024 4096"        (300 steps: overlayfs stacks at most 500 lower directories,
#                                         BuildKit's overlay2 at most 128, so 1,000 RUN steps fail)
#        BIG_CONTEXT=100000 BIG_STEPS=300 BIG_STAGES=100 BIG_IMAGE_MIB=4096
#        WORK=/var/tmp/kiln-bench-growth  scratch, not tmpfs; a save/load point needs 3.5 × its size
#                                         + 2 GiB free there (else it is skipped and said so)
#        TIMEOUT=600                      seconds one command may take before it counts as failed
#        KILN=path/to/kiln KILN_DESC=…    measure this binary instead of a release build of the tree
#        OUT=benches RESULTS=benches/RESULTS.md
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
SERIES=${SERIES:-context steps stages saveload}
TOOLS=${TOOLS:-kiln docker}
RUNS=${RUNS:-3}
BIG_RUNS=${BIG_RUNS:-1}
CONTEXT_SIZES=${CONTEXT_SIZES:-1000 10000 100000}
STEP_SIZES=${STEP_SIZES:-10 100 300 1000}
STAGE_SIZES=${STAGE_SIZES:-1 10 100}
IMAGE_MIB=${IMAGE_MIB:-100 1024 4096}
BIG_CONTEXT=${BIG_CONTEXT:-100000}
BIG_STEPS=${BIG_STEPS:-300}
BIG_STAGES=${BIG_STAGES:-100}
BIG_IMAGE_MIB=${BIG_IMAGE_MIB:-4096}
WORK=${WORK:-/var/tmp/kiln-bench-growth}
TIMEOUT=${TIMEOUT:-600}
OUT=${OUT:-$repo/benches}
RESULTS=${RESULTS:-$repo/benches/RESULTS.md}
DOCKER=/usr/bin/docker
BASE=growth-busybox:latest # the same name in both tools
PREFIX=growth              # every docker image this script tags starts with it
script_start=$(date +%s)

has() { [[ " $1 " == *" $2 "* ]]; }
note() { echo "== $*" >&2; }
# is_big N THRESHOLD SIZES…: 1 when N is the largest of SIZES or at least THRESHOLD
is_big() {
  local n=$1 threshold=$2
  shift 2
  if [ "$n" = "${*: -1}" ] || [ "$n" -ge "$threshold" ]; then echo 1; else echo 0; fi
}

if [ -n "${KILN:-}" ]; then
  kiln=$KILN
  kiln_desc=${KILN_DESC:-$KILN}
else
  cargo build --release --quiet
  kiln=$repo/target/release/kiln
  kiln_desc="release build of $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches' || echo ', with uncommitted changes')"
fi

# --- scratch space -------------------------------------------------------------------------------
unmount_under() { findmnt -rn -o TARGET | { grep "^$1/" || true; } | sort -r | xargs -r -n1 umount -l; }
if [ -d "$WORK" ]; then
  unmount_under "$WORK"
  rm -rf "$WORK"
fi
mkdir -p "$WORK"/{json,rss,ctx,kiln,log,trash}
fstype=$(df -T "$WORK" | awk 'NR==2 {print $2}')
[ "$fstype" = tmpfs ] && { echo "WORK=$WORK is on tmpfs; pick a directory on the disk docker uses" >&2; exit 1; }
rows=$WORK/rows.tsv
meta=$WORK/meta.tsv # series, key, value
: >"$rows"
: >"$meta"
setmeta() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$meta"; }

# --- dockerd (may be shared with other work on the machine, which may also stop it) --------------
started_dockerd=0
dockerd_pid=
ensure_docker() {
  if ! "$DOCKER" info >/dev/null 2>&1; then
    note "no dockerd answers; starting one"
    dockerd --iptables=false --bridge=none >"$WORK/log/dockerd.log" 2>&1 &
    dockerd_pid=$!
    started_dockerd=1
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null 2>&1 || { echo "dockerd did not start: $(tail -3 "$WORK/log/dockerd.log")" >&2; return 1; }
  fi
  "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 || "$DOCKER" import "$WORK/busybox.tar" "$BASE" >/dev/null
}
docker_rm_ours() {
  "$DOCKER" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -E "^$PREFIX-" |
    xargs -r "$DOCKER" rmi -f >/dev/null 2>&1 || true
}
cleanup() {
  if has "$TOOLS" docker && "$DOCKER" info >/dev/null 2>&1; then docker_rm_ours; fi
  unmount_under "$WORK"
  note "removing the scratch stores and contexts"
  rm -rf "$WORK"/{kiln,ctx,trash,saveload}
  if [ "$started_dockerd" = 1 ] && [ -n "$dockerd_pid" ]; then
    note "stopping the dockerd this script started"
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

fixtures/busybox-rootfs.sh "$WORK/busybox.tar" >/dev/null
seed_kiln() { rm -rf "$1" && "$kiln" --root "$1" import "$WORK/busybox.tar" "$BASE" >/dev/null; }
# A store is moved aside, not deleted, before a cold run: on ext4 without a journal new inodes skip
# the ones freed in the last ~30 s, which would bill the next run for deleting the previous store.
fresh_kiln() { echo "{ [ ! -e $1 ] || mv $1 \$(mktemp -d -p $WORK/trash); } && $kiln --root $1 import $WORK/busybox.tar $BASE >/dev/null && sync"; }
if has "$TOOLS" docker; then
  ensure_docker
  setmeta all docker "$("$DOCKER" version --format '{{.Server.Version}}') ($("$DOCKER" info --format '{{.Driver}}'))"
fi
setmeta all kiln "$kiln_desc"
setmeta all machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $fstype under \`$WORK\` ($(df --output=source "$WORK" | tail -1))"
setmeta all runs "$RUNS"
setmeta all big_runs "$BIG_RUNS"

# --- measuring -----------------------------------------------------------------------------------
# bench SERIES OP TOOL N BIG PREPARE COMMAND: hyperfine (RUNS runs after a warm-up, or BIG_RUNS
# without one when BIG=1) into json/KEY.json and one row of rows.tsv. kiln commands run under GNU
# time, appending each run's peak RSS to rss/KEY. A failing (or timed-out) command gets a row with
# its last error line instead of times.
bench() {
  local series=$1 op=$2 tool=$3 n=$4 big=$5 prepare=$6 cmd=$7 key runs warmup
  key=$(printf '%s.%s.%s.%s' "$series" "$op" "$tool" "$n" | tr ' /' '__')
  if [ "$big" = 1 ]; then runs=$BIG_RUNS warmup=0; else runs=$RUNS warmup=1; fi
  [ "$tool" != docker ] || ensure_docker || true
  [ "$tool" != kiln ] || cmd="/usr/bin/time -a -o $WORK/rss/$key -f %M $cmd"
  note "$series $op $tool n=$n: $cmd"
  local args=(--style basic --warmup "$warmup" --runs "$runs" --export-json "$WORK/json/$key.json")
  [ -z "$prepare" ] || args+=(--prepare "$prepare")
  if hyperfine "${args[@]}" "timeout $TIMEOUT $cmd" >&2; then
    python3 - "$WORK/json/$key.json" "$WORK/rss/$key" "$series" "$op" "$tool" "$n" "$runs" >>"$rows" <<'PY'
import json, os, sys
js, rss, series, op, tool, n, runs = sys.argv[1:]
r = json.load(open(js))["results"][0]
peak = max((int(l) for l in open(rss) if l.strip().isdigit()), default="") if os.path.exists(rss) else ""
print("\t".join(map(str, [series, op, tool, n, runs, "%.4f" % r["median"], "%.4f" % r["min"], "%.4f" % r["max"],
                          "%.4f" % (r["user"] + r["system"]), peak, ""])))
PY
  else
    [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1 || true
    bash -c "timeout $TIMEOUT $cmd" >"$WORK/log/$key.out" 2>&1 || true
    local why
    why=$(grep -v '^\s*$' "$WORK/log/$key.out" | tail -1 | tr '\t' ' ' | rev | cut -c1-240 | rev)
    echo "$key FAILED: $why" >&2
    printf '%s\t%s\t%s\t%s\t%s\t\t\t\t\t\tfailed: %s\n' "$series" "$op" "$tool" "$n" "$runs" "$why" >>"$rows"
  fi
}
series_start() { setmeta "$1" load_before "$(cut -d' ' -f1-3 /proc/loadavg)"; setmeta "$1" date "$(date -u '+%Y-%m-%d %H:%M UTC')"; eval "t_$1=\$(date +%s)"; }
series_end() { setmeta "$1" load_after "$(cut -d' ' -f1-3 /proc/loadavg)"; setmeta "$1" elapsed_s "$(($(date +%s) - $(eval echo "\$t_$1")))"; }

tag() { echo "$PREFIX-$1:1"; }
kbuild() { echo "$kiln --root $1 build -q --network none $2 -t $(tag "$3") $4"; }
dbuild() { echo "env DOCKER_BUILDKIT=1 $DOCKER build -q --network none $1 -t $(tag "$2") $3"; }
drm() { echo "$DOCKER rmi -f $(tag "$1") >/dev/null 2>&1 || true"; }

# --- context -------------------------------------------------------------------------------------
if has "$SERIES" context; then
  series_start context
  for n in $CONTEXT_SIZES; do
    big=$(is_big "$n" "$BIG_CONTEXT" $CONTEXT_SIZES)
    ctx=$WORK/ctx/context-$n
    dirs=$((n / 100))
    [ "$dirs" -ge 1 ] || dirs=1
    note "making a context of $n files"
    python3 benches/make_build_context.py "$ctx" --base "$BASE" --files "$n" --dirs "$dirs" --size 2048
    setmeta context "bytes_$n" "$(du -sb "$ctx/src" | cut -f1)"
    sync
    # Untimed before every "one file changed" run: new random bytes in one file.
    change="head -c 2048 /dev/urandom > $ctx/src/d000/f0000; sync"
    if has "$TOOLS" kiln; then
      store=$WORK/kiln/context-$n-cold
      bench context cold kiln "$n" "$big" "$(fresh_kiln "$store")" "$(kbuild "$store" "" context "$ctx")"
      mv "$store" "$(mktemp -d -p "$WORK/trash")"
      store=$WORK/kiln/context-$n
      seed_kiln "$store"
      cmd=$(kbuild "$store" "" context "$ctx")
      bash -c "$cmd" >/dev/null
      bench context noop kiln "$n" "$big" "" "$cmd"
      bench context changed kiln "$n" "$big" "$change" "$cmd"
      mv "$store" "$(mktemp -d -p "$WORK/trash")"
    fi
    if has "$TOOLS" docker; then
      cmd=$(dbuild "" context "$ctx")
      bench context cold docker "$n" "$big" "$(drm context); sync" "$(dbuild --no-cache context "$ctx")"
      bash -c "$cmd" >/dev/null
      bench context noop docker "$n" "$big" "" "$cmd"
      bench context changed docker "$n" "$big" "$change" "$cmd"
      bash -c "$(drm context)"
    fi
    # Deleting ~300,000 files here took 10 minutes on a busy disk: the trash goes at the end.
    mv "$ctx" "$(mktemp -d -p "$WORK/trash")"
  done
  series_end context
fi

# --- steps ---------------------------------------------------------------------------------------
if has "$SERIES" steps; then
  series_start steps
  for n in $STEP_SIZES; do
    big=$(is_big "$n" "$BIG_STEPS" $STEP_SIZES)
    for kind in run env; do
      ctx=$WORK/ctx/steps-$kind-$n
      mkdir -p "$ctx"
      {
        echo "FROM $BASE"
        for ((i = 1; i <= n; i++)); do
          if [ "$kind" = run ]; then echo "RUN echo $i > /f$i"; else echo "ENV K$i=v$i"; fi
        done
      } >"$ctx/Dockerfile"
      if has "$TOOLS" kiln; then
        store=$WORK/kiln/steps-$kind-$n
        seed_kiln "$store"
        bench steps "cold-$kind" kiln "$n" "$big" "" "$(kbuild "$store" --no-cache "steps-$kind" "$ctx")"
        rm -rf "$store"
      fi
      if has "$TOOLS" docker; then
        bench steps "cold-$kind" docker "$n" "$big" "$(drm "steps-$kind")" "$(dbuild --no-cache "steps-$kind" "$ctx")"
        bash -c "$(drm "steps-$kind")"
      fi
      rm -rf "$ctx"
    done
  done
  series_end steps
fi

# --- stages --------------------------------------------------------------------------------------
if has "$SERIES" stages; then
  series_start stages
  for n in $STAGE_SIZES; do
    big=$(is_big "$n" "$BIG_STAGES" $STAGE_SIZES)
    ctx=$WORK/ctx/stages-$n
    mkdir -p "$ctx"
    {
      for ((i = 1; i <= n; i++)); do printf 'FROM %s AS s%d\nRUN echo %d > /s%d\n' "$BASE" "$i" "$i" "$i"; done
      echo "FROM $BASE"
      for ((i = 1; i <= n; i++)); do echo "COPY --from=s$i /s$i /s$i"; done
    } >"$ctx/Dockerfile"
    if has "$TOOLS" kiln; then
      store=$WORK/kiln/stages-$n
      seed_kiln "$store"
      bench stages cold kiln "$n" "$big" "" "$(kbuild "$store" --no-cache stages "$ctx")"
      rm -rf "$store"
    fi
    if has "$TOOLS" docker; then
      bench stages cold docker "$n" "$big" "$(drm stages)" "$(dbuild --no-cache stages "$ctx")"
      bash -c "$(drm stages)"
    fi
    rm -rf "$ctx"
  done
  series_end stages
fi

# --- save / load ---------------------------------------------------------------------------------
if has "$SERIES" saveload; then
  series_start saveload
  d=$WORK/saveload
  for n in $IMAGE_MIB; do
    big=$(is_big "$n" "$BIG_IMAGE_MIB" $IMAGE_MIB)
    rm -rf "$d"
    mkdir -p "$d"
    ref=$(tag "saveload-$n")
    # At most three copies of the image exist at once (store or docker's copy, archive, output).
    free_mib=$(($(df --output=avail -k "$WORK" | tail -1) / 1024))
    if [ "$free_mib" -lt $((n * 7 / 2 + 2048)) ]; then
      note "skipping $n MiB: $free_mib MiB free under $WORK, $((n * 7 / 2 + 2048)) needed"
      for t in kiln docker; do
        has "$TOOLS" "$t" || continue
        for op in save load; do
          printf 'saveload\t%s\t%s\t%s\t\t\t\t\t\t\tskipped: %s MiB free on the disk, %s needed\n' "$op" "$t" "$n" \
            "$free_mib" $((n * 7 / 2 + 2048)) >>"$rows"
        done
      done
      continue
    fi
    note "making a $n MiB image archive"
    python3 benches/make_image_archive.py "$d/input.tar" --layers 4 --layer-mib $((n / 4)) --tag "$ref" >/dev/null
    store=$d/store
    "$kiln" --root "$store" load -q -i "$d/input.tar" >/dev/null
    rm -f "$d/input.tar"
    "$kiln" --root "$store" save -o "$d/image.tar" "$ref"
    setmeta saveload "bytes_$n" "$(stat -c %s "$d/image.tar")"
    sync
    if has "$TOOLS" kiln; then
      bench saveload save kiln "$n" "$big" "rm -f $d/out.tar; sync" "$kiln --root $store save -o $d/out.tar $ref"
      rm -f "$d/out.tar"
      bench saveload load kiln "$n" "$big" "rm -rf $d/fresh; sync" "$kiln --root $d/fresh load -q -i $d/image.tar"
      rm -rf "$d/fresh"
    fi
    rm -rf "$store"
    if has "$TOOLS" docker; then
      ensure_docker
      "$DOCKER" load -q -i "$d/image.tar" >/dev/null
      bench saveload save docker "$n" "$big" "rm -f $d/out.tar; sync" "$DOCKER save -o $d/out.tar $ref"
      rm -f "$d/out.tar"
      bench saveload load docker "$n" "$big" "$DOCKER rmi -f $ref >/dev/null 2>&1 || true; sync" "$DOCKER load -q -i $d/image.tar"
      "$DOCKER" rmi -f "$ref" >/dev/null 2>&1 || true
    fi
    rm -rf "$d"
  done
  series_end saveload
fi

setmeta all elapsed_s "$(($(date +%s) - script_start))"
setmeta all command "$(printf '%q ' env SERIES="$SERIES" TOOLS="$TOOLS" RUNS="$RUNS" BIG_RUNS="$BIG_RUNS" benches/growth.sh | sed 's/ $//')"
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3 # Debian's, where python3-matplotlib installs
"$py" benches/growth_plot.py --rows "$rows" --meta "$meta" --series "$SERIES" --tools "$TOOLS" \
  --tsv "$OUT/growth.tsv" --meta-json "$OUT/growth-meta.json" --png "$OUT/growth.png" --results "$RESULTS"
