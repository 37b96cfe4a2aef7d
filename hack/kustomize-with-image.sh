#!/usr/bin/env bash
# Usage: kustomize-with-image.sh KUSTOMIZE DIR IMAGE
# Prints `kustomize build DIR` with the manager image (named `controller` in
# config/) set to IMAGE, through a throwaway overlay, so that no tracked
# kustomization.yaml is edited (`kustomize edit set image` in place would
# leave the tree dirty after every deploy). Run it from the repository's
# root with DIR relative to it: kustomize takes only relative bases, so the
# overlay lives two levels down, in bin/ (ignored by git).
set -euo pipefail
kustomize=$1 dir=$2 image=$3
case $dir in /*) echo "kustomize-with-image.sh: DIR must be relative to the repository's root" >&2; exit 1 ;; esac
if [[ $kustomize == */* ]]; then kustomize=$(cd "$(dirname "$kustomize")" && pwd)/$(basename "$kustomize"); fi
mkdir -p bin
overlay=$(mktemp -d bin/overlay.XXXXXX)
trap 'rm -rf "$overlay"' EXIT
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../%s\n' "$dir" >"$overlay/kustomization.yaml"
(cd "$overlay" && "$kustomize" edit set image "controller=$image")
"$kustomize" build "$overlay"
