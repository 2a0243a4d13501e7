#!/usr/bin/env bash
# Real-project benchmarks (issue 14): kiln beside BuildKit (`docker build`, dockerd from Debian's
# docker.io) and `buildah bud --layers`, in one run, on the same Debian bookworm minbase base:
#   c             apt-get install gcc libc6-dev, a static C binary copied into FROM scratch
#   python        apt python3 + pip, `pip install -r requirements.txt` from PyPI, app copied last
#   python-cache  the same with RUN --mount=type=cache,target=/root/.cache/pip
#   node          apt nodejs + npm, `npm ci` from a package-lock.json, source copied after
# each cold (--no-cache), after a one-line source change, and no-op. The Dockerfiles
# (benches/real_projects/) print each RUN command's own time, so the fetch/install time is
# reported apart from the builder's own share. Checks that the images run. Writes the
# "real-projects" section of benches/RESULTS.md (benches/real_projects.py).
#
# usage: benches/real_projects.sh        (as root: RUN needs namespaces and mounts; needs the Debian
#                                         mirror, PyPI and the npm registry reachable)
# env:   PROJECTS="c python node"        python runs both python and python-cache; name
#                                        python-cache alone to run only that one
#        TOOLS="kiln buildkit buildah"   leave one out to skip it
#        COLD_RUNS=2 RUNS=3              runs per cold build / per rebuild (no warm-up runs)
#        WORK=/var/tmp/kiln-bench-real   scratch directory, on the disk docker uses (~15 GiB)
#        BASE_TAR=…                      the Debian rootfs tar; default: the one tests/cli caches in
#                                        /tmp/kiln-test-cache, else made here with debootstrap
#        KEEP=0                          1 keeps WORK, the docker images and buildah's storage
#        RESULTS=benches/RESULTS.md      where the section is written
#        KILN=path/to/kiln KILN_DESC=…   measure this binary instead of building the working tree
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WORK=${WORK:-/var/tmp/kiln-bench-real}
PROJECTS=${PROJECTS:-c python node}
TOOLS=${TOOLS:-kiln buildkit buildah}
COLD_RUNS=${COLD_RUNS:-2}
RUNS=${RUNS:-3}
KEEP=${KEEP:-0}
DOCKER=/usr/bin/docker
BASE=kiln-bench-real/debian:bookworm # the same name in all three tools (the Dockerfiles name it)
PREFIX=kiln-bench-real               # every image this script tags starts with it
results=${RESULTS:-$repo/benches/RESULTS.md}
script_start=$(date +%s)

has() { [[ " $1 " == *" $2 "* ]]; }
note() { echo "== $*" >&2; }
meta() { printf '%s' "$2" >"$WORK/meta/$1"; }

scenarios=
for p in $PROJECTS; do
  case $p in
  c | node | python-cache) scenarios+=" $p" ;;
  python) scenarios+=" python python-cache" ;;
  *) echo "PROJECTS: unknown project '$p' (c, python, python-cache, node)" >&2; exit 2 ;;
  esac
done
for t in $TOOLS; do
  case $t in kiln | buildkit | buildah) ;; *) echo "TOOLS: unknown tool '$t' (kiln, buildkit, buildah)" >&2; exit 2 ;; esac
done

if [ -n "${KILN:-}" ]; then
  kiln=$KILN
else
  cargo build --release --quiet
  kiln=$repo/target/release/kiln
fi

# --- scratch space -------------------------------------------------------------------------------
B="buildah --root $WORK/buildah/root --runroot $WORK/buildah/run"
unmount_under() { findmnt -rn -o TARGET | { grep "^$1/" || true; } | sort -r | xargs -r -n1 umount -l; }
buildah_clean() {
  [ -d "$WORK/buildah" ] || return 0
  for d in overlay vfs; do
    $B --storage-driver $d rm -a >/dev/null 2>&1 || true
    $B --storage-driver $d rmi -a -f >/dev/null 2>&1 || true
  done
}
docker_clean() {
  "$DOCKER" info >/dev/null 2>&1 || return 0
  "$DOCKER" images --format '{{.Repository}}:{{.Tag}}' | grep "^$PREFIX/" | xargs -r "$DOCKER" rmi -f >/dev/null 2>&1 || true
}
if [ -d "$WORK" ]; then
  buildah_clean
  unmount_under "$WORK"
  rm -rf "$WORK"
fi
mkdir -p "$WORK"/{json,meta,log,ctx,kiln}
fstype=$(df -T "$WORK" | awk 'NR==2 {print $2}')
[ "$fstype" = tmpfs ] && { echo "WORK=$WORK is on tmpfs; pick a directory on the disk docker uses" >&2; exit 1; }
cleanup() {
  if [ "$KEEP" != 1 ]; then
    has "$TOOLS" buildkit && docker_clean
    buildah_clean
    unmount_under "$WORK"
    rm -rf "$WORK"/{kiln,buildah,ctx}
  fi
}
trap cleanup EXIT

