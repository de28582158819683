#!/usr/bin/env bash
# Package the wideep-operator chart with the operator image pinned by digest, and print the .tgz's path.
#
#   .github/scripts/package-chart.sh CHART_DIR IMAGE_REPOSITORY DIGEST DEST_DIR
#   e.g. .github/scripts/package-chart.sh charts/wideep-operator ghcr.io/wideep/wideep-operator sha256:<64 hex> dist
#
# `helm package` has no --set: the values that ship are the chart's values.yaml. So this copies the chart to
# a scratch folder, writes image.repository and image.digest into that copy's values.yaml (only those two
# lines of the top-level `image:` block; comments and everything else stay as they are), checks with
# `helm template` that the operator Deployment now runs IMAGE_REPOSITORY@DIGEST, and packages the copy into
# DEST_DIR. The checkout is never modified.
#
# The release workflow (.github/workflows/release.yml, job "chart") runs it, and so does
# tests/release/test_chart_package.py: both package the chart the same way.
#
# HELM: the helm binary (default: helm on PATH).
set -euo pipefail
if [[ $# -ne 4 ]]; then
  echo "usage: $0 CHART_DIR IMAGE_REPOSITORY DIGEST DEST_DIR" >&2
  exit 2
fi
chart="$1" repository="$2" digest="$3" dest="$4"
helm="${HELM:-helm}"

if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "package-chart: digest must be sha256:<64 lowercase hex>, got '$digest'" >&2
  exit 2
fi
if [[ ! "$repository" =~ ^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$ ]]; then
  echo "package-chart: '$repository' is not an image repository (registry/path, lowercase, no tag or digest)" >&2
  exit 2
fi
[[ -f "$chart/Chart.yaml" && -f "$chart/values.yaml" ]] || { echo "package-chart: no chart at '$chart'" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chart_field() { sed -n "s/^$1: *//p" "$chart/Chart.yaml" | tr -d "\"'"; }
name="$(chart_field name)" version="$(chart_field version)"
cp -R "$chart" "$work/$name"
values="$work/$name/values.yaml"

# Rewrite `  repository:` and `  digest:` inside the top-level `image:` block; fail unless each is found once.
awk -v repository="$repository" -v digest="$digest" '
  /^[^[:space:]#]/ { section = $0; sub(/:.*/, "", section) }
  section == "image" && /^  repository:/ { print "  repository: " repository; r++; next }
  section == "image" && /^  digest:/ { print "  digest: \"" digest "\""; d++; next }
  { print }
  END { if (r != 1 || d != 1) { printf "image.repository found %d times, image.digest %d times (want 1 each)\n", r, d > "/dev/stderr"; exit 1 } }
' "$chart/values.yaml" >"$values"

# The chart as packaged must render the operator Deployment pinned by digest.
want="$repository@$digest"
rendered="$("$helm" template release "$work/$name" --show-only templates/deployment.yaml)"
if ! grep -qF "image: \"$want\"" <<<"$rendered"; then
  echo "package-chart: the packaged chart does not render image \"$want\"" >&2
  exit 1
fi

mkdir -p "$dest"
"$helm" package "$work/$name" --destination "$dest" >&2
echo "$(cd "$dest" && pwd)/$name-$version.tgz"
