#!/usr/bin/env bash
# The cost of each isolation mode (issue 13): the many-steps and many-files scenarios of
# benches/build.sh (its context maker) built by
#   root      kiln as root (namespaces, overlay): the reference
#   rootless  kiln as a normal user (BENCH_USER, made if missing, with a subuid range)
#   chroot    kiln as root inside `docker run` with docker's default capabilities and seccomp
#             (no CAP_SYS_ADMIN: the chroot isolation); the store on a bind mount of WORK
#   buildah   `buildah bud --layers` as the same user (its storage in the user's home), with
#             --isolation chroot and with --isolation oci (rootless runc), each on the first storage
#             driver (overlay, vfs) whose smoke build works
#   buildkit  BuildKit rootless: docker.io's dockerd-rootless.sh as the user (needs rootlesskit),
#             `DOCKER_BUILDKIT=1 docker build` against it
# Scenarios: steps10 (ten `RUN echo N > /fN`, --no-cache), steps0 (the same without the RUN steps:
# per-RUN cost = difference / 10), mf-cold (10,000 files in 100 dirs, `COPY src` + `RUN find`, a
# fresh store or image store each run). hyperfine medians; ratios to root kiln; the load average
# before and after; the machine. A mode that cannot build gets "failed: <first error line>" (its
# smoke build is tried first, so a missing feature costs seconds, not the whole run).
# Writes the `isolation` section of benches/RESULTS.md.
#
# usage: benches/isolation.sh                (as root: it makes the user and the docker image)
# env:   WORK=/var/tmp/kiln-bench-isolation  scratch directory on a disk (not tmpfs), world-traversable
#        RUNS=3                              hyperfine runs (after 1 warm-up) per measurement
#        FILES=10000                         files of the many-files context (100 dirs)
#        MODES="root rootless chroot buildah buildkit"
#        BENCH_USER=kiln-rootless            the normal user of the rootless modes
#        KILN=path/to/kiln KILN_DESC=…       measure this binary instead of a release build
#        RESULTS=benches/RESULTS.md  KEEP=0
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WORK=${WORK:-/var/tmp/kiln-bench-isolation}
RUNS=${RUNS:-3}
FILES=${FILES:-10000}
MODES=${MODES:-root rootless chroot buildah buildkit}
BENCH_USER=${BENCH_USER:-kiln-rootless}
KEEP=${KEEP:-0}
results=${RESULTS:-$repo/benches/RESULTS.md}
DOCKER=/usr/bin/docker
BASE=kiln-bench-busybox:latest
PREFIX=kiln-bench-isolation # docker images and tags this script makes start with it
IMG=$PREFIX-kiln:1          # the docker image holding kiln for the chroot mode
[ "$(id -u)" = 0 ] || { echo "isolation.sh: run as root (it makes $BENCH_USER and a docker image)" >&2; exit 1; }
has() { [[ " $1 " == *" $2 "* ]]; }
note() { echo "== $*" >&2; }
meta() { printf '%s' "$2" >"$WORK/meta/$1"; }
first_error() { grep -m1 '^Error' "$1" || grep -m1 -iE 'error|denied|not permitted|failed|cannot|unable' "$1" || tail -1 "$1"; }

if [ -n "${KILN:-}" ]; then
  built=$KILN
  desc=${KILN_DESC:-$KILN}
else
  cargo build --release --quiet
  built=$repo/target/release/kiln
  desc="release build of $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches' || echo ', with uncommitted changes')"
fi

# --- the user (as the tests make it: same lock file, a subuid range only if it has none) ------------
(
  flock 9
  id -u "$BENCH_USER" >/dev/null 2>&1 || useradd -m -s /bin/sh "$BENCH_USER"
  for f in /etc/subuid /etc/subgid; do
    grep -q "^$BENCH_USER:" "$f" 2>/dev/null || echo "$BENCH_USER:200000:65536" >>"$f"
  done
) 9>"${TMPDIR:-/tmp}/kiln-test-users.lock"
uid=$(id -u "$BENCH_USER")
gid=$(id -g "$BENCH_USER")

