#!/usr/bin/env bash
# Registry push/pull benchmark (issue 6): the 1 GiB image of save_load.sh (four 256 MiB layers of
# random data) pushed to and pulled from a local registry (Debian's docker-registry, distribution
# 2.8, plain HTTP on 127.0.0.1, filesystem storage in WORK), kiln beside `skopeo copy` of the same
# image in the same hyperfine run. Every timed run is a cold transfer:
#   push, first    the registry is stopped, its storage emptied and it is started again before each
#                  run, and kiln's compressed-layer cache (STORE/compressed and the blobs it names)
#                  is removed, so kiln compresses and uploads every layer; skopeo copies from
#                  `docker-archive:` (the `kiln save` of the image) and compresses every time
#   push, repeat   empty registry again, kiln's compressed layers cached; skopeo copies from a
#                  `dir:` that already holds the compressed blobs (nothing to compress either)
#   pull           the image (as kiln pushed it) into an empty kiln store (fresh --root) and into
#                  an empty skopeo `dir:`
# plus the peak RSS of one run of each. Writes the "registry" section of benches/RESULTS.md.
#
# usage: benches/registry.sh               (from anywhere)
# env:   WORK=/var/tmp/kiln-bench-registry scratch directory (needs ~7 GiB free)
#        LAYERS=4 LAYER_MIB=256 RUNS=5     image shape; hyperfine runs (after 1 warm-up)
#        KEEP=0                            1 keeps WORK
#        RESULTS=benches/RESULTS.md       where the section is written
#        KILN=path/to/kiln KILN_DESC=…     measure this binary instead of building the working tree
#                                          (e.g. one built from a clean `git archive` of a commit
#                                          while others edit the tree); KILN_DESC names its source
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WORK=${WORK:-/var/tmp/kiln-bench-registry}
LAYERS=${LAYERS:-4}
LAYER_MIB=${LAYER_MIB:-256}
RUNS=${RUNS:-5}
KEEP=${KEEP:-0}
REGISTRY_BIN=/usr/bin/docker-registry
results=${RESULTS:-$repo/benches/RESULTS.md}
note() { echo "== $*" >&2; }

missing=
[ -x "$REGISTRY_BIN" ] || missing="$missing docker-registry"
command -v skopeo >/dev/null || missing="$missing skopeo"
command -v hyperfine >/dev/null || missing="$missing hyperfine"
command -v curl >/dev/null || missing="$missing curl"
if [ -n "$missing" ]; then
  echo "skipping the registry benchmark: missing$missing (apt-get install -y docker-registry skopeo hyperfine curl)" >&2
  exit 0
fi

if [ -n "${KILN:-}" ]; then
  kiln=$KILN
else
  cargo build --release --quiet
  kiln=$repo/target/release/kiln
fi
kiln_desc="$("$kiln" --version | awk '{print $2}') (${KILN_DESC:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches' || echo ', with uncommitted changes')})"

# --- the registry --------------------------------------------------------------------------------
# distribution 2.8 cannot listen on port 0 and report it: take a free port and pass it.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REF=127.0.0.1:$port/bench/big:1
ctl=$WORK/registry-ctl

cleanup() {
  [ -x "$ctl" ] && "$ctl" stop || true
  if [ "$KEEP" != 1 ]; then rm -rf "$WORK"; fi
}
rm -rf "$WORK"
mkdir -p "$WORK"/{json,registry}
trap cleanup EXIT

cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF

# `registry-ctl restart` is also every push's untimed --prepare: a registry started afresh on empty
# storage cannot have a blob (no HEAD hit, no cross-repository mount), so every blob is uploaded.
cat >"$ctl" <<EOF
#!/usr/bin/env bash
# Written by benches/registry.sh. usage: registry-ctl stop | restart
# restart: stop the benchmark's registry, empty its storage, start it again, wait until /v2/ answers.
set -euo pipefail
dir=$WORK/registry
port=$port
registry_bin=$REGISTRY_BIN
EOF
cat >>"$ctl" <<'EOF'
stop() {
  [ -s "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  rm -f "$dir/pid"
  # Only our registry (the pid may have been reused; a zombie has no cmdline and is gone anyway).
  grep -qa docker-registry "/proc/$pid/cmdline" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    case $(ps -o stat= -p "$pid" 2>/dev/null || true) in '' | Z*) return 0 ;; esac
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
}
start() {
  rm -rf "$dir/data"
  # Output to a file, not to the caller's stdout/stderr: hyperfine must not wait for it.
  "$registry_bin" serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 400); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "docker-registry did not answer on 127.0.0.1:$port: $(tail -3 "$dir/registry.log")" >&2
  return 1
}
case ${1:-} in
  stop) stop ;;
  restart) stop && start ;;
  *) echo "usage: $0 stop|restart" >&2 && exit 2 ;;
esac
EOF
chmod +x "$ctl"
"$ctl" restart

# --- the image, in kiln's store and as a docker-archive for skopeo --------------------------------
store=$WORK/store
note "making a $LAYERS x $LAYER_MIB MiB image"
python3 benches/make_image_archive.py "$WORK/input.tar" --layers "$LAYERS" --layer-mib "$LAYER_MIB" \
  --tag "$REF" >"$WORK/image-id"
image_id=$(cat "$WORK/image-id")
"$kiln" --root "$store" load -i "$WORK/input.tar" >/dev/null
rm -f "$WORK/input.tar"
"$kiln" --root "$store" save -o "$WORK/img.tar" "$REF"
# One untimed push: checks that push works and fills kiln's compressed-layer cache; then the pushed
# blobs copied to a skopeo `dir:` (already compressed, so skopeo's repeat push compresses nothing).
note "untimed kiln push, and skopeo copy of it to dir:"
"$kiln" --root "$store" push -q "$REF" >/dev/null
skopeo copy -q --src-tls-verify=false "docker://$REF" "dir:$WORK/compressed-dir"

# Sum of the layer sizes in the manifest the registry holds for REF, in bytes.
pushed_bytes() {
  skopeo inspect --raw --tls-verify=false "docker://$REF" |
    python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))'
}
kiln_bytes=$(pushed_bytes)

