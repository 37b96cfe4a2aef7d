//go:build e2e

// Package security mounts the attacks that worked against the product, run
// black-box, as specs: a real kube-apiserver and etcd, the real manager
// binary (go build ./cmd) running twice as its own processes, as the
// manager and the auth-only Deployments run in a cluster, each under its own
// ServiceAccount with the RBAC that config/ ships, the admission webhooks
// and admission policies of config/, and tenants, a GitOps controller and a
// wildcard tenant as the other identities. Each spec fails while its attack
// succeeds.
package security

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/apikey-operator/apikey-operator/internal/testenv"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// repoRoot holds go.mod, config/ and cmd/.
var repoRoot = testenv.Root()

// Names that config/default gives the operator's objects and identities.
const (
	operatorNamespace      = "apikey-operator-system"
	managerUser            = "system:serviceaccount:" + operatorNamespace + ":apikey-operator-controller-manager"
	authServerUser         = "system:serviceaccount:" + operatorNamespace + ":apikey-operator-auth-server"
	ownerPolicyName        = "apikey-operator-owner-policy"
	ownerPolicyBindingName = "apikey-operator-owner-policy-binding"
	// The tenants' roles, bound directly: kube-controller-manager runs only
	// the admission policy status controller, so nothing aggregates them
	// into edit and view.
	editorRole = "apikey-operator-apikey-editor-role"
	viewerRole = "apikey-operator-apikey-viewer-role"

	gitopsUser = "system:serviceaccount:argocd:argocd-application-controller"
	// victim is a user nobody in the suite holds a credential for.
	victim      = "platform-admin"
	victimGroup = "platform-admins"
)

// zapMaxVerbosity is the highest --zap-log-level the binary accepts that
// still means "more verbose": the flag sets zap's level to -n as an int8,
// so 128 is V(128) and 129 would wrap around to a level above Fatal.
const zapMaxVerbosity = "128"

var (
	ctx     context.Context
	cancel  context.CancelFunc
	testEnv *envtest.Environment
	// admin is the envtest administrator (system:masters): the cluster
	// admin who sets the stage, never an attacker.
	admin     client.Client
	adminREST kubernetes.Interface
	scheme    = testenv.Scheme
	workDir   string
	// policyStatus is kube-controller-manager, running only the controller
	// that writes admission policies' status.
	policyStatus *utils.Process
	// logDir keeps both binaries' output after the run, for a person to read
	// when a spec fails; it is never printed, since it may hold tokens.
	logDir string

	// manifests is `kustomize build config/default`.
	manifests []*unstructured.Unstructured
	// ownerPolicyEpoch is when the owner admission policy (last) came into
	// force; Owner keys are created only a second after it, because the
	// controller wants the policy in force from before a key's creation.
	ownerPolicyEpoch time.Time

	kubectlPath string

	// The identities.
	managerSA, authServerSA, alice, bob, carol, gitops, mallory *identity

	manager, authOnly *binary
	// webhookHost and webhookPort are where kube-apiserver calls admission,
	// the manager's webhook server; webhookCA verifies its certificate.
	webhookHost string
	webhookPort int
	webhookCA   []byte
	// authURL is the auth-only binary's webhook server, which answers
	// /tokenreview, /auth and /verify; authCA verifies it.
	authURL string
	authCA  []byte

	// secrets are the tokens the suite has handled, by what they belong to.
	// AfterSuite fails if any appears in either binary's output.
	secretsMu sync.Mutex
	secrets   = map[string]string{}
)

func TestSecurity(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Security Suite")
}

