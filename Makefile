# Image URL to use for building and deploying the manager.
IMG ?= apikey-operator:latest
# The released version (the chart's appVersion) and the image dist/install.yaml
# and the chart's defaults run.
VERSION ?= $(shell sed -n 's/^appVersion: "\(.*\)"$$/\1/p' dist/chart/Chart.yaml)
RELEASE_IMG ?= ghcr.io/apikey-operator/apikey-operator:$(VERSION)
# What --version prints, stamped into every binary make builds; the date is
# the commit's, so the same commit builds the same binary. A build from a
# tree with changes says so: its commit ends in -dirty.
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell [ -z "$$(git status --porcelain 2>/dev/null)" ] || echo -dirty)
BUILD_DATE ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null)
VERSION_PKG := github.com/apikey-operator/apikey-operator/internal/version
LDFLAGS ?= -X $(VERSION_PKG).Version=v$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT) -X $(VERSION_PKG).Date=$(BUILD_DATE)

# Kubernetes version of the test control plane (kube-apiserver, etcd, kubectl),
# built from Go modules by hack/tools into bin/k8s/.
K8S_VERSION ?= 1.37.2

# pkg/apikeyauth, the Go client for services, is a Go module of its own, so
# that a service importing it gets none of the operator's dependencies; fmt,
# vet, test, lint and verify run in it too.
CLIENT_MODULE := pkg/apikeyauth