# --- the base: debootstrap --variant=minbase bookworm ----------------------------------------------
base_tar=${BASE_TAR:-/tmp/kiln-test-cache/debian-bookworm-minbase-root0700.tar}
if [ ! -s "$base_tar" ]; then
  base_tar=$WORK/debian-bookworm-minbase.tar
  mirror=$(grep -hoE 'http://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | tr -d ' ')
  note "making the Debian base with debootstrap (${mirror:-http://deb.debian.org/debian})"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$WORK/log/debootstrap.log" 2>&1
  tar -C "$WORK/rootfs" -cf "$base_tar" .
  rm -rf "$WORK/rootfs"
fi
meta base_bytes "$(stat -c %s "$base_tar")"

# --- the contexts: the project files, the host's CA bundle ----------------------------------------
for s in $scenarios; do
  src=${s%-cache}
  mkdir -p "$WORK/ctx/$s"
  cp -r "benches/real_projects/$src/." "$WORK/ctx/$s/"
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/ctx/$s/host-ca.crt"
  if [ "$s" = python-cache ]; then mv "$WORK/ctx/$s/Dockerfile.cache" "$WORK/ctx/$s/Dockerfile"; else rm -f "$WORK/ctx/$s/Dockerfile.cache"; fi
done
# the file a "one-line change" edits, and what the image then prints
srcfile() { case $1 in c) echo hello.c ;; python*) echo app.py ;; node) echo index.js ;; esac; }
expect() { case $1 in c) echo "hello from static C, $2" ;; python*) echo "hello from flask, $2" ;; node) echo "hello from express, $2" ;; esac; }

# --- the tools -------------------------------------------------------------------------------------
tag() { echo "$PREFIX/$1:1"; }
declare -A build rmimg runimg
if has "$TOOLS" kiln; then
  for s in $scenarios; do
    st=$WORK/kiln/$s
    "$kiln" --root "$st" import "$base_tar" "$BASE" >/dev/null
    build[$s.kiln]="$kiln --root $st build --network host --progress rawjson -t $(tag "$s")"
    rmimg[$s.kiln]="$kiln --root $st rmi $(tag "$s") >/dev/null 2>&1 || true"
    runimg[$s.kiln]="$kiln --root $st run --rm --network none $(tag "$s")"
  done
  meta kiln_version "$("$kiln" --version | awk '{print $2}') (${KILN_DESC:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches' || echo ', with uncommitted changes')})"
fi
if has "$TOOLS" buildkit; then
  "$DOCKER" info >/dev/null 2>&1 || { echo "no dockerd answers; start one or leave buildkit out of TOOLS" >&2; exit 1; }
  "$DOCKER" import "$base_tar" "$BASE" >/dev/null
  for s in $scenarios; do
    build[$s.buildkit]="DOCKER_BUILDKIT=1 $DOCKER build --network host --progress plain -t $(tag "$s")"
    rmimg[$s.buildkit]="$DOCKER rmi -f $(tag "$s") >/dev/null 2>&1 || true"
    runimg[$s.buildkit]="$DOCKER run --rm --network none $(tag "$s")"
  done
  meta docker_version "$("$DOCKER" version --format '{{.Server.Version}}')"
  meta docker_driver "storage driver $("$DOCKER" info --format '{{.Driver}}')"