var _ = BeforeSuite(func() {
	testenv.Log(GinkgoWriter)
	ctx, cancel = context.WithCancel(context.Background())
	workDir = GinkgoT().TempDir()
	var err error
	logDir, err = os.MkdirTemp("", "apikey-security-logs-")
	Expect(err).NotTo(HaveOccurred())

	By("building the manager binary while the control plane comes up")
	managerBinary := make(chan builtBinary, 1)
	go func() { managerBinary <- buildManager() }()

	By("waiting for the control plane and kustomize that `make` builds")
	assets, err := utils.WaitForControlPlane(30 * time.Minute)
	Expect(err).NotTo(HaveOccurred())
	kubectlPath = filepath.Join(assets, "kubectl")
	kustomize, err := utils.FindTool("KUSTOMIZE", "kustomize-*", 30*time.Minute)
	Expect(err).NotTo(HaveOccurred())
	manifests = kustomizeBuild(kustomize, "config/default")

	By("preparing the auth-only binary's serving certificate")
	authCertDir := filepath.Join(workDir, "auth-certs")
	authCA, err = utils.WriteServingCert(authCertDir)
	Expect(err).NotTo(HaveOccurred())
	authPort, err := utils.FreePort()
	Expect(err).NotTo(HaveOccurred())
	authURL = fmt.Sprintf("https://127.0.0.1:%d", authPort)

	By("starting kube-apiserver with the auth-only binary as its token webhook and the manager as its admission webhooks")
	tokenWebhook, err := testenv.TokenWebhookFlags(workDir, authURL+"/tokenreview", authCA, "v1", time.Second)
	Expect(err).NotTo(HaveOccurred())
	testEnv, admin, err = testenv.Start(testenv.Options{
		AssetsDir: assets, Webhooks: true, WebhookHost: "127.0.0.1", APIServerFlags: tokenWebhook,
	})
	Expect(err).NotTo(HaveOccurred())
	cfg := testEnv.Config
	adminREST, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
	webhook := testEnv.WebhookInstallOptions
	webhookHost, webhookPort, webhookCA = webhook.LocalServingHost, webhook.LocalServingPort, webhook.LocalServingCAData

	By("running kube-controller-manager's admission policy status controller, whose writes date a policy changed in place")
	kcmPath, kcmArgs, err := testenv.ControllerManager(testEnv, workDir, "validatingadmissionpolicy-status-controller")
	Expect(err).NotTo(HaveOccurred())
	policyStatus, err = utils.StartProcess("kube-controller-manager", kcmPath, kcmArgs, &utils.LogBuffer{},
		filepath.Join(logDir, "kube-controller-manager.log"))
	Expect(err).NotTo(HaveOccurred())

	By("applying config/default's namespace, ServiceAccounts, RBAC and admission policies")
	applyShippedManifests()
	Expect(testenv.AwaitDefaults(ctx, admin, "default")).To(Succeed())
	ownerPolicyDated()

	By("provisioning the identities")
	provisionIdentities()

	By("starting the manager and the auth-only binary as their ServiceAccounts")
	built := <-managerBinary
	Expect(built.err).NotTo(HaveOccurred(), "go build ./cmd")
	bin := built.path
	common := []string{
		"--zap-log-level=" + zapMaxVerbosity, "--zap-devel",
		"--namespace=" + operatorNamespace,
		"--usage-flush-interval=1s",
		"--max-ttl=24h",
	}
	manager = newBinary("manager", bin, managerSA, append(slices.Clone(common),
		"--cert-mode=cert-manager",
		"--webhook-cert-path="+webhook.LocalServingCertDir,
		"--webhook-host="+webhookHost,
		fmt.Sprintf("--webhook-port=%d", webhookPort),
	), fmt.Sprintf("https://%s:%d", webhookHost, webhookPort), webhookCA)
	authOnly = newBinary("auth-only", bin, authServerSA, append(slices.Clone(common),
		"--enable-controller=false",
		"--webhook-cert-path="+authCertDir,
		"--webhook-host=127.0.0.1",
		fmt.Sprintf("--webhook-port=%d", authPort),
	), authURL, authCA)
	manager.start()
	authOnly.start()
	manager.waitReady()
	authOnly.waitReady()
})

var _ = AfterSuite(func() {
	By("stopping both binaries, so that their output is complete")
	var stopErrs []error
	for _, b := range []*binary{manager, authOnly} {
		if b != nil {
			stopErrs = append(stopErrs, b.stop())
		}
	}
	if policyStatus != nil {
		stopErrs = append(stopErrs, policyStatus.Stop(10*time.Second))
	}
	By("searching both binaries' complete output for every token the suite handled")
	leaks := leakedTokens()
	if cancel != nil {
		cancel()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
	if logDir != "" {
		GinkgoWriter.Printf("The binaries' complete output is kept in %s\n", logDir)
	}
	Expect(leaks).To(BeEmpty(), "tokens found in the binaries' logs (the logs are in %s)", logDir)
	for _, err := range stopErrs {
		Expect(err).NotTo(HaveOccurred())
	}
})

// On failure, say where the binaries' output is; it is never copied into
// the test output, since a leaked token would travel with it.
var _ = AfterEach(func() {
	if CurrentSpecReport().Failed() && manager != nil {
		AddReportEntry("binary logs", fmt.Sprintf("manager: %s, auth-only: %s, kube-controller-manager: %s",
			manager.logPath, authOnly.logPath, filepath.Join(logDir, "kube-controller-manager.log")))
	}
})

type builtBinary struct {
	path string
	err  error
}

// buildManager builds cmd/ into workDir, or takes $MANAGER_BINARY.
func buildManager() builtBinary {
	if bin := os.Getenv("MANAGER_BINARY"); bin != "" {
		return builtBinary{path: bin}
	}
	bin := filepath.Join(workDir, "manager")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd")
	cmd.Dir = repoRoot
	if output, err := cmd.CombinedOutput(); err != nil {
		return builtBinary{err: fmt.Errorf("%w\n%s", err, output)}
	}
	return builtBinary{path: bin}
}

// kustomizeBuild renders dir (relative to the repository) with kustomize.
func kustomizeBuild(kustomize, dir string) []*unstructured.Unstructured {
	GinkgoHelper()
	cmd := exec.Command(kustomize, "build", dir)
	cmd.Dir = repoRoot
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "kustomize build %s: %s", dir, stderr.String())
	objs, err := utils.DecodeManifests(out)
	Expect(err).NotTo(HaveOccurred())
	Expect(objs).NotTo(BeEmpty())
	return objs
}

