#!/usr/bin/env bash
# Air-gapped transfer of a release (issue 15): bytes carried and time for v1 → v2 with
# `kiln save --since app:v1` beside `docker save app:v2` (what docker users carry today), and the
# far side's load of each. The releases: a Debian minbase base, then v1 = base + 100 MiB of
# vendored dependencies + a 20 MiB application, then v2 = the same dependencies + a new 20 MiB
# application. Both tools build the same Dockerfiles from the same base tar. Medians of hyperfine
# runs. Writes the "transfer" section of benches/RESULTS.md. Needs root, debootstrap (or
# BASE_TAR) and, for the docker rows, dockerd (Debian's docker.io) running.
#
# usage: benches/transfer.sh     env: WORK=/var/tmp/kiln-bench-transfer RUNS=5 BASE_TAR=…
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WORK=${WORK:-/var/tmp/kiln-bench-transfer}
RUNS=${RUNS:-5}
DOCKER=/usr/bin/docker
BASE_TAR=${BASE_TAR:-/tmp/kiln-test-cache/debian-bookworm-minbase-root0700.tar}
docker_up=1
"$DOCKER" info >/dev/null 2>&1 || { docker_up=0; echo "transfer: dockerd is not running; docker rows skipped" >&2; }
cargo build --release --quiet
kiln=$repo/target/release/kiln
rm -rf "$WORK" && mkdir -p "$WORK/ctx"
if [ ! -f "$BASE_TAR" ]; then
  BASE_TAR=$WORK/base.tar
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$WORK/rootfs" -cf "$BASE_TAR" .
  rm -rf "$WORK/rootfs"
fi
near="$kiln --root $WORK/near"
$near import "$BASE_TAR" kiln-bench-transfer/base:1 >/dev/null
head -c $((100 << 20)) /dev/urandom >"$WORK/ctx/deps.bin"
head -c $((20 << 20)) /dev/urandom >"$WORK/ctx/app-v1.bin"
head -c $((20 << 20)) /dev/urandom >"$WORK/ctx/app-v2.bin"
for v in 1 2; do
  printf 'FROM kiln-bench-transfer/base:1\nCOPY deps.bin /opt/deps.bin\nCOPY app-v%s.bin /opt/app.bin\n' "$v" \
    >"$WORK/ctx/v$v.Dockerfile"
  $near build -q -f "$WORK/ctx/v$v.Dockerfile" -t "kiln-bench-transfer/app:v$v" "$WORK/ctx" >/dev/null
done
# The far side after release 1: a store holding base and v1, made by carrying them over.
$near save -o "$WORK/v1-full.tar" kiln-bench-transfer/app:v1
$kiln --root "$WORK/far-v1" load -i "$WORK/v1-full.tar" >/dev/null
if [ "$docker_up" = 1 ]; then
  "$DOCKER" import "$BASE_TAR" kiln-bench-transfer/base:1 >/dev/null
  for v in 1 2; do
    DOCKER_BUILDKIT=1 "$DOCKER" build -q -f "$WORK/ctx/v$v.Dockerfile" -t "kiln-bench-transfer/app:v$v" "$WORK/ctx" >/dev/null
  done
fi

delta_cmd="$near save --since kiln-bench-transfer/app:v1 -o $WORK/v2-delta.tar kiln-bench-transfer/app:v2"
delta_zstd_cmd="$near save --since kiln-bench-transfer/app:v1 --compress zstd --checksum -o $WORK/v2-delta.tar.zst kiln-bench-transfer/app:v2"
full_cmd="$near save -o $WORK/v2-full.tar kiln-bench-transfer/app:v2"
docker_save_cmd="$DOCKER save -o $WORK/v2-docker.tar kiln-bench-transfer/app:v2"
fresh_far="rm -rf $WORK/far && cp -a $WORK/far-v1 $WORK/far"
load_delta_cmd="$kiln --root $WORK/far load -q -i $WORK/v2-delta.tar"
docker_load_cmd="$DOCKER load -q -i $WORK/v2-docker.tar"
# Make each output once so the load rows have their input.
eval "$delta_cmd" 2>/dev/null
eval "$delta_zstd_cmd" 2>/dev/null
eval "$full_cmd"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
args=(-n "kiln save --since v1" -p "rm -f $WORK/v2-delta.tar" "$delta_cmd"
  -n "kiln save --since v1 --compress zstd --checksum" -p "rm -f $WORK/v2-delta.tar.zst*" "$delta_zstd_cmd"
  -n "kiln save (full)" -p "rm -f $WORK/v2-full.tar" "$full_cmd"
  -n "kiln load of the delta (far store holds v1)" -p "$fresh_far" "$load_delta_cmd")