GOBIN ?= $(shell go env GOPATH)/bin
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs, RBAC and webhook configurations from the Go markers (and the Helm chart's copies).
	rm -f config/webhook/manifests.yaml # regenerated below; markers that stop parsing must not leave it stale
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases
	rm -f dist/chart/files/crds/*.yaml
	cp config/crd/bases/*.yaml dist/chart/files/crds/
	cp config/webhook/manifests.yaml dist/chart/files/webhook/manifests.yaml
	cp config/rbac/role.yaml dist/chart/files/rbac/role.yaml
	cp internal/policy/owner_policy.yaml config/policy/owner_policy.yaml
	cp internal/policy/owner_policy.yaml dist/chart/files/policy/owner_policy.yaml
	cp internal/policy/defaults_policy.yaml config/policy/defaults_policy.yaml
	cp internal/policy/defaults_policy.yaml dist/chart/files/policy/defaults_policy.yaml
	cp config/prometheus/rules.yaml config/grafana/apikey-operator.json dist/chart/files/monitoring/

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...
	go fmt -C $(CLIENT_MODULE) ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...
	go vet -C $(CLIENT_MODULE) ./...

.PHONY: test
test: manifests generate fmt vet envtest kustomize helm ## Run all tests against a real kube-apiserver and etcd.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" KUSTOMIZE="$(KUSTOMIZE)" HELM="$(HELM)" go test ./... -coverprofile cover.out
	go test -C $(CLIENT_MODULE) ./... -coverprofile cover.out

.PHONY: demo
demo: build envtest ## Start a local control plane, issue a key and show it at work (DEMO_ONCE=1 exits after).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go run ./hack/demo

# The end-to-end plane adds kube-controller-manager (garbage collector and
# namespace controller) to envtest's kube-apiserver and etcd, and puts nginx,
# Caddy and Traefik in front of a backend; make builds all but nginx (a Debian
# package) into bin/ the first time (~20 min on 2 cores, cached after). The
# security suite (test/security) builds the manager binary and runs it as its
# own processes under the RBAC and admission policies of config/default,
# which it renders with kustomize, beside kube-controller-manager's admission
# policy status controller, whose writes date a policy changed in place. -p 1: each package runs its own control
# plane, and two at once starve each other on a small machine.
.PHONY: test-e2e
test-e2e: manifests generate envtest e2e-tools kustomize ## Run the end-to-end tests: kube-apiserver's token webhook, kubectl, nginx (needs nginx installed), Caddy, Traefik, garbage collection, and the attacks of test/security.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" KUSTOMIZE="$(KUSTOMIZE)" CADDY="$(CADDY)" TRAEFIK="$(TRAEFIK)" \
		go test -tags e2e -p 1 ./test/e2e/ ./test/security/... -v -count=1 -timeout 30m -args -ginkgo.v

.PHONY: bench
bench: envtest ## Measure against the targets in docs/benchmarks.md (same run, same machine) and write docs/benchmarks.md.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go run ./hack/bench -out docs/benchmarks.md

.PHONY: fuzz
fuzz: ## Run each fuzz target briefly (FUZZTIME, default 20s).
	go test ./internal/token -run='^$$' -fuzz=FuzzParse -fuzztime=$(or $(FUZZTIME),20s)
	go test ./internal/authserver -run='^$$' -fuzz=FuzzCredentials -fuzztime=$(or $(FUZZTIME),20s)
	go test ./internal/authserver -run='^$$' -fuzz=FuzzTokenReview -fuzztime=$(or $(FUZZTIME),20s)

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run
	cd $(CLIENT_MODULE) && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart in dist/chart, with defaults and with everything on.
	$(HELM) lint --strict dist/chart
	$(HELM) lint --strict dist/chart --set authServer.enabled=true,tls.mode=self-signed,metrics.serviceMonitor.enabled=true

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint and fix what it can.
	$(GOLANGCI_LINT) run --fix
	cd $(CLIENT_MODULE) && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml --fix

.PHONY: verify
verify: manifests generate fmt build-installer ## Regenerate everything (dist/install.yaml too) and fail if the tree changed.
	go mod tidy -diff
	go mod tidy -C $(CLIENT_MODULE) -diff
	@mods=$$(go list -C $(CLIENT_MODULE) -deps -test -f '{{if not .Standard}}{{.Module.Path}}{{end}}' ./... | sort -u); \
		if [ "$$mods" != "$$(go list -C $(CLIENT_MODULE) -m)" ]; then \
		echo "$(CLIENT_MODULE) must import only the standard library; it imports from:"; echo "$$mods"; exit 1; fi
	@if [ -n "$$(git status --porcelain)" ]; then \
		echo "generated files are out of date or unformatted:"; git status --porcelain; git --no-pager diff --stat; exit 1; fi

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the manager and the kubectl apikey plugin into bin/.
	go build -ldflags "$(LDFLAGS)" -o bin/manager cmd/main.go
	go build -ldflags "$(LDFLAGS)" -o bin/kubectl-apikey ./cmd/kubectl-apikey

.PHONY: run
run: manifests generate fmt vet ## Run the manager against the cluster in your kubeconfig.
	go run ./cmd/main.go

##@ Deployment

.PHONY: install
install: manifests ## Install the CRDs into the cluster in your kubeconfig.
	$(KUBECTL) apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: manifests ## Remove the CRDs from the cluster in your kubeconfig.
	$(KUBECTL) delete --ignore-not-found -f config/crd/bases

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator (IMG) to the cluster in your kubeconfig.
	hack/kustomize-with-image.sh $(KUSTOMIZE) config/default $(IMG) | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator and its CRDs from the cluster in your kubeconfig.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: build-installer
build-installer: manifests generate kustomize ## Write dist/install.yaml (committed): config/default for RELEASE_IMG.
	mkdir -p dist
	hack/kustomize-with-image.sh $(KUSTOMIZE) config/default $(RELEASE_IMG) > dist/install.yaml

##@ Image

# `make image` builds the manager image with ko, without a Docker daemon, for
# IMAGE_PLATFORMS: the multi-platform index as an OCI layout in IMAGE_OCI
# (`$(CRANE) push --index` it), an SPDX SBOM per platform in IMAGE_SBOM_DIR,
# and the image of this machine's platform in IMAGE_TAR, tagged IMG (load it
# with `docker load -i`, `kind load image-archive` or `ctr images import`).
# hack/image/build.sh serves a registry on 127.0.0.1:IMAGE_REGISTRY_PORT for
# the build only, pushes an empty scratch base there, has ko build ./cmd onto
# it as user 65532:65532, adds /manager as the entrypoint (as the Dockerfile
# does), and fails unless every platform, user, entrypoint and SBOM is there;
# the registry stops when the script exits.
IMAGE_TAR ?= dist/image/apikey-operator.tar
IMAGE_OCI ?= dist/image/oci
IMAGE_SBOM_DIR ?= dist/image/sbom
IMAGE_REGISTRY_PORT ?= 5001
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_PLATFORM ?= linux/$(shell go env GOARCH)

.PHONY: image
image: ko crane ## Build the manager image (linux/amd64 and arm64, with SBOMs) with ko on a scratch base (no Docker daemon).
	VERSION=v$(VERSION) COMMIT=$(COMMIT) BUILD_DATE=$(BUILD_DATE) \
	KO=$(KO) CRANE=$(CRANE) IMG=$(IMG) IMAGE_TAR=$(IMAGE_TAR) IMAGE_OCI=$(IMAGE_OCI) IMAGE_SBOM_DIR=$(IMAGE_SBOM_DIR) \
		IMAGE_REGISTRY_PORT=$(IMAGE_REGISTRY_PORT) IMAGE_PLATFORMS=$(IMAGE_PLATFORMS) IMAGE_PLATFORM=$(IMAGE_PLATFORM) hack/image/build.sh

# `make plugin-archives` cross-builds the plugin for PLUGIN_PLATFORMS and has
# hack/release pack each into a reproducible archive, write checksums.txt and
# a krew manifest (apikey.yaml) into PLUGIN_DIST; krew's own validator checks
# the manifest, and krew installs the plugin from this platform's archive
# into a throwaway KREW_ROOT, which must then print this version.
PLUGIN_DIST ?= dist/plugin
PLUGIN_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64

.PHONY: plugin-archives
plugin-archives: krew ## Build the kubectl apikey plugin's archives for every platform, checksums and a krew manifest.
	rm -rf $(PLUGIN_DIST)
	@set -e; for p in $(PLUGIN_PLATFORMS); do \
		os=$${p%/*} arch=$${p#*/} ext=; [ "$$os" = windows ] && ext=.exe; \
		echo "go build ./cmd/kubectl-apikey for $$p"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags "$(LDFLAGS)" \
			-o $(PLUGIN_DIST)/bin/$${os}_$${arch}/kubectl-apikey$$ext ./cmd/kubectl-apikey; \
	done
	go run ./hack/release -version v$(VERSION) -bin $(PLUGIN_DIST)/bin -out $(PLUGIN_DIST)
	$(VALIDATE_KREW_MANIFEST) -manifest $(PLUGIN_DIST)/apikey.yaml -skip-install
	@set -e; root=$$(mktemp -d); trap 'rm -rf $$root' EXIT; \
	archive=$$(ls $(PLUGIN_DIST)/kubectl-apikey_v$(VERSION)_$$(go env GOOS)_$$(go env GOARCH).*); \
	KREW_ROOT=$$root $(KREW) install --manifest=$(PLUGIN_DIST)/apikey.yaml --archive=$$archive >/dev/null; \
	installed=$$($$root/bin/kubectl-apikey version); echo "$$installed"; \
	grep -q '^kubectl-apikey v$(VERSION)$$' <<<"$$installed" \
		|| { echo "krew installed a plugin that is not v$(VERSION)"; exit 1; }; \
	echo "krew installed $$archive"