# --- measurements --------------------------------------------------------------------------------
# Median wall time / mean CPU time (user + system of the client, not the registry) of result $2 of
# a hyperfine JSON export, in seconds.
median() { python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"])' "$1" "$2"; }
cpu() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.2f" % (r["user"] + r["system"]))' "$1" "$2"; }
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
# Peak RSS (MiB) of one run of a command, from GNU time's "Maximum resident set size" (KiB).
peak_rss() {
  /usr/bin/time -v "$@" 2>"$WORK/time.log" >/dev/null
  awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$WORK/time.log"
}
hf() { hyperfine --style basic --warmup 1 --runs "$RUNS" "$@" >&2; }

# name → command and its --prepare, for the report.
declare -A CMD PREP
CMD[kiln-push]="$kiln --root $store push $REF"
# A first push: kiln's compressed-layer cache and the compressed blobs it names are removed, so the
# push compresses and writes every layer again (the store then holds what it held after `kiln load`).
PREP[kiln-push-first]="$ctl restart && for m in $store/compressed/*; do [ -e \$m ] || continue; rm -f $store/blobs/sha256/\$(cut -d: -f2 \$m); done && rm -rf $store/compressed && sync"
PREP[kiln-push-repeat]="$ctl restart && sync"
CMD[skopeo-push-archive]="skopeo copy --dest-tls-verify=false docker-archive:$WORK/img.tar docker://$REF"
CMD[skopeo-push-dir]="skopeo copy --dest-tls-verify=false dir:$WORK/compressed-dir docker://$REF"
PREP[skopeo-push]="$ctl restart && sync"
CMD[kiln-pull]="$kiln --root $WORK/pulled-store pull $REF"
PREP[kiln-pull]="rm -rf $WORK/pulled-store && sync"
CMD[skopeo-pull]="skopeo copy --src-tls-verify=false docker://$REF dir:$WORK/pulled-dir"
PREP[skopeo-pull]="rm -rf $WORK/pulled-dir && sync"

mib=$((LAYERS * LAYER_MIB))
if [ $((mib % 1024)) = 0 ]; then image_size="$((mib / 1024)) GiB"; else image_size="$mib MiB"; fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
note "push, first: kiln compresses (cache removed) vs skopeo from docker-archive:"
hf --export-json "$WORK/json/push-first.json" \
  -n "kiln push (first: compresses)" --prepare "${PREP[kiln-push-first]}" "${CMD[kiln-push]}" \
  -n "skopeo copy docker-archive: → docker://" --prepare "${PREP[skopeo-push]}" "${CMD[skopeo-push-archive]}"
skopeo_bytes=$(pushed_bytes) # the registry now holds skopeo's push

note "push, repeat: kiln's compressed layers cached vs skopeo from a dir: of compressed blobs"
hf --export-json "$WORK/json/push-repeat.json" \
  -n "kiln push (repeat: compressed layers cached)" --prepare "${PREP[kiln-push-repeat]}" "${CMD[kiln-push]}" \
  -n "skopeo copy dir: (compressed) → docker://" --prepare "${PREP[skopeo-push]}" "${CMD[skopeo-push-dir]}"

note "pull: kiln into an empty store vs skopeo into an empty dir:"
"$ctl" restart
"$kiln" --root "$store" push -q "$REF" >/dev/null
hf --export-json "$WORK/json/pull.json" \
  -n "kiln pull (fresh store)" --prepare "${PREP[kiln-pull]}" "${CMD[kiln-pull]}" \
  -n "skopeo copy docker:// → dir: (empty)" --prepare "${PREP[skopeo-pull]}" "${CMD[skopeo-pull]}"
pulled_id=$("$kiln" --root "$WORK/pulled-store" images -q --no-trunc "$REF")
[ "$pulled_id" = "$image_id" ] || { echo "kiln pulled image $pulled_id, expected $image_id" >&2; exit 1; }

note "peak RSS"
eval "${PREP[kiln-pull]}"
kiln_pull_rss=$(peak_rss ${CMD[kiln-pull]})
eval "${PREP[skopeo-pull]}"
skopeo_pull_rss=$(peak_rss ${CMD[skopeo-pull]})
eval "${PREP[kiln-push-first]}"
kiln_push_rss=$(peak_rss ${CMD[kiln-push]})
eval "${PREP[skopeo-push]}"
skopeo_push_rss=$(peak_rss ${CMD[skopeo-push-archive]})
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report --------------------------------------------------------------------------------------
row() { # operation, skopeo side, hyperfine JSON (result 0 kiln, 1 skopeo)
  local k s r
  k=$(median "$3" 0)
  s=$(median "$3" 1)
  r=$(ratio "$k" "$s")
  echo "| $1 | $2 | $k s | $s s | $r | $(python3 -c 'import sys; print("yes" if float(sys.argv[1]) <= 1 else "**no**")' "$r") | $(cpu "$3" 0) s | $(cpu "$3" 1) s |"
}
commas() { python3 -c 'import sys; print(f"{int(sys.argv[1]):,}")' "$1"; }
compress_cost=$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) - float(sys.argv[2])))' \
  "$(median "$WORK/json/push-first.json" 0)" "$(median "$WORK/json/push-repeat.json" 0)")
