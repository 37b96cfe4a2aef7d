#!/usr/bin/env bash
# Builds the manager image without a Docker daemon; `make image` runs it.
#
#  1. crane serves a throwaway registry on 127.0.0.1:$IMAGE_REGISTRY_PORT,
#     in memory, stopped on exit whatever happens;
#  2. an empty base is pushed to it: one empty layer (crane append needs one),
#     platform $IMAGE_PLATFORM, nothing else;
#  3. ko builds ./cmd onto it (.ko.yaml) as user 65532:65532 and pushes it;
#  4. crane adds /manager, a link to ko's /ko-app/cmd, and makes it the
#     entrypoint, as in the Dockerfile's image, so manifests running
#     `/manager` work with either, and writes $IMAGE_TAR tagged $IMG;
#  5. the tarball is pushed back to the registry and its config printed;
#     the build fails unless the user is 65532:65532 and the entrypoint
#     /manager.
set -euo pipefail

: "${KO:?path to ko}" "${CRANE:?path to crane}" "${IMG:?image name for the tarball}" "${IMAGE_TAR:?output tarball}"
port=${IMAGE_REGISTRY_PORT:-5001}
platform=${IMAGE_PLATFORM:-linux/amd64}
registry=127.0.0.1:${port}
user=65532:65532

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

echo "--- scratch base at $registry/scratch ($platform)"
tar -cf "$work/empty.tar" -T /dev/null
"$CRANE" append --new_layer "$work/empty.tar" --new_tag "$registry/scratch:latest" >/dev/null
"$CRANE" mutate "$registry/scratch:latest" --set-platform "$platform" --tag "$registry/scratch:latest" >/dev/null

echo "--- ko build ./cmd"
# ko reads git state for its templates; no optional locks keeps that
# read-only, so it never contends with a git command running beside it.
GIT_OPTIONAL_LOCKS=0 KO_DOCKER_REPO="$registry/apikey-operator" KO_DEFAULTBASEIMAGE="$registry/scratch:latest" \
	"$KO" build ./cmd --bare --tags latest --platform "$platform" --image-user "$user" --sbom none \
	--image-refs "$work/built"

echo "--- /manager entrypoint, $IMAGE_TAR as $IMG"
mkdir -p "$work/link" "$(dirname "$IMAGE_TAR")"
ln -s /ko-app/cmd "$work/link/manager"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/link" -cf "$work/link.tar" manager
"$CRANE" mutate "$(cat "$work/built")" --append "$work/link.tar" --entrypoint /manager --tag "$IMG" --output "$IMAGE_TAR"

echo "--- config of $IMAGE_TAR"
"$CRANE" push "$IMAGE_TAR" "$registry/verify:latest" >/dev/null
config=$("$CRANE" config "$registry/verify:latest")
echo "$config"
grep -q "\"User\":\"$user\"" <<<"$config" || { echo "the image does not run as $user" >&2; exit 1; }
grep -q '"Entrypoint":\["/manager"\]' <<<"$config" || { echo "the image's entrypoint is not /manager" >&2; exit 1; }
echo "--- $IMAGE_TAR: user $user, entrypoint /manager"