# --- scratch space ---------------------------------------------------------------------------------
rootless_dockerd_pid=
cleanup() {
  set +e
  [ -z "$rootless_dockerd_pid" ] || { kill "$rootless_dockerd_pid"; wait "$rootless_dockerd_pid"; } 2>/dev/null
  # Rootless kiln leaves its user-namespace holder (kiln-userns) running: end the user's processes
  # started from WORK, by pid.
  for p in /proc/[0-9]*; do
    [ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ] && tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "$WORK/" &&
      kill "${p#/proc/}" 2>/dev/null
  done
  if [ "$KEEP" != 1 ]; then
    if "$DOCKER" info >/dev/null 2>&1; then
      "$DOCKER" images --format '{{.Repository}}:{{.Tag}}' | grep "^$PREFIX" | xargs -r "$DOCKER" rmi -f >/dev/null 2>&1
    fi
    [ ! -d "$WORK/user/home/buildah" ] || as_user_sh "for d in \$HOME/buildah/*; do b=\"buildah --root \$d/root --runroot $WORK/user/run/buildah-\$(basename \$d) --storage-driver \$(basename \$d)\"; \$b rm -a; \$b rmi -a -f; done" >/dev/null 2>&1
    rm -rf "$WORK"/{root,user,chroot,trash,rootfs,ctx}
  fi
}
if [ -d "$WORK" ]; then rm -rf "$WORK"; fi
mkdir -p "$WORK"/{json,meta,log,ctx,root,chroot,trash,bin,in}
chmod 755 "$WORK" "$WORK"/ctx "$WORK"/bin "$WORK"/in
fstype=$(df -T "$WORK" | awk 'NR==2 {print $2}')
[ "$fstype" != tmpfs ] || { echo "WORK=$WORK is on tmpfs; pick a directory on a disk" >&2; exit 1; }
# Every directory above WORK must let the user through.
for d in $(p=$WORK; while [ "$p" != / ]; do p=$(dirname "$p"); echo "$p"; done); do
  [ "$(( $(stat -c %a "$d") % 10 & 1 ))" = 1 ] || { echo "$d is not searchable by others: pick another WORK" >&2; exit 1; }
done
# The binary where every user and the docker image can read it.
cp "$built" "$WORK/bin/kiln"
chmod 755 "$WORK/bin/kiln"
kiln=$WORK/bin/kiln
# The user's home, runtime dir and stores.
mkdir -p "$WORK/user"/{home,run,stores}
chown -R "$uid:$gid" "$WORK/user"
chmod 700 "$WORK/user/run"
UHOME=$WORK/user/home
URUN=$WORK/user/run
AS_USER="setpriv --reuid $uid --regid $gid --clear-groups env -i HOME=$UHOME USER=$BENCH_USER LOGNAME=$BENCH_USER XDG_RUNTIME_DIR=$URUN XDG_DATA_HOME=$UHOME/.local/share XDG_CONFIG_HOME=$UHOME/.config PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/share/docker.io/contrib"
as_user_sh() { $AS_USER sh -c "$1"; }
trap cleanup EXIT

fixtures/busybox-rootfs.sh "$WORK/in/busybox.tar"
chmod 644 "$WORK/in/busybox.tar"

# --- contexts (as build.sh makes them) -------------------------------------------------------------
mkdir -p "$WORK/ctx/steps10" "$WORK/ctx/steps0" "$WORK/ctx/smoke"
{ echo "FROM $BASE"; for i in $(seq 10); do echo "RUN echo $i > /f$i"; done; } >"$WORK/ctx/steps10/Dockerfile"
echo "FROM $BASE" >"$WORK/ctx/steps0/Dockerfile"
printf 'FROM %s\nRUN echo ok > /ok && chown 1000:1000 /ok\n' "$BASE" >"$WORK/ctx/smoke/Dockerfile"
note "making the many-files context ($FILES files)"
python3 benches/make_build_context.py "$WORK/ctx/mf" --base "$BASE" --files "$FILES" --dirs 100 --size 21504
chmod -R a+rX "$WORK/ctx"
meta context_bytes "$(du -sb "$WORK/ctx/mf/src" | cut -f1)"
sync

