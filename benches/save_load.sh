#!/usr/bin/env bash
# save/load benchmark: a 1 GiB image of four 256 MiB layers of random data, `kiln save -o` and
# `kiln load -i` into fresh stores timed with hyperfine, peak RSS from /usr/bin/time -v, and
# `docker save`/`docker load` of the same image side by side when a docker daemon answers.
# Writes the "save/load" section of benches/RESULTS.md.
#
# usage: benches/save_load.sh            (from the repository root)
# env:   WORK=/tmp/kiln-bench-save-load  scratch directory (needs ~4 GiB free)
#        LAYERS=4 LAYER_MIB=256 RUNS=10  image shape and hyperfine runs
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WORK=${WORK:-/tmp/kiln-bench-save-load}
LAYERS=${LAYERS:-4}
LAYER_MIB=${LAYER_MIB:-256}
RUNS=${RUNS:-10}
TAG=bench/big:1
DOCKER=/usr/bin/docker
results=$repo/benches/RESULTS.md

cargo build --release --quiet
kiln=$repo/target/release/kiln
rm -rf "$WORK"
mkdir -p "$WORK"
store=$WORK/store

echo "== making a $LAYERS x $LAYER_MIB MiB image archive" >&2
# Load the generated archive with kiln when `kiln load` works; otherwise seed the store directly
# (the generator knows the store layout) so that save can still be measured.
python3 benches/make_image_archive.py "$WORK/input.tar" --layers "$LAYERS" --layer-mib "$LAYER_MIB" \
  --tag "$TAG" >"$WORK/image-id"
image_id=$(cat "$WORK/image-id")
if "$kiln" --root "$store" load -i "$WORK/input.tar" >"$WORK/load.log" 2>&1; then
  seeded_by="kiln load"
  have_load=1
else
  echo "kiln load failed ($(tail -1 "$WORK/load.log")); seeding the store directly" >&2
  rm -rf "$store"
  python3 benches/make_image_archive.py "$WORK/input.tar" --layers "$LAYERS" --layer-mib "$LAYER_MIB" \
    --tag "$TAG" --seed-store "$store" >"$WORK/image-id"
  image_id=$(cat "$WORK/image-id")
  seeded_by="direct store seeding (kiln load unavailable)"
  have_load=0
fi
"$kiln" --root "$store" save -o "$WORK/kiln.tar" "$TAG"
archive_bytes=$(stat -c %s "$WORK/kiln.tar")