// shippedKinds are what the suite takes from config/default, in the order
// it applies them. Deployments, Services, cert-manager objects and webhook
// configurations stay out: the binaries run as processes here, and envtest
// installs the webhooks pointed at the manager's port.
var shippedKinds = []string{
	"Namespace", "ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
	"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
}

// applyShippedManifests server-side applies what config/default ships of
// shippedKinds, as `kubectl apply --server-side` would.
func applyShippedManifests() {
	GinkgoHelper()
	for _, kind := range shippedKinds {
		for _, u := range manifests {
			if u.GetKind() != kind {
				continue
			}
			if kind == "ValidatingAdmissionPolicyBinding" {
				applyPolicyParams(u)
			}
			Expect(applyObject(u)).To(Succeed(), "applying %s %s", kind, u.GetName())
			if strings.HasPrefix(kind, "ValidatingAdmissionPolicy") {
				ownerPolicyEpoch = time.Now()
			}
		}
	}
}

// applyPolicyParams applies the shipped objects a policy binding takes its
// parameters from (spec.paramRef.name), whatever their kind.
func applyPolicyParams(binding *unstructured.Unstructured) {
	GinkgoHelper()
	name, found, _ := unstructured.NestedString(binding.Object, "spec", "paramRef", "name")
	if !found {
		return
	}
	for _, u := range manifests {
		if u.GetName() == name && !slices.Contains(shippedKinds, u.GetKind()) {
			Expect(applyObject(u)).To(Succeed(), "applying %s %s, the parameters of %s", u.GetKind(), name, binding.GetName())
		}
	}
}

func applyObject(u *unstructured.Unstructured) error {
	return admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()),
		client.FieldOwner("security-suite"), client.ForceOwnership)
}

// saGroups are the groups kube-apiserver gives a ServiceAccount of ns.
func saGroups(ns string) []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
}

// shipped returns the object of kind and name that config/default ships, or
// nil.
func shipped(kind, name string) *unstructured.Unstructured {
	for _, u := range manifests {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

// provisionIdentities gives every principal of the suite a client
// certificate (kube-apiserver knows them by name and groups, as it would
// know a ServiceAccount's token or a person's OIDC login) and the rights it
// has in a cluster.
func provisionIdentities() {
	GinkgoHelper()
	managerSA = newIdentity(managerUser, saGroups(operatorNamespace)...)
	authServerSA = newIdentity(authServerUser, saGroups(operatorNamespace)...)
	alice = newIdentity("alice", "system:authenticated", "team-a")
	bob = newIdentity("bob", "system:authenticated", "team-b")
	carol = newIdentity("carol", "system:authenticated", "team-c")
	mallory = newIdentity("mallory", "system:authenticated", "team-m")

	// A GitOps controller holds cluster-admin, as Argo CD's does by default.
	gitops = newIdentity(gitopsUser, saGroups("argocd")...)
	Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: objectMeta("", "argocd-application-controller-cluster-admin"),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{serviceAccountSubject("argocd", "argocd-application-controller")},
	})).To(Succeed())

	// carol may act as bob in group team-b (say, she runs bob's team's
	// automation), and so may hand out a key that is bob.
	Expect(admin.Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: objectMeta("", "impersonate-bob"),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"users"}, ResourceNames: []string{"bob"}, Verbs: []string{"impersonate"}},
			{APIGroups: []string{""}, Resources: []string{"groups"}, ResourceNames: []string{"team-b"}, Verbs: []string{"impersonate"}},
		},
	})).To(Succeed())
	Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: objectMeta("", "carol-impersonates-bob"),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "impersonate-bob"},
		Subjects:   []rbacv1.Subject{userSubject("carol")},
	})).To(Succeed())
}

