#!/usr/bin/env bash
# Builds the manager image for every platform in IMAGE_PLATFORMS, without a
# Docker daemon; `make image` runs it.
#
#  1. crane serves a throwaway registry on 127.0.0.1:$IMAGE_REGISTRY_PORT,
#     in memory, stopped on exit whatever happens;
#  2. an empty base index is pushed to it: per platform, one empty layer
#     (crane append needs one) and the platform, nothing else;
#  3. ko builds ./cmd onto it for every platform (.ko.yaml) as user
#     65532:65532, writes an SPDX SBOM per platform image and one for the
#     index into $IMAGE_SBOM_DIR, and pushes the index. The SBOMs list what
#     the images hold (the manager binary and its Go modules); they name
#     ko's image digests, which step 4 changes by adding a symlink layer;
#  4. crane adds /manager, a link to ko's /ko-app/cmd, to each platform's
#     image and makes it the entrypoint, as in the Dockerfile's image, so
#     manifests running `/manager` work with either, and indexes them again;
#  5. the index goes to $IMAGE_OCI (an OCI layout: `crane push --index` it to
#     a registry), and the image of $IMAGE_PLATFORM to $IMAGE_TAR tagged $IMG
#     (for `docker load`, `kind load image-archive`);
#  6. the build fails unless the index holds every platform, each image runs
#     as 65532:65532 with entrypoint /manager, and each platform has an SPDX
#     SBOM naming the manager's module.
set -euo pipefail

: "${KO:?path to ko}" "${CRANE:?path to crane}" "${IMG:?image name for the tarball}" "${IMAGE_TAR:?output tarball}"
: "${IMAGE_OCI:?output OCI layout directory}" "${IMAGE_SBOM_DIR:?output SBOM directory}"
port=${IMAGE_REGISTRY_PORT:-5001}
platforms=${IMAGE_PLATFORMS:-linux/amd64,linux/arm64}
host_platform=${IMAGE_PLATFORM:-linux/amd64}
registry=127.0.0.1:${port}
user=65532:65532
module=github.com/apikey-operator/apikey-operator

# The registry holds the base and the built image until they are written
# out, so it must be this script's own: refuse a port something else serves.
if "$CRANE" catalog "$registry" >/dev/null 2>&1; then
	echo "something already serves a registry at $registry; set IMAGE_REGISTRY_PORT to a free port" >&2
	exit 1
fi
work=$(mktemp -d)
"$CRANE" registry serve --address "$registry" >"$work/registry.log" 2>&1 &
registry_pid=$!
stop() {
	kill "$registry_pid" 2>/dev/null || true
	wait "$registry_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap stop EXIT

for _ in $(seq 100); do
	"$CRANE" catalog "$registry" >/dev/null 2>&1 && break
	kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
	sleep 0.1
done
# What answered must be ours: had another process taken the port meanwhile,
# ours could not listen and has exited.
kill -0 "$registry_pid" 2>/dev/null || { echo "the registry at $registry is not this build's" >&2; cat "$work/registry.log" >&2; exit 1; }

IFS=, read -r -a platform_list <<<"$platforms"
tag_of() { tr / - <<<"$1"; }

echo "--- scratch base index at $registry/scratch ($platforms)"
tar -cf "$work/empty.tar" -T /dev/null
base_manifests=()
for p in "${platform_list[@]}"; do
	"$CRANE" append --new_layer "$work/empty.tar" --new_tag "$registry/scratch:$(tag_of "$p")" >/dev/null
	"$CRANE" mutate "$registry/scratch:$(tag_of "$p")" --set-platform "$p" --tag "$registry/scratch:$(tag_of "$p")" >/dev/null
	base_manifests+=(-m "$registry/scratch:$(tag_of "$p")")
done
"$CRANE" index append "${base_manifests[@]}" --tag "$registry/scratch:latest" >/dev/null

echo "--- ko build ./cmd ($platforms), SBOMs into $IMAGE_SBOM_DIR"
rm -rf "$IMAGE_SBOM_DIR" && mkdir -p "$IMAGE_SBOM_DIR"
# ko reads git state for its templates; no optional locks keeps that
# read-only, so it never contends with a git command running beside it.
GIT_OPTIONAL_LOCKS=0 KO_DOCKER_REPO="$registry/apikey-operator" KO_DEFAULTBASEIMAGE="$registry/scratch:latest" \
	"$KO" build ./cmd --bare --tags latest --platform "$platforms" --image-user "$user" \
	--sbom spdx --sbom-dir "$IMAGE_SBOM_DIR" --image-refs "$work/built"

echo "--- /manager entrypoint on every platform"
mkdir -p "$work/link" "$(dirname "$IMAGE_TAR")"
ln -s /ko-app/cmd "$work/link/manager"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/link" -cf "$work/link.tar" manager
# ko lists the index first, then each platform image.
built=$(head -1 "$work/built")
manifests=()
for p in "${platform_list[@]}"; do
	ref="$registry/release:$(tag_of "$p")"
	"$CRANE" mutate "$built" --platform "$p" --append "$work/link.tar" --entrypoint /manager --tag "$ref" >/dev/null
	manifests+=(-m "$ref")
done
"$CRANE" index append "${manifests[@]}" --tag "$registry/release:latest" >/dev/null

echo "--- $IMAGE_OCI (index) and $IMAGE_TAR ($host_platform, as $IMG)"
rm -rf "$IMAGE_OCI"
"$CRANE" pull --format oci "$registry/release:latest" "$IMAGE_OCI"
"$CRANE" mutate "$registry/release:$(tag_of "$host_platform")" --tag "$IMG" --output "$IMAGE_TAR" >/dev/null

echo "--- the index"
"$CRANE" index list "$registry/release:latest" | tee "$work/index"
for p in "${platform_list[@]}"; do
	grep -q " $p\$" "$work/index" || { echo "the index has no $p image" >&2; exit 1; }
	config=$("$CRANE" config "$registry/release:$(tag_of "$p")")
	grep -q "\"User\":\"$user\"" <<<"$config" || { echo "the $p image does not run as $user" >&2; exit 1; }
	grep -q '"Entrypoint":\["/manager"\]' <<<"$config" || { echo "the $p image's entrypoint is not /manager" >&2; exit 1; }
	arch=${p#*/}
	sbom=$(grep -l "\"spdxVersion\"" "$IMAGE_SBOM_DIR"/*"$arch"*.json 2>/dev/null | head -1 || true)
	[ -n "$sbom" ] && grep -q "$module" "$sbom" || { echo "no SPDX SBOM naming $module for $p in $IMAGE_SBOM_DIR" >&2; exit 1; }
	echo "$p: user $user, entrypoint /manager, SBOM $(basename "$sbom")"
done