# Median of a hyperfine JSON export, in seconds.
median() { python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$1"; }
# Mean CPU time (user + system) of a hyperfine JSON export, in seconds: unlike wall time, other
# work on the machine does not inflate it.
cpu() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.3f" % (r["user"] + r["system"]))' "$1"; }
# Peak RSS (MiB) of one run of a command, from GNU time's "Maximum resident set size" (KiB).
peak_rss() {
  /usr/bin/time -v "$@" 2>"$WORK/time.log" >/dev/null
  awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$WORK/time.log"
}

hf() { hyperfine --style basic --warmup 1 --runs "$RUNS" "$@"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== kiln save" >&2
save_cmd="$kiln --root $store save -o $WORK/out.tar $TAG"
# Untimed before each run: remove the previous output and flush dirty pages, so every run starts
# from the same state instead of paying for the last run's writeback.
hf --prepare "rm -f $WORK/out.tar; sync" --export-json "$WORK/kiln-save.json" "$save_cmd" >&2
kiln_save=$(median "$WORK/kiln-save.json")
kiln_save_cpu=$(cpu "$WORK/kiln-save.json")
kiln_save_rss=$(peak_rss $save_cmd)
pipe_cmd="$kiln --root $store save $TAG | cat >/dev/null"
hf --export-json "$WORK/kiln-save-pipe.json" "$pipe_cmd" >&2
kiln_save_pipe=$(median "$WORK/kiln-save-pipe.json")
kiln_save_pipe_cpu=$(cpu "$WORK/kiln-save-pipe.json")

kiln_load=n/a
kiln_load_cpu=n/a
kiln_load_rss=n/a
if [ "$have_load" = 1 ]; then
  echo "== kiln load" >&2
  load_cmd="$kiln --root $WORK/fresh load -i $WORK/kiln.tar"
  hf --prepare "rm -rf $WORK/fresh; sync" --export-json "$WORK/kiln-load.json" "$load_cmd" >&2
  kiln_load=$(median "$WORK/kiln-load.json")
  kiln_load_cpu=$(cpu "$WORK/kiln-load.json")
  rm -rf "$WORK/fresh"
  kiln_load_rss=$(peak_rss $load_cmd)
fi

docker_save=n/a
docker_load=n/a
docker_note="no docker daemon answered \`$DOCKER info\`"
if "$DOCKER" info >/dev/null 2>&1; then
  echo "== docker save/load" >&2
  docker_version=$("$DOCKER" version --format '{{.Server.Version}}')
  "$DOCKER" load -i "$WORK/kiln.tar" >/dev/null
  hf --prepare "rm -f $WORK/docker.tar; sync" --export-json "$WORK/docker-save.json" \
    "$DOCKER save -o $WORK/docker.tar $TAG" >&2
  docker_save=$(median "$WORK/docker-save.json")
  hf --prepare "$DOCKER rmi -f $TAG >/dev/null 2>&1 || true; sync" --export-json "$WORK/docker-load.json" \
    "$DOCKER load -i $WORK/kiln.tar" >&2
  docker_load=$(median "$WORK/docker-load.json")
  "$DOCKER" rmi -f "$TAG" >/dev/null 2>&1 || true
  docker_note="dockerd $docker_version (overlay2) on the same machine"
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
section=$(
  cat <<EOF
<!-- save_load:begin -->
## save / load of a 1 GiB image

$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r),
$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $(df -T "$WORK" | awk 'NR==2 {print $2}') under \`$WORK\`. Release build.
Image: $LAYERS layers × $LAYER_MIB MiB of random data (image ID \`$image_id\`), put in the store by $seeded_by;
archive $archive_bytes bytes. Blobs are in the page cache (warm runs). Medians of $RUNS hyperfine runs after 1 warm-up;
before each timed run the previous output is removed and \`sync\` run (untimed). Peak RSS is GNU time's
"Maximum resident set size" of one run. Load average (1/5/15 min) when the timings began: $load_before; at the end:
$load_after (the machine is shared; anything above ~0.5 means other work competed for the 2 cores).

| operation | kiln (wall, median) | kiln CPU (user+sys, mean) | docker (wall, median) | kiln peak RSS |
|---|---|---|---|---|
| save -o FILE | ${kiln_save} s | ${kiln_save_cpu} s | ${docker_save} s | ${kiln_save_rss} MiB |
| save to a pipe (\`\| cat >/dev/null\`) | ${kiln_save_pipe} s | ${kiln_save_pipe_cpu} s (with cat) | | |
| load -i FILE (fresh store) | ${kiln_load} s | ${kiln_load_cpu} s | ${docker_load} s | ${kiln_load_rss} MiB |

docker: $docker_note.

What is measured: \`kiln save\` hashes every layer against its diffID (sha256 with SHA-NI, one thread per core, in
archive order) while copying already-verified layers into the output with \`copy_file_range\`, so hashing and
copying overlap; the output is a temp file renamed into place. To a pipe it verifies everything first, then
\`sendfile\`/\`splice\`. \`docker save\` re-tars each layer from its overlay2 diff directory; \`docker load\` untars the
outer archive to a temp dir, then unpacks every layer.

Reproduce: \`benches/save_load.sh\` (env WORK, LAYERS, LAYER_MIB, RUNS). It runs, for example,
\`$save_cmd\`.
<!-- save_load:end -->
EOF
)

python3 benches/write_section.py save_load "$results" "$section"
echo "$section"
