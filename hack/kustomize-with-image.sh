#!/usr/bin/env bash
# Usage: kustomize-with-image.sh KUSTOMIZE DIR IMAGE
# Prints `kustomize build DIR` with the manager image (named `controller` in
# config/) set to IMAGE, through a throwaway overlay, so that no tracked
# kustomization.yaml is edited (`kustomize edit set image` in place would
# leave the tree dirty after every deploy).
set -euo pipefail
kustomize=$1 dir=$2 image=$3
if [[ $kustomize == */* ]]; then kustomize=$(realpath "$kustomize"); fi
overlay=$(mktemp -d)
trap 'rm -rf "$overlay"' EXIT
base=$(realpath --relative-to="$overlay" "$dir")
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\n' "$base" >"$overlay/kustomization.yaml"
(cd "$overlay" && "$kustomize" edit set image "controller=$image")
"$kustomize" build "$overlay"
