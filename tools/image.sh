#!/usr/bin/env bash
# Build the operator image from the unchanged Dockerfile with podman, into a PRIVATE store, and its SBOMs.
#
#   tools/image.sh              build (`make image`); progress on stderr, then KEY=VALUE lines on stdout:
#                               image, tags, image_id, oci_archive, sbom_dir, sbom_spdx, sbom_cyclonedx,
#                               size_bytes, layers, base_seconds, build_seconds, sbom_seconds, and podman
#                               (the command prefix that reaches the private store)
#   tools/image.sh podman ARGS  run podman against the private store (no build), e.g. `images`, `run --rm ...`
#
# No registry is needed: the Dockerfile's base image is stood in for by a local one built from Debian
# packages by tools/image/base.sh (mmdebstrap), imported and tagged with the Dockerfile's base name. The
# base is built only when its recipe changed: the recipe's sha256 keys the store,
# $WIDEEP_CACHE_DIR/image/<key>/ (default ~/.cache/wideep/image/<key>/), which holds
#   store/ run/ tmp/     podman's --root, --runroot and --tmpdir (CONTAINERS_CONF: tools/image/containers.conf)
#   wideep-operator.oci.tar   the image as an OCI archive
#   sbom/                the image's SBOMs: sbom.spdx.json and sbom.cyclonedx.json (syft, built from its Go
#                        module by tools/go-tool.sh), redone only when the image changed
# Nothing system-wide is configured. Needs root (rootful podman). Installs its Debian packages if missing.
set -euo pipefail
root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root_dir/tools/image"
recipe="$here/base.sh"
key=$(sha256sum < "$recipe" | cut -c1-16)
cache="${WIDEEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wideep}/image"
dir="$cache/$key"
export CONTAINERS_CONF="$here/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$here/registries.conf"
podman_cmd=(podman --root "$dir/store" --runroot "$dir/run" --tmpdir "$dir/tmp" --storage-driver overlay)
log() { echo "[image] $*" >&2; }

if [[ "${1:-}" == podman ]]; then
  shift
  exec "${podman_cmd[@]}" "$@"
fi
[[ $# -eq 0 ]] || { echo "usage: tools/image.sh [podman ARGS...]" >&2; exit 2; }

# ------------------------------------------------------------------------------------------ requirements
need=()
for pair in podman:podman runc:runc mmdebstrap:mmdebstrap conmon:conmon; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  [[ $(id -u) -eq 0 ]] || { log "missing ${need[*]}; install them (apt-get install ${need[*]})"; exit 1; }
  log "installing ${need[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
[[ $(id -u) -eq 0 ]] || { log "rootful podman: run as root"; exit 1; }

mkdir -p "$dir/store" "$dir/run" "$dir/tmp"
exec 9>"$cache/.$key.lock"
flock 9 # one build per store at a time (other checkouts, other sessions)
pm() { "${podman_cmd[@]}" "$@"; }
touch "$dir/last-used"
# The stores of other recipes (an older tools/image/base.sh) go once unused for a week; a store in use is kept.
for other in "$cache"/*/; do
  other=${other%/}
  [[ "${other##*/}" != "$key" ]] || continue
  stamp="$other/last-used"
  [[ -e "$stamp" ]] || stamp="$other"
  [[ -n "$(find "$stamp" -maxdepth 0 -mtime +7)" ]] || continue
  if (flock -n 8 && ! grep -qF " $other/" /proc/mounts) 8>"$cache/.${other##*/}.lock"; then
    log "removing the unused store of an older recipe: $other"
    rm -rf "$other" "$cache/.${other##*/}.lock" || log "could not remove $other"
  fi
done
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ------------------------------------------------------------------------------------------ base image
# Every external FROM of the Dockerfile (not a stage name), as podman names it in local storage.
mapfile -t bases < <(awk 'toupper($1) == "FROM" {
    i = 2; if ($i ~ /^--platform=/) i++
    img = $i; if (toupper($(i + 1)) == "AS") stage[tolower($(i + 2))] = 1
    if (!(tolower(img) in stage)) print img }' "$root_dir/Dockerfile" | sort -u)
base_ref="localhost/wideep-base:$key"
t0=$(now)
if [[ -f "$dir/base.done" ]] && pm image exists "$base_ref"; then
  base_seconds=cached
else
  log "building the local base image (recipe $key: tools/image/base.sh)"
  rm -f "$dir/base.tar"
  bash "$recipe" "$dir/base.tar" > "$dir/base.log" 2>&1 || {
    tail -20 "$dir/base.log" >&2
    log "base image recipe failed; log: $dir/base.log"
    exit 1
  }
  pm import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "local stand-in for ${bases[*]} (tools/image/base.sh $key)" \
    "$dir/base.tar" "$base_ref" > "$dir/import.log" 2>&1 || {
    tail -20 "$dir/import.log" >&2
    log "podman import failed"
    exit 1
  }
  rm -f "$dir/base.tar"
  touch "$dir/base.done"
  base_seconds=$(secs "$t0" "$(now)")
  log "base image built in ${base_seconds}s"
fi
for base in "${bases[@]}"; do
  [[ "$base" != *@* ]] || { log "FROM $base: a digest cannot be stood in for by a local image"; exit 1; }
  name="$base"
  [[ "${name%%/*}" == *[.:]* && "$name" == */* ]] || { [[ "$name" == */* ]] || name="library/$name"; name="docker.io/$name"; }
  pm tag "$base_ref" "$name"
