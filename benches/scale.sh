#!/usr/bin/env bash
# Scale benchmark: how `kiln build` (plan + build) grows with the number of stages and steps.
#   stages  a chain of N stages: `FROM scratch AS sI` + `COPY --from=s(I-1) /a /a`
#   steps   one stage of N steps: ENV, COPY, LABEL and WORKDIR in turn
# for N = 10, 100, 1,000, 10,000: a cold build on a fresh store, then the same build again (every
# step cached: planning and cache keys only). Records the wall time, CPU time, peak RSS and the
# most threads kiln had (sampled from /proc every 10 ms); as root with the cgroup v1 pids
# controller, every build runs in a child cgroup with pids.max=$PIDS_MAX.
# Writes benches/scale.tsv, benches/scale.md (a table) and, with python3-matplotlib,
# benches/scale.png (time against N, log-log, with a linear reference).
#
# usage: benches/scale.sh
# env:   WORK=/var/tmp/kiln-bench-scale   scratch directory (stores and contexts); a tmpfs such as
#                                         /dev/shm/kiln-bench-scale leaves out the disk's fsyncs
#        SIZES="10 100 1000 10000"  KINDS="stages steps"
#        PIDS_MAX=100                     0: no pids cgroup
#        KILN=path/to/kiln KILN_DESC=…    measure this binary instead of a release build of the tree
#        OUT=benches                      where scale.{tsv,md,png} go
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WORK=${WORK:-/var/tmp/kiln-bench-scale}
SIZES=${SIZES:-10 100 1000 10000}
KINDS=${KINDS:-stages steps}
PIDS_MAX=${PIDS_MAX:-100}
OUT=${OUT:-$repo/benches}

if [ -n "${KILN:-}" ]; then
  kiln=$KILN
  desc=${KILN_DESC:-$KILN}
else
  cargo build --release --quiet
  kiln=$repo/target/release/kiln
  desc="release build of $(git rev-parse --short HEAD)"
fi

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"

cgroup=
if [ "$PIDS_MAX" != 0 ] && [ "$(id -u)" = 0 ] && [ -e /sys/fs/cgroup/pids/cgroup.procs ]; then
  cgroup=/sys/fs/cgroup/pids/kiln-bench-scale-$$
  mkdir "$cgroup"
  echo "$PIDS_MAX" >"$cgroup/pids.max"
fi
cleanup() {
  [ -n "$cgroup" ] && rmdir "$cgroup" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

make_context() { # KIND N DIR
  local kind=$1 n=$2 dir=$3 i
  mkdir -p "$dir"
  echo hello >"$dir/a.txt"
  {
    case $kind in
    stages)
      printf 'FROM scratch AS s0\nCOPY a.txt /a\n'
      for ((i = 1; i < n; i++)); do printf 'FROM scratch AS s%d\nCOPY --from=s%d /a /a\n' "$i" $((i - 1)); done
      ;;
    steps)
      echo "FROM scratch"
      for ((i = 0; i < n; i++)); do
        case $((i % 4)) in
        0) echo "ENV K$i=v$i" ;;
        1) echo "COPY a.txt /f$i" ;;
        2) echo "LABEL l$i=v$i" ;;
        3) echo "WORKDIR /w$((i % 50))" ;;
        esac
      done
      ;;
    esac
  } >"$dir/Dockerfile"
}

# run_build STORE CONTEXT: prints "wall_s cpu_s rss_kb threads"
run_build() {
  local store=$1 context=$2 times=$WORK/time.txt peak=0 pid t
  if [ -n "$cgroup" ]; then
    /usr/bin/time -f '%e %U %S %M' -o "$times" \
      sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cgroup" \
      "$kiln" --root "$store" build -q -t scale:1 "$context" >/dev/null &
  else
    /usr/bin/time -f '%e %U %S %M' -o "$times" "$kiln" --root "$store" build -q -t scale:1 "$context" >/dev/null &
  fi
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    # /usr/bin/time's child is kiln (the cgroup's sh execs it).
    for t in $(pgrep -P "$pid" 2>/dev/null || true); do
      t=$(awk '/^Threads:/ {print $2}' "/proc/$t/status" 2>/dev/null || echo 0)
      [ "${t:-0}" -gt "$peak" ] && peak=$t
    done
    sleep 0.01
  done
  wait "$pid" || { echo "build failed: $context" >&2; exit 1; }
  read -r wall user sys rss <"$times"
  echo "$wall $(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}') $rss $peak"
}

# Warm-up: the binary and the tools in the page cache before anything is timed.
make_context stages 3 "$WORK/warm-up"
run_build "$WORK/store-warm-up" "$WORK/warm-up" >/dev/null
rm -rf "$WORK/warm-up" "$WORK/store-warm-up"

tsv=$OUT/scale.tsv
printf 'kind\tn\tcold_s\tcold_cpu_s\tcached_s\tcached_cpu_s\tpeak_rss_kb\tpeak_threads\n' >"$tsv"
for kind in $KINDS; do
  for n in $SIZES; do
    context=$WORK/$kind-$n
    store=$WORK/store-$kind-$n
    make_context "$kind" "$n" "$context"
    read -r cold cold_cpu rss threads < <(run_build "$store" "$context")
    read -r cached cached_cpu rss2 threads2 < <(run_build "$store" "$context")
    [ "$rss2" -gt "$rss" ] && rss=$rss2
    [ "$threads2" -gt "$threads" ] && threads=$threads2
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$n" "$cold" "$cold_cpu" "$cached" "$cached_cpu" "$rss" "$threads" |
      tee -a "$tsv" >&2
    rm -rf "$store" "$context"
  done
done

limit=none
[ -n "$cgroup" ] && limit=$PIDS_MAX
# Debian's python3 (where python3-matplotlib installs), not whatever python3 is first on PATH.
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
"$py" "$repo/benches/scale_plot.py" "$tsv" "$OUT" "kiln: $desc; $(nproc) cores; WORK=$WORK; pids.max=$limit"
