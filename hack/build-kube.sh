#!/usr/bin/env bash
# Build Kubernetes programs from the k8s.io/kubernetes Go module.
#   hack/build-kube.sh VERSION OUTDIR PROGRAM...
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with local
# paths; a module that requires it must replace each one with the published
# v0.x.y of the same release, which this script does.
set -euo pipefail
version=$1 out=$2; shift 2
staging_version="v0.${version#v1.}"
mkdir -p "$out"
# Absolute, because the build runs from the module folder.
out=$(cd "$out" && pwd)
work="$(dirname "$out")/gomod-$version"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOEXPERIMENT=nojsonv2 GOTOOLCHAIN=local
# The module folder is made under a temporary name and renamed when complete,
# so an interrupted run starts it again instead of building from half of it.
if [ ! -f "$work/go.mod" ]; then
  rm -rf "$work" "$work.tmp"
  mkdir -p "$work.tmp"
  (
    cd "$work.tmp"
    go mod init kwf.local/kubebuild >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    edits=(-require "k8s.io/kubernetes@$version")
    for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
      edits+=(-replace "$m=$m@$staging_version")
    done
    go mod edit "${edits[@]}"
    printf 'package tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n' > tools.go
    go mod tidy >/dev/null 2>&1 || true  # go build -mod=mod fetches what tidy could not
  )
  mv "$work.tmp" "$work"
fi
cd "$work"
for program in "$@"; do
  if [ -x "$out/$program" ]; then continue; fi
  rm -f "$out/$program.tmp"
  start=$(date +%s)
  case $program in
    kubectl) pkg=k8s.io/kubernetes/cmd/kubectl ;;
    *) pkg=k8s.io/kubernetes/cmd/$program ;;
  esac
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitVersion=$version" -o "$out/$program.tmp" "$pkg"
  mv "$out/$program.tmp" "$out/$program"
  echo "built $program $version in $(( $(date +%s) - start ))s"
done