done

# ------------------------------------------------------------------------------------------ operator image
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root_dir/pyproject.toml" | head -1)
image="localhost/wideep-operator"
build_args=(--pull=never --layers --network host -f "$root_dir/Dockerfile" -t "$image:dev" -t "$image:$version")
# The builder stage's pip reaches PyPI through this machine's trust (a TLS-intercepting proxy's CA, say): the
# host's bundle is mounted over the base's for the RUN steps only, so the image keeps Debian's own bundle.
host_ca=/etc/ssl/certs/ca-certificates.crt
[[ -f "$host_ca" ]] && build_args+=(--volume "$host_ca:$host_ca:ro")
t0=$(now)
log "building $image:dev ($version) from the Dockerfile"
pm build --quiet "${build_args[@]}" "$root_dir" > "$dir/build.out" 2> "$dir/build.log" || {
  tail -30 "$dir/build.log" >&2
  log "podman build failed; log: $dir/build.log"
  exit 1
}
build_seconds=$(secs "$t0" "$(now)")
image_id=$(pm image inspect --format '{{.Id}}' "$image:dev")
size=$(pm image inspect --format '{{.Size}}' "$image:dev")
layers=$(pm image inspect --format '{{len .RootFS.Layers}}' "$image:dev")
log "built $image:dev in ${build_seconds}s: ${image_id:0:12}, $((size / 1000000)) MB, $layers layers"

# ------------------------------------------------------------------------------------------ archive, SBOMs
archive="$dir/wideep-operator.oci.tar"
sbom="$dir/sbom"
if [[ "$(cat "$dir/archive.id" 2>/dev/null)" != "$image_id" || ! -f "$archive" ]]; then
  rm -f "$archive" "$dir/archive.id"
  pm save --quiet --format oci-archive -o "$archive.partial" "$image:dev"
  mv "$archive.partial" "$archive"
  echo "$image_id" > "$dir/archive.id"
fi
t0=$(now)
if [[ "$(cat "$sbom/image.id" 2>/dev/null)" != "$image_id" ]]; then
  read -r _ syft_pkg syft_version < <(grep -E '^syft[[:space:]]' "$root_dir/tools/go-tools.txt")
  syft=$(bash "$root_dir/tools/go-tool.sh" syft "$syft_pkg" "$syft_version")
  rm -rf "$sbom.partial"
  mkdir -p "$sbom.partial"
  SYFT_CHECK_FOR_APP_UPDATE=false "$syft" scan --quiet "oci-archive:$archive" \
    --source-name wideep-operator --source-version "$version" \
    -o "spdx-json=$sbom.partial/sbom.spdx.json" -o "cyclonedx-json=$sbom.partial/sbom.cyclonedx.json" >&2
  echo "$image_id" > "$sbom.partial/image.id"
  rm -rf "$sbom"
  mv "$sbom.partial" "$sbom"
  sbom_seconds=$(secs "$t0" "$(now)")
  log "SBOMs written in ${sbom_seconds}s"
else
  sbom_seconds=cached
fi
log "SBOMs in $sbom"

cat <<OUT
image=$image:dev
tags=$image:dev $image:$version
version=$version
image_id=$image_id
size_bytes=$size
layers=$layers
oci_archive=$archive
sbom_dir=$sbom
sbom_spdx=$sbom/sbom.spdx.json
sbom_cyclonedx=$sbom/sbom.cyclonedx.json
base_seconds=$base_seconds
build_seconds=$build_seconds
sbom_seconds=$sbom_seconds
podman=bash $root_dir/tools/image.sh podman
OUT