// newIdentity provisions a user of kube-apiserver and writes its kubeconfig.
func newIdentity(name string, groups ...string) *identity {
	GinkgoHelper()
	user, err := testEnv.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(workDir, "kubeconfig-"+strings.NewReplacer(":", "_").Replace(name))
	Expect(os.WriteFile(path, kubeconfig, 0o600)).To(Succeed())
	cfg := rest.CopyConfig(user.Config())
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	return &identity{name: name, groups: groups, kubeconfig: path, client: c}
}

// identity is one principal: who kube-apiserver says it is, and a client
// and a kubeconfig that act as it.
type identity struct {
	name       string
	groups     []string
	kubeconfig string
	client     client.Client
}

// binary is one run of the manager binary as its own process.
type binary struct {
	name       string
	path       string
	baseArgs   []string
	probeAddr  string
	metricsURL string
	serverURL  string
	serverCA   []byte
	log        *utils.LogBuffer
	logPath    string
	process    *utils.Process
	kubeconfig string
}

func newBinary(name, path string, as *identity, args []string, serverURL string, serverCA []byte) *binary {
	GinkgoHelper()
	port, err := utils.FreePort()
	Expect(err).NotTo(HaveOccurred())
	metricsPort, err := utils.FreePort()
	Expect(err).NotTo(HaveOccurred())
	b := &binary{
		name: name, path: path, serverURL: serverURL, serverCA: serverCA,
		probeAddr:  fmt.Sprintf("127.0.0.1:%d", port),
		metricsURL: fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort),
		log:        &utils.LogBuffer{},
		logPath:    filepath.Join(logDir, name+".log"),
		kubeconfig: as.kubeconfig,
	}
	// Metrics as shipped: HTTPS, behind a TokenReview and a SubjectAccessReview.
	b.baseArgs = append([]string{"--kubeconfig=" + as.kubeconfig, "--health-probe-bind-address=" + b.probeAddr,
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort)}, args...)
	return b
}

// start runs the binary with its base flags and extra.
func (b *binary) start(extra ...string) {
	GinkgoHelper()
	p, err := utils.StartProcess(b.name, b.path, append(slices.Clone(b.baseArgs), extra...), b.log, b.logPath)
	Expect(err).NotTo(HaveOccurred())
	b.process = p
}

// stop sends SIGTERM and waits for the process to end.
func (b *binary) stop() error {
	if b.process == nil {
		return nil
	}
	err := b.process.Stop(30 * time.Second)
	b.process = nil
	return err
}

// restart stops the binary and runs it again with its base flags and
// extra, and waits until it is ready.
func (b *binary) restart(extra ...string) {
	GinkgoHelper()
	Expect(b.stop()).To(Succeed())
	b.start(extra...)
	b.waitReady()
}

// waitReady waits until /readyz answers 200 and the webhook server accepts
// TLS connections, and fails at once if the process has exited.
func (b *binary) waitReady() {
	GinkgoHelper()
	probe := &http.Client{Timeout: 2 * time.Second}
	server := httpsClient(b.serverCA, 2*time.Second)
	Eventually(func(g Gomega) {
		if exited, err := b.process.Exited(); exited {
			StopTrying(fmt.Sprintf("%s exited (%v); its output is in %s", b.name, err, b.logPath)).Now()
		}
		resp, err := probe.Get("http://" + b.probeAddr + "/readyz")
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "%s /readyz", b.name)
		resp, err = server.Get(b.serverURL + "/")
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
}

// httpsClient trusts only ca.
func httpsClient(ca []byte, timeout time.Duration) *http.Client {
	pool := x509CertPool(ca)
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}

// rememberToken notes a token the suite handled, for the leak check.
func rememberToken(owner, tok string) {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	secrets[owner] = tok
}

// leakedTokens lists, without the tokens, which tokens appear in which
// binary's output: raw, base64-encoded or inside a hex dump.
func leakedTokens() []string {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	var leaks []string
	for _, b := range []*binary{manager, authOnly} {
		if b == nil {
			continue
		}
		for _, finding := range utils.FindSecrets(b.log.String(), secrets) {
			leaks = append(leaks, finding+" is in the "+b.name+" log")
		}
	}
	return leaks
}