# --- measuring (as build.sh) ------------------------------------------------------------------------
# bench KEY PREPARE COMMAND: hyperfine median into json/KEY.json, or log/KEY.fail with the first
# error line of one more run.
bench() {
  local key=$1 prepare=$2 cmd=$3
  note "$key: $cmd"
  printf '%s\n' "$cmd" >"$WORK/meta/cmd.$key"
  local args=(--style basic --warmup 1 --runs "$RUNS" --export-json "$WORK/json/$key.json")
  [ -z "$prepare" ] || args+=(--prepare "$prepare")
  if ! hyperfine "${args[@]}" "$cmd" >&2; then
    rm -f "$WORK/json/$key.json"
    [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1 || true
    bash -c "$cmd" >"$WORK/log/$key.out" 2>&1 || true
    first_error "$WORK/log/$key.out" >"$WORK/log/$key.fail"
    echo "$key FAILED: $(cat "$WORK/log/$key.fail")" >&2
  fi
}
# smoke MODE COMMAND: one build of the smoke context; on failure the mode is recorded as failed.
smoke() {
  local mode=$1 cmd=$2
  note "$mode smoke: $cmd"
  if bash -c "$cmd" >"$WORK/log/smoke.$mode" 2>&1; then
    return 0
  fi
  first_error "$WORK/log/smoke.$mode" >"$WORK/log/$mode.fail"
  echo "$mode: smoke build failed: $(cat "$WORK/log/$mode.fail")" >&2
  return 1
}
# A store seeded with the base, for kiln in MODE at host path STORE (echoes the command).
seed_cmd() {
  local mode=$1 store=$2
  case $mode in
  root) echo "$kiln --root $store import $WORK/in/busybox.tar $BASE >/dev/null" ;;
  rootless) echo "$AS_USER $kiln --root $store import $WORK/in/busybox.tar $BASE >/dev/null" ;;
  chroot) echo "mkdir -p $store && $DOCKER run --rm --network none -v $WORK/in:/in:ro -v $store:/store $IMG kiln --root /store import /in/busybox.tar $BASE >/dev/null" ;;
  esac
}
# kiln build in MODE with store STORE of context CTX (a directory name under ctx/), EXTRA flags.
kbuild_cmd() {
  local mode=$1 store=$2 ctx=$3 extra=$4
  case $mode in
  root) echo "$kiln --root $store build --network none $extra -t $PREFIX/$ctx:1 $WORK/ctx/$ctx" ;;
  rootless) echo "$AS_USER $kiln --root $store build --network none $extra -t $PREFIX/$ctx:1 $WORK/ctx/$ctx" ;;
  # The container has no network: RUN steps share it (--network host), no namespace to make.
  chroot) echo "$DOCKER run --rm --network none -v $WORK/ctx:/ctx:ro -v $store:/store $IMG kiln --root /store build --network host $extra -t $PREFIX/$ctx:1 /ctx/$ctx" ;;
  esac
}
# A directory for a store of MODE: owned by the user for rootless.
store_dir() {
  local mode=$1 name=$2
  case $mode in
  root) echo "$WORK/root/$name" ;;
  rootless) echo "$WORK/user/stores/$name" ;;
  chroot) echo "$WORK/chroot/$name" ;;
  esac
}
# A fresh store each run, the old one moved aside (see build.sh: ext4 without a journal bills the
# next run for freshly deleted inodes).
fresh_cmd() {
  local mode=$1 store=$2
  echo "{ [ ! -e $store ] || mv $store \$(mktemp -d -p $WORK/trash); } && $(seed_cmd "$mode" "$store") && sync"
}

meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta kiln "$desc"
meta user "$BENCH_USER (uid $uid, subuid $(grep "^$BENCH_USER:" /etc/subuid | cut -d: -f2-))"

# --- the docker image for the chroot mode ---------------------------------------------------------
if has "$MODES" chroot; then
  if ! "$DOCKER" info >/dev/null 2>&1; then
    echo "no dockerd answers to $DOCKER" >"$WORK/log/chroot.fail"
  else
    rootfs=$WORK/rootfs
    mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev,ctx,in,store,var/lib,usr/local/bin}
    chmod 1777 "$rootfs/tmp"
    cp "$kiln" "$rootfs/usr/local/bin/kiln"
    for lib in $(ldd "$kiln" | grep -oE '/[^ ]+' | sort -u); do cp -L --parents "$lib" "$rootfs"; done
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    tar -C "$rootfs" -c . | "$DOCKER" import - "$IMG" >/dev/null
    meta docker_version "$("$DOCKER" version --format '{{.Server.Version}}')"
    # What `docker run --rm` itself costs, to read the chroot rows with.
    bench chroot-docker-run "" "$DOCKER run --rm --network none $IMG true"
  fi
fi

# --- kiln: root, rootless, chroot -------------------------------------------------------------------
for mode in root rootless chroot; do
  has "$MODES" "$mode" || continue
  [ ! -e "$WORK/log/$mode.fail" ] || continue
  store=$(store_dir "$mode" smoke)
  [ "$mode" != rootless ] || { mkdir -p "$store" && chown "$uid:$gid" "$store"; }
  smoke "$mode" "$(seed_cmd "$mode" "$store") && $(kbuild_cmd "$mode" "$store" smoke "")" || continue
  grep -m1 -oE 'isolation: *[a-z]+' "$WORK/log/smoke.$mode" >"$WORK/meta/isolation.$mode" || true
  for n in 10 0; do
    store=$(store_dir "$mode" "steps$n")
    [ "$mode" != rootless ] || { mkdir -p "$store" && chown "$uid:$gid" "$store"; }
    bash -c "$(seed_cmd "$mode" "$store")"
    bench "steps$n.$mode" "" "$(kbuild_cmd "$mode" "$store" "steps$n" --no-cache)"
  done
  store=$(store_dir "$mode" mf)
  fresh=$(fresh_cmd "$mode" "$store")
  bench "mf-cold.$mode" "$fresh" "$(kbuild_cmd "$mode" "$store" mf "")"
done

# --- buildah rootless: --isolation chroot (beside kiln's chroot) and oci (rootless runc) ------------
# For each isolation, the first storage driver (overlay, vfs) whose smoke build works. buildah's
# chroot isolation refuses --network none ("cannot set --network other than host"): it gets host.
for isolation in chroot oci; do
  has "$MODES" buildah || break
  mode=buildah-$isolation
  if ! command -v buildah >/dev/null; then
    echo "buildah is not installed" >"$WORK/log/$mode.fail"
    continue
  fi
  meta buildah_version "$(buildah --version | awk '{print $3}')"
  network=none
  [ "$isolation" != chroot ] || network=host
  B=
  for driver in overlay vfs; do
    cand="$AS_USER buildah --root $UHOME/buildah/$driver/root --runroot $URUN/buildah-$driver --storage-driver $driver"
    if ! $cand images -q "$BASE" 2>/dev/null | grep -q .; then
      setup="c=\$($cand from scratch) && $cand add \$c $WORK/in/busybox.tar / && $cand commit --rm \$c $BASE"
      if ! bash -c "$setup" >"$WORK/log/buildah-setup.$driver" 2>&1; then
        echo "$driver: $(first_error "$WORK/log/buildah-setup.$driver")" >>"$WORK/log/$mode.tried"
        continue
      fi
    fi
    bud="$cand bud --layers --isolation $isolation --network $network"
    if smoke "$mode-$driver" "$bud -t $PREFIX/smoke:1 $WORK/ctx/smoke"; then
      B=$cand
      BUD=$bud
      meta "config.$mode" "storage driver $driver, --network $network"
      break
    fi
    echo "$driver: $(cat "$WORK/log/$mode-$driver.fail")" >>"$WORK/log/$mode.tried"
  done
  if [ -z "$B" ]; then
    tr '\n' ';' <"$WORK/log/$mode.tried" >"$WORK/log/$mode.fail"
    continue
  fi
  bench "steps10.$mode" "" "$BUD --no-cache -t $PREFIX/steps10:1 $WORK/ctx/steps10"
  bench "steps0.$mode" "" "$BUD --no-cache -t $PREFIX/steps0:1 $WORK/ctx/steps0"
  bench "mf-cold.$mode" "$B rmi -f $PREFIX/mf:1 >/dev/null 2>&1; $B rmi --prune >/dev/null 2>&1; sync" \
    "$BUD --no-cache -t $PREFIX/mf:1 $WORK/ctx/mf"
