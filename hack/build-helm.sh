#!/usr/bin/env bash
# Build helm from its Go module at a pinned version.
#   hack/build-helm.sh OUTDIR        (HELM_VERSION overrides the pin)
# The binary lands at OUTDIR/helm-VERSION with OUTDIR/helm pointing at it, so a
# version bump rebuilds and an unchanged version is a no-op.
set -euo pipefail
version=${HELM_VERSION:-v4.3.1}
mkdir -p "$1"
out=$(cd "$1" && pwd)
major=${version%%.*}
binary="$out/helm-$version"
if [ ! -x "$binary" ]; then
  work="$out/gomod-helm-$version"
  mkdir -p "$work"
  cd "$work"
  # Go 1.27 turns on JSONv2 by default; the Kubernetes libraries inside helm
  # are tested without it.
  export GOFLAGS=-mod=mod CGO_ENABLED=0 GOEXPERIMENT=nojsonv2 GOTOOLCHAIN=local
  if [ ! -f go.mod ]; then
    go mod init kwf.local/helmbuild >/dev/null 2>&1
    go mod edit -require "helm.sh/helm/$major@$version"
    printf 'package tools\n\nimport _ "helm.sh/helm/%s/cmd/helm"\n' "$major" > tools.go
    go mod tidy >/dev/null 2>&1 || true
  fi
  start=$(date +%s)
  go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$version" \
    -o "$binary.tmp" "helm.sh/helm/$major/cmd/helm"
  mv "$binary.tmp" "$binary"
  echo "built helm $version in $(( $(date +%s) - start ))s"
fi
ln -sfn "helm-$version" "$out/helm"