if [ "$docker_up" = 1 ]; then
  args+=(-n "docker save" -p "rm -f $WORK/v2-docker.tar" "$docker_save_cmd")
fi
hyperfine --style basic --runs "$RUNS" --export-json "$WORK/hf.json" "${args[@]}" >&2
if [ "$docker_up" = 1 ]; then
  # docker load of v2 where docker holds v1 (the far side's position); it reads the whole tar.
  hyperfine --style basic --runs "$RUNS" --export-json "$WORK/hf-docker-load.json" \
    -n "docker load (docker holds v1)" -p "$DOCKER rmi kiln-bench-transfer/app:v2 >/dev/null 2>&1 || true" \
    "$docker_load_cmd" >&2
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# The far store ends with the near store's image ID.
want=$($near inspect --format '{{.Id}}' kiln-bench-transfer/app:v2)
got=$($kiln --root "$WORK/far" inspect --format '{{.Id}}' kiln-bench-transfer/app:v2)
[ "$want" = "$got" ] || { echo "transfer: far image $got is not $want" >&2; exit 1; }

section=$(python3 - "$WORK" "$docker_up" <<'PY'
import json, os, sys
work, docker_up = sys.argv[1], sys.argv[2] == "1"
runs = {r["command"]: r["median"] for r in json.load(open(f"{work}/hf.json"))["results"]}
if docker_up:
    runs.update({r["command"]: r["median"] for r in json.load(open(f"{work}/hf-docker-load.json"))["results"]})
size = lambda name: os.path.getsize(f"{work}/{name}") if os.path.exists(f"{work}/{name}") else None
rows = [
    ("`kiln save --since app:v1 app:v2`", "v2-delta.tar", "kiln save --since v1"),
    ("`kiln save --since app:v1 --compress zstd --checksum app:v2`", "v2-delta.tar.zst", "kiln save --since v1 --compress zstd --checksum"),
    ("`kiln save app:v2` (full)", "v2-full.tar", "kiln save (full)"),
]
if docker_up:
    rows.append(("`docker save app:v2`", "v2-docker.tar", "docker save"))
ref = size("v2-docker.tar") or size("v2-full.tar")
out = ["| what is carried | bytes | ÷ docker save's bytes | time to write (median) |", "|---|---|---|---|"]
for label, name, key in rows:
    b = size(name)
    out.append(f"| {label} | {b:,} ({b / 2**20:.1f} MiB) | {b / ref:.3f}× | {runs[key]:.2f} s |")
out.append("")
out.append("| far side | time (median) |")
out.append("|---|---|")
out.append(f"| `kiln load -i v2-delta.tar` into a store holding v1 (checks the 2 expected layers' sha256) | {runs['kiln load of the delta (far store holds v1)']:.2f} s |")
if docker_up:
    out.append(f"| `docker load -i v2-docker.tar` into a docker holding v1 | {runs['docker load (docker holds v1)']:.2f} s |")
print("\n".join(out))
PY
)
section=$(cat <<EOF_SECTION
<!-- transfer:begin -->
## transfer: carrying release v2 over an air gap when the far side holds v1

$(date -u '+%Y-%m-%d'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)$( [ "$docker_up" = 1 ] && echo "; dockerd $("$DOCKER" version --format '{{.Server.Version}}')");
load average $load_before at the start, $load_after at the end. Medians of $RUNS hyperfine runs.
Releases: a Debian bookworm minbase base ($(du -m "$BASE_TAR" | cut -f1) MiB tar), v1 = base + 100 MiB of
dependencies + a 20 MiB application, v2 = the same dependencies + a new 20 MiB application.

$section

The delta carries v2's config, manifest and its one new layer; the far store (a copy of one that
loaded v1) ends with the same image ID as the near one (checked by the script). docker has no
delta: \`docker save\` carries every layer of v2 each release.

Reproduce: \`benches/transfer.sh\` (env WORK, RUNS, BASE_TAR).
<!-- transfer:end -->
EOF_SECTION
)
python3 benches/write_section.py transfer benches/RESULTS.md "$section"
echo "$section"