done

# --- BuildKit rootless (rootless dockerd through rootlesskit) --------------------------------------
if has "$MODES" buildkit; then
  if ! command -v rootlesskit >/dev/null; then
    echo "not run: rootlesskit is not installed (Debian package rootlesskit); BuildKit rootless here is docker.io's dockerd-rootless.sh, which needs it" >"$WORK/log/buildkit.fail"
  elif [ ! -x /usr/share/docker.io/contrib/dockerd-rootless.sh ]; then
    echo "not run: no dockerd-rootless.sh (docker.io's contrib)" >"$WORK/log/buildkit.fail"
  else
    $AS_USER dockerd-rootless.sh --data-root "$UHOME/docker" --iptables=false --bridge=none \
      >"$WORK/log/dockerd-rootless.log" 2>&1 &
    rootless_dockerd_pid=$!
    DR="$AS_USER DOCKER_HOST=unix://$URUN/docker.sock DOCKER_BUILDKIT=1 $DOCKER"
    for _ in $(seq 60); do $DR info >/dev/null 2>&1 && break; sleep 0.5; done
    if ! $DR info >/dev/null 2>&1; then
      echo "rootless dockerd did not start: $(first_error "$WORK/log/dockerd-rootless.log")" >"$WORK/log/buildkit.fail"
    elif $DR import "$WORK/in/busybox.tar" "$BASE" >/dev/null 2>"$WORK/log/buildkit-import" &&
      smoke buildkit "$DR build --network none -t $PREFIX/smoke:1 $WORK/ctx/smoke"; then
      bench steps10.buildkit "" "$DR build --network none --no-cache -t $PREFIX/steps10:1 $WORK/ctx/steps10"
      bench steps0.buildkit "" "$DR build --network none --no-cache -t $PREFIX/steps0:1 $WORK/ctx/steps0"
      bench mf-cold.buildkit "$DR rmi -f $PREFIX/mf:1 >/dev/null 2>&1; $DR builder prune -af >/dev/null 2>&1; sync" \
        "$DR build --network none --no-cache -t $PREFIX/mf:1 $WORK/ctx/mf"
    else
      [ -e "$WORK/log/buildkit.fail" ] || first_error "$WORK/log/buildkit-import" >"$WORK/log/buildkit.fail"
    fi
  fi
fi

meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
meta machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $fstype under \`$WORK\`"

python3 - "$WORK" "$RUNS" "$FILES" "$MODES" >"$WORK/section.md" <<'PY'
import json, os, statistics, sys
work, runs, files, modes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return None
meta = lambda k: read(f"{work}/meta/{k}") or "?"
def median(key):
    text = read(f"{work}/json/{key}.json")
    return statistics.median(json.loads(text)["results"][0]["times"]) if text else None
def failed(mode, key=None):
    for name in ([key] if key else []) + [mode]:
        text = read(f"{work}/log/{name}.fail")
        if text:
            return text.replace("|", "\\|").replace("\n", "; ")[:300]
    return None
how = {
    "root": "kiln as root (namespaces, overlay)",
    "rootless": f"kiln as {meta('user')}",
    "chroot": "kiln as root in `docker run` (default caps and seccomp)",
    "buildah-chroot": f"`buildah bud --layers --isolation chroot` as the same user ({meta('config.buildah-chroot')})",
    "buildah-oci": f"`buildah bud --layers --isolation oci` (rootless runc) as the same user ({meta('config.buildah-oci')})",
    "buildkit": "BuildKit rootless (dockerd-rootless.sh as the user)",
}
base = {k: median(f"{k}.root") for k in ("steps10", "steps0", "mf-cold")}
notes = []
def cell(mode, key):
    m = median(f"{key}.{mode}")
    if m is None:
        why = failed(mode, f"{key}.{mode}")
        if why and why.startswith("not run"):
            return "not run"
        note = f"**{mode}** failed: {why or 'no result'}"
        if note not in notes:
            notes.append(note)
        return "failed"
    text = f"{m:.2f} s"
    if mode != "root" and base.get(key):
        text += f" ({m / base[key]:.2f}×)"
    return text
def per_run(mode):
    a, b = median(f"steps10.{mode}"), median(f"steps0.{mode}")
    if a is None or b is None:
        return "–"
    return f"{(a - b) / 10 * 1000:.0f} ms"
print("<!-- isolation:begin -->")
print("## isolation: the cost of rootless and unprivileged-container builds (issue 13)\n")
print(f"{meta('date')}, {meta('machine')}. kiln: {meta('kiln')}. Medians of {runs} hyperfine runs after one warm-up.")
print(f"Load average before: {meta('load_before')}; after: {meta('load_after')} (the machine is shared: above ~0.5 other work competed).\n")
print(f"Scenarios as in `benches/build.sh`: **many-steps** ten `RUN echo N > /fN` with `--no-cache` (and the same")
print(f"Dockerfile without them: per-RUN cost = difference / 10), **many-files cold** {files:,} files in 100 dirs")
print(f"({int(meta('context_bytes')) / 1e6 if meta('context_bytes') != '?' else 0:.0f} MB), `COPY src` + `RUN find`, a fresh store each run. (×) = ratio to root kiln.\n")
print("| mode | how | many-steps (10 RUN) | FROM only | per RUN | many-files cold |")
print("|---|---|---|---|---|---|")
for mode in ["root", "rootless", "chroot", "buildah-chroot", "buildah-oci", "buildkit"]:
    if mode.split("-")[0] not in modes:
        continue
    iso = read(f"{work}/meta/isolation.{mode}")
    label = how[mode] + (f"; progress says `{iso}`" if iso else "")
    print(f"| {mode} | {label} | {cell(mode, 'steps10')} | {cell(mode, 'steps0')} | {per_run(mode)} | {cell(mode, 'mf-cold')} |")
for note in notes:
    print(f"\n{note}")
bk = failed("buildkit")
if bk and bk.startswith("not run"):
    print(f"\n**buildkit** {bk}.")
dr = median("chroot-docker-run")
if dr is not None:
    print(f"\nThe chroot rows include `docker run --rm` of the kiln image itself: {dr:.2f} s for `true` (docker {meta('docker_version')}).")
for mode in ["buildah-chroot", "buildah-oci"]:
    tried = read(f"{work}/log/{mode}.tried")
    if tried and median(f"steps10.{mode}") is not None:
        print(f"\n{mode}: storage drivers that failed before the one measured: " + tried.replace("\n", "; ").replace("|", "\\|"))
print("\nReproduce: `sudo benches/isolation.sh` (env RUNS, FILES, MODES, BENCH_USER, WORK, KILN).")
print("<!-- isolation:end -->")
PY
python3 benches/write_section.py isolation "$results" "$(cat "$WORK/section.md")"
cat "$WORK/section.md"