##@ Tools

LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p $(LOCALBIN)

CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
KUSTOMIZE_VERSION ?= v5.7.1
HELM_VERSION ?= v4.3.1
KO_VERSION ?= v0.19.1
CRANE_VERSION ?= v0.22.1

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KO ?= $(LOCALBIN)/ko-$(KO_VERSION)
CRANE ?= $(LOCALBIN)/crane-$(CRANE_VERSION)
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s/$(K8S_VERSION)-$(shell go env GOOS)-$(shell go env GOARCH)
KREW_VERSION ?= v0.4.3
KREW ?= $(LOCALBIN)/krew-$(KREW_VERSION)
VALIDATE_KREW_MANIFEST ?= $(LOCALBIN)/validate-krew-manifest-$(KREW_VERSION)
CADDY_VERSION ?= v2.11.9
TRAEFIK_VERSION ?= v3.6.12
CADDY ?= $(LOCALBIN)/caddy-$(CADDY_VERSION)
TRAEFIK ?= $(LOCALBIN)/traefik-$(TRAEFIK_VERSION)
# install, deploy and their undo use your kubectl, whatever version matches
# your cluster; the tests use the one in bin/k8s.
KUBECTL ?= kubectl

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build controller-gen into bin/.
$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Build golangci-lint into bin/.
$(GOLANGCI_LINT): | $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Build kustomize into bin/.
$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: helm
helm: $(HELM) ## Build helm into bin/.
$(HELM): | $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v4/cmd/helm,$(HELM_VERSION))

.PHONY: ko
ko: $(KO) ## Build ko into bin/.
$(KO): | $(LOCALBIN)
	$(call go-install-tool,$(KO),github.com/google/ko,$(KO_VERSION))