fi
if has "$TOOLS" buildah; then
  # the first configuration whose smoke build (FROM base + RUN) works, in this order
  mkdir -p "$WORK/ctx/smoke"
  printf 'FROM %s\nRUN echo ok > /ok\n' "$BASE" >"$WORK/ctx/smoke/Dockerfile"
  BUD=
  for config in overlay:oci vfs:oci overlay:chroot vfs:chroot; do
    driver=${config%%:*}
    isolation=${config##*:}
    BD="$B --storage-driver $driver"
    if ! $BD images -q "$BASE" 2>/dev/null | grep -q .; then
      c=$($BD from scratch 2>>"$WORK/log/buildah-setup.log") &&
        $BD add "$c" "$base_tar" / >>"$WORK/log/buildah-setup.log" 2>&1 &&
        $BD commit --rm "$c" "$BASE" >>"$WORK/log/buildah-setup.log" 2>&1 || continue
    fi
    BUD="$BD bud --layers --runtime /usr/sbin/runc --network host --isolation $isolation"
    if $BUD -t "$PREFIX/smoke:1" "$WORK/ctx/smoke" >>"$WORK/log/buildah-setup.log" 2>&1; then
      note "buildah: storage driver $driver, isolation $isolation"
      meta buildah_config "storage driver $driver, isolation $isolation"
      break
    fi
    echo "buildah $config failed: $(tail -1 "$WORK/log/buildah-setup.log")" >&2
    BUD=
  done
  if [ -z "$BUD" ]; then
    for s in $scenarios; do meta "skip.$s.buildah" "no buildah configuration could run a RUN step: $(tail -1 "$WORK/log/buildah-setup.log")"; done
    TOOLS=${TOOLS//buildah/}
  else
    for s in $scenarios; do
      build[$s.buildah]="$BUD -t $(tag "$s")"
      rmimg[$s.buildah]="$BD rmi -f $(tag "$s") >/dev/null 2>&1 || true; $BD rmi --prune >/dev/null 2>&1 || true"
      # (not `podman run`: it sets RLIMIT_NOFILE/NPROC above this machine's hard limits and runc fails)
      runimg[$s.buildah]="c=\$($BD from $(tag "$s")) && $BD run --runtime /usr/sbin/runc --network none \$c -- \$($BD inspect --type image --format '{{range .OCIv1.Config.Cmd}}{{.}} {{end}}' $(tag "$s")); $BD rm \$c >/dev/null"
    done
    meta buildah_version "$(buildah --version | awk '{print $3}')"
  fi
fi

# --- measuring -------------------------------------------------------------------------------------
# measure KEY N PREPARE COMMAND: N runs of COMMAND, PREPARE before each (untimed)
measure() {
  local key=$1 n=$2 prepare=$3 cmd=$4 i
  note "$key: $cmd"
  printf '%s\n' "$cmd" >"$WORK/meta/cmd.$key"
  [ -z "$prepare" ] || printf '%s\n' "$prepare" >"$WORK/meta/prepare.$key"
  for i in $(seq "$n"); do
    [ -z "$prepare" ] || bash -c "$prepare" >/dev/null 2>&1 || true
    python3 benches/real_projects.py measure "$WORK" "$key" "$i" "$cmd" || true
  done
}
edit() { # edit SCENARIO VALUE: the one-line change
  local f
  f=$WORK/ctx/$1/$(srcfile "$1")
  sed -i "s/\"edit-[0-9a-z]*\"/\"$2\"/" "$f"
}

meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta runs_cold "$COLD_RUNS"
meta runs_change "$RUNS"
meta runs_noop "$RUNS"

for s in $scenarios; do
  ctx=$WORK/ctx/$s
  checks=
  for t in kiln buildkit buildah; do
    has "$TOOLS" "$t" || continue
    b=${build[$s.$t]}
    edit "$s" edit-0
    if [ "$s" = python-cache ]; then
      # fill the pip cache mount once (untimed): the cold rows then show what the mount saves
      bash -c "$b --no-cache $ctx" >"$WORK/log/$s.$t.fill.log" 2>&1 || true
    fi
    measure "$s.cold.$t" "$COLD_RUNS" "${rmimg[$s.$t]}; sync" "$b --no-cache $ctx"
    # the rebuilds: an untimed build fills the cache, then change / no-op
    bash -c "$b $ctx" >"$WORK/log/$s.$t.prime.log" 2>&1 || true
    measure "$s.change.$t" "$RUNS" "sed -i 's/\"edit-[0-9a-z]*\"/\"edit-'\$(date +%s%N)'\"/' $ctx/$(srcfile "$s"); sync" "$b $ctx"
    measure "$s.noop.$t" "$RUNS" "" "$b $ctx"
    # does the image run and print the source's current value?
    want=$(expect "$s" "$(grep -o 'edit-[0-9a-z]*' "$ctx/$(srcfile "$s")" | head -1)")
    got=$(timeout 120 bash -c "${runimg[$s.$t]}" 2>&1 | head -3 || true)
    if [[ $got == *"$want"* ]]; then
      checks+="${checks:+; }$t image runs: \`$(echo "$got" | head -1)\`"
    else
      checks+="${checks:+; }**$t image does not print \`$want\`**: \`$(echo "$got" | head -2 | tr '\n' ' ')\`"
      echo "$s.$t: the image does not print '$want': $got" >&2
    fi
  done
  meta "check.$s" "$checks"
  mb() { sort -n | tail -1 | awk '$1 > 0 {printf "%.0f MB", $1 / 1e6}'; } # the largest of byte counts
  # the biggest layer of the apt stage (kiln's and BuildKit's view), from an untimed cached build of it
  sizes=
  if has "$TOOLS" kiln; then
    st=$WORK/kiln/$s
    "$kiln" --root "$st" build --network host -q --target build -t "$PREFIX/$s-stage:1" "$ctx" >/dev/null 2>&1 ||
      "$kiln" --root "$st" build --network host -q -t "$PREFIX/$s-stage:1" "$ctx" >/dev/null 2>&1 || true
    v=$("$kiln" --root "$st" history -H=false --format '{{.Size}}' "$PREFIX/$s-stage:1" 2>/dev/null | mb || true)
    [ -z "$v" ] || sizes+="kiln $v"
  fi
  if has "$TOOLS" buildkit; then
    t=$(tag "$s-stage")
    DOCKER_BUILDKIT=1 $DOCKER build --network host -q --target build -t "$t" "$ctx" >/dev/null 2>&1 ||
      DOCKER_BUILDKIT=1 $DOCKER build --network host -q -t "$t" "$ctx" >/dev/null 2>&1 || true
    v=$("$DOCKER" history --human=false --format '{{.Size}}' "$t" 2>/dev/null | mb || true)
    [ -z "$v" ] || sizes+="${sizes:+, }BuildKit $v"
  fi
  meta "layer.$s" "$sizes"
done

meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
meta elapsed "$(($(date +%s) - script_start))"
meta machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $fstype under \`$WORK\`"
python3 benches/real_projects.py report "$WORK" "$results"
