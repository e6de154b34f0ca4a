#!/usr/bin/env bash
# Build helm from its Go module at a pinned version.
#   hack/build-helm.sh OUTDIR        (HELM_VERSION overrides the pin)
# The binary lands at OUTDIR/helm-VERSION with OUTDIR/helm pointing at it, so a
# version bump rebuilds and an unchanged version is a no-op. Every step writes
# to a temporary name and renames when it is complete: an interrupted build
# leaves nothing that a later run takes for done.
set -euo pipefail
version=${HELM_VERSION:-v4.3.1}
mkdir -p "$1"
out=$(cd "$1" && pwd)
major=${version%%.*}
binary="$out/helm-$version"
if [ ! -x "$binary" ]; then
  rm -f "$binary.tmp"
  work="$out/gomod-helm-$version"
  # Go 1.27 turns on JSONv2 by default; the Kubernetes libraries inside helm
  # are tested without it.
  export GOFLAGS=-mod=mod CGO_ENABLED=0 GOEXPERIMENT=nojsonv2 GOTOOLCHAIN=local
  if [ ! -f "$work/go.mod" ]; then
    rm -rf "$work" "$work.tmp"
    mkdir -p "$work.tmp"
    (
      cd "$work.tmp"
      go mod init kwf.local/helmbuild >/dev/null 2>&1
      go mod edit -require "helm.sh/helm/$major@$version"
      printf 'package tools\n\nimport _ "helm.sh/helm/%s/cmd/helm"\n' "$major" > tools.go
      go mod tidy >/dev/null 2>&1 || true  # go build -mod=mod fetches what tidy could not
    )
    mv "$work.tmp" "$work"
  fi
  cd "$work"
  start=$(date +%s)
  go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$version" \
    -o "$binary.tmp" "helm.sh/helm/$major/cmd/helm"
  mv "$binary.tmp" "$binary"
  echo "built helm $version in $(( $(date +%s) - start ))s"
fi
ln -sfn "helm-$version" "$out/helm"