.PHONY: crane
crane: $(CRANE) ## Build crane into bin/.
$(CRANE): | $(LOCALBIN)
	$(call go-install-tool,$(CRANE),github.com/google/go-containerregistry/cmd/crane,$(CRANE_VERSION))

.PHONY: envtest
envtest: $(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd $(ENVTEST_ASSETS)/kubectl ## Build the test control plane into bin/k8s/ (first time ~5 min).

# The control plane comes from k8s.io/kubernetes and go.etcd.io/etcd through the
# Go module proxy (hack/tools/go.mod); nothing is downloaded from release sites.
$(ENVTEST_ASSETS)/kube-apiserver: hack/tools/go.mod | $(LOCALBIN)
	go build -C hack/tools -o $@ k8s.io/kubernetes/cmd/kube-apiserver
$(ENVTEST_ASSETS)/kubectl: hack/tools/go.mod | $(LOCALBIN)
	go build -C hack/tools -o $@ k8s.io/kubernetes/cmd/kubectl
$(ENVTEST_ASSETS)/etcd: hack/tools/go.mod hack/tools/etcd/main.go | $(LOCALBIN)
	go build -C hack/tools -o $@ ./etcd

.PHONY: krew
krew: $(KREW) $(VALIDATE_KREW_MANIFEST) ## Build krew and its manifest validator into bin/.

# krew comes from its own tools module (hack/krew): it needs a client-go far
# older than ours. KREW_VERSION must match hack/krew/go.mod.
$(KREW) $(VALIDATE_KREW_MANIFEST): hack/krew/go.mod | $(LOCALBIN)
	@grep -q 'sigs.k8s.io/krew $(KREW_VERSION)$$' hack/krew/go.mod || { echo "hack/krew/go.mod does not require krew $(KREW_VERSION)"; exit 1; }
	go build -C hack/krew -o $(KREW) sigs.k8s.io/krew/cmd/krew
	go build -C hack/krew -o $(VALIDATE_KREW_MANIFEST) sigs.k8s.io/krew/cmd/validate-krew-manifest

.PHONY: e2e-tools
e2e-tools: $(ENVTEST_ASSETS)/kube-controller-manager $(CADDY) $(TRAEFIK) ## Build what only the end-to-end tests use: kube-controller-manager, Caddy, Traefik.

$(ENVTEST_ASSETS)/kube-controller-manager: hack/tools/go.mod | $(LOCALBIN)
	go build -C hack/tools -o $@ k8s.io/kubernetes/cmd/kube-controller-manager

# Caddy comes from its own tools module (hack/caddy), so that its
# dependencies never meet ours; CADDY_VERSION must match hack/caddy/go.mod.
$(CADDY): hack/caddy/go.mod | $(LOCALBIN)
	@grep -q 'github.com/caddyserver/caddy/v2 $(CADDY_VERSION)$$' hack/caddy/go.mod || { echo "hack/caddy/go.mod does not require Caddy $(CADDY_VERSION)"; exit 1; }
	go build -C hack/caddy -o $@ github.com/caddyserver/caddy/v2/cmd/caddy

# Traefik's go.mod has replace directives (one to a local path), so it is
# built as its own main module: a copy of the module out of the module cache,
# made outside the repository (controller-gen's ./... would read its CRD
# markers). -trimpath keeps the build cache's keys free of the copy's path,
# so the next build reuses this one's work.
$(TRAEFIK): | $(LOCALBIN)
	@set -e; src=$$(mktemp -d)/traefik-$(TRAEFIK_VERSION); \
	dir=$$(go mod download -json github.com/traefik/traefik/v3@$(TRAEFIK_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	[ -n "$$dir" ] || { echo "go mod download found no Traefik $(TRAEFIK_VERSION)"; exit 1; }; \
	cp -r $$dir $$src; chmod -R u+w $$src; \
	echo "go build ./cmd/traefik in a copy of $$dir"; \
	go build -C $$src -trimpath -o $@ ./cmd/traefik; \
	rm -rf $$(dirname $$src)

# go-install-tool builds package $(2) at version $(3) into $(1), a versioned path,
# so a version bump rebuilds and an unchanged one is skipped.
define go-install-tool
@[ -f "$(1)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Building $${package}" ;\
rm -f $(1) ;\
GOBIN=$(LOCALBIN) go install $${package} ;\
mv $(LOCALBIN)/$$(basename "$$(echo "$(2)" | sed 's|/v[0-9]*$$||')") $(1) ;\
}
endef