section=$(
  cat <<EOF
<!-- registry:begin -->
## Registry push/pull of a $image_size image: kiln beside skopeo

$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r),
$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $(df -T "$WORK" | awk 'NR==2 {print $2}') under \`$WORK\`.
kiln $kiln_desc, release build; $(skopeo --version).
Registry: $("$REGISTRY_BIN" --version | awk '{print $2, $3}') (Debian's \`docker-registry\`), plain HTTP on
127.0.0.1, filesystem storage under \`$WORK/registry\`. It runs on the same machine, so its work
(hashing and writing every upload) competes with the client's for the cores.

Image: $LAYERS layers × $LAYER_MIB MiB of random data, made by \`benches/make_image_archive.py\` and put in
kiln's store by \`kiln load\` (image ID \`${image_id:0:19}…\`). skopeo pushes the same image from
\`kiln save -o img.tar\`, read as \`docker-archive:img.tar\`. Layer bytes pushed: kiln $(commas "$kiln_bytes"),
skopeo $(commas "$skopeo_bytes"): random data does not compress, so both are about the size of the layers.

Medians of $RUNS hyperfine runs after 1 warm-up, with kiln and skopeo in the same hyperfine run. Before every
run (untimed): for a push, the registry is stopped, its storage emptied and the registry started again, so
every blob is uploaded (no HEAD hit, no cross-repository mount); for a pull, the destination (kiln store,
skopeo \`dir:\`) is removed; then \`sync\`. Sources are in the page cache. CPU is the client's user + system
time (mean), without the registry's. Load average (1/5/15 min) when the timings began: $load_before; at the
end: $load_after (the machine is shared; anything above ~0.5 means other work competed for the $(nproc) cores).

| operation | skopeo side | kiln (wall, median) | skopeo (wall, median) | kiln/skopeo | kiln at least as fast | kiln CPU | skopeo CPU |
|---|---|---|---|---|---|---|---|
$(row "push, first (kiln compresses: \`compressed/\` and its blobs removed)" "\`docker-archive:img.tar\` → registry (compresses every time)" "$WORK/json/push-first.json")
$(row "push, repeat (kiln's compressed layers cached)" "\`dir:\` holding the compressed blobs → registry" "$WORK/json/push-repeat.json")
$(row "pull into an empty store" "registry → empty \`dir:\`" "$WORK/json/pull.json")

Making the compressed layers (push first − push repeat) costs kiln $compress_cost s.
Peak RSS (GNU time, one run): kiln push (first) ${kiln_push_rss} MiB, kiln pull ${kiln_pull_rss} MiB;
skopeo push (from \`docker-archive:\`) ${skopeo_push_rss} MiB, skopeo pull ${skopeo_pull_rss} MiB.

What each side does. Push: kiln gzips each layer once, in 1 MiB pieces on all cores, storing pieces that do
not shrink instead of deflating them. It checks the layer against its diffID while reading it, keeps the
result in its store (\`compressed/<diffID>\`), then uploads the blobs 3 at a time in checked chunks, then the
manifest. skopeo streams each layer out of the archive through its gzip compressor straight into the
upload, every time. Pull: kiln downloads 3 layers at a time, hashes each compressed stream, decompresses
it, checks the tar, checks the result against the config's diffID and keeps the uncompressed layer in its
store. skopeo's \`dir:\` only writes the compressed blobs, checking their digests.

Reproduce: \`benches/registry.sh\` (env WORK, LAYERS, LAYER_MIB, RUNS, KEEP, KILN). The commands (registry
on port $port):

\`\`\`sh
# push, first   (before each run, untimed: ${PREP[kiln-push-first]})
${CMD[kiln-push]}
# push, repeat  (before each run, untimed: ${PREP[kiln-push-repeat]})
${CMD[kiln-push]}
# skopeo push   (before each run, untimed: ${PREP[skopeo-push]})
${CMD[skopeo-push-archive]}
${CMD[skopeo-push-dir]}
# kiln pull     (before each run, untimed: ${PREP[kiln-pull]})
${CMD[kiln-pull]}
# skopeo pull   (before each run, untimed: ${PREP[skopeo-pull]})
${CMD[skopeo-pull]}
\`\`\`

\`registry-ctl restart\` (written into WORK by the script) stops the registry, deletes its storage, starts
\`docker-registry serve config.yml\` again on the same port and waits until \`/v2/\` answers.
<!-- registry:end -->
EOF
)

python3 benches/write_section.py registry "$results" "$section"
echo "$section"
