package v1alpha1

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
)

// suiteMaxTTL is the operator's --max-ttl in this suite.
const suiteMaxTTL = 30 * 24 * time.Hour

var (
	ctx     context.Context
	cancel  context.CancelFunc
	testEnv *envtest.Environment
	scheme  = testenv.Scheme
	// admin is system:masters; the users below get only what RBAC grants.
	admin             client.Client
	adminCfg          *rest.Config
	alice, bob, carol client.Client
	masters           client.Client
	verifyURL         string
	verifyClient      *http.Client
	rules             = policy.New(policy.Options{
		MaxTTL: suiteMaxTTL, ForbiddenGroups: []string{"cluster-admins"},
		OwnerPolicyName: "apikey-operator-owner-policy", OwnerPolicyBindingName: "apikey-operator-owner-policy-binding",
	})
	teamA              = "team-a"
	aliceGroups        = []string{"team-a", "cluster-admins"}
	carolImpersonation = "impersonate-bob"
)

func TestWebhooks(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Admission Webhook Suite")
}

var _ = BeforeSuite(func() {
	testenv.Log(GinkgoWriter)
	ctx, cancel = context.WithCancel(context.TODO())
	var err error
	testEnv, admin, err = testenv.Start(testenv.Options{Webhooks: true})
	Expect(err).NotTo(HaveOccurred())
	cfg := testEnv.Config
	adminCfg = cfg

	By("loading the tenant roles from config/rbac and creating users")
	applyClusterRoles(filepath.Join(testenv.Root(), "config", "rbac"))
	Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: objectMeta(teamA)})).To(Succeed())
	alice = userClient(envtest.User{Name: "alice", Groups: aliceGroups})
	bob = userClient(envtest.User{Name: "bob", Groups: []string{"team-b"}})
	carol = userClient(envtest.User{Name: "carol", Groups: []string{"gitops"}})
	masters = userClient(envtest.User{Name: "root", Groups: []string{"system:masters"}})
	for _, user := range []string{"alice", "bob", "carol"} {
		bindInTeamA(user, "apikey-editor-role")
	}
	Expect(admin.Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: objectMeta(carolImpersonation),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"bob"}},
			{APIGroups: []string{""}, Resources: []string{"groups"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"team-b"}},
		},
	})).To(Succeed())
	Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: objectMeta("carol-impersonates-bob"),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: carolImpersonation},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "carol"}},
	})).To(Succeed())

	By("running the manager: admission webhooks, controller and auth server")
	opts := &testEnv.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: opts.LocalServingHost, Port: opts.LocalServingPort, CertDir: opts.LocalServingCertDir,
		}),
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(SetupApiKeyWebhookWithManager(mgr, rules)).To(Succeed())
	Expect((&controller.ApiKeyReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("apikey-operator"), Policy: rules,
	}).SetupWithManager(mgr)).To(Succeed())
	auth := authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	Expect(auth.SetupWithManager(mgr)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()

	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(opts.LocalServingCAData)).To(BeTrue())
	verifyClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	verifyURL = fmt.Sprintf("https://%s:%d/verify", opts.LocalServingHost, opts.LocalServingPort)
	Eventually(auth.Index().Synced, 30*time.Second, 50*time.Millisecond).Should(BeTrue())

	By("installing the defaults rule in kube-apiserver, as the operator's flags render it")
	defaults, err := rules.DefaultsRule()
	Expect(err).NotTo(HaveOccurred())
	Expect(testenv.InstallDefaults(ctx, admin, defaults, teamA)).To(Succeed())

	By("waiting until the webhooks answer")
	Eventually(func() error {
		key := &apikeysv1alpha1.ApiKey{}
		key.Namespace, key.GenerateName = teamA, "probe-"
		key.Spec.TTL = &metav1.Duration{Duration: 2 * suiteMaxTTL}
		if err := admin.Create(ctx, key, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "--max-ttl") {
			return fmt.Errorf("the validating webhook has not refused a ttl beyond --max-ttl yet: %v", err)
		}
		return nil
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	By("installing the owner rule in kube-apiserver, as the operator's flags render it")
	_, err = testenv.InstallOwnerRule(ctx, admin, rules, nil)
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() error {
		// kube-apiserver enforces a new policy once its informer has it.
		key := &apikeysv1alpha1.ApiKey{}
		key.Namespace, key.GenerateName = teamA, "probe-"
		key.Spec.Identity = apikeysv1alpha1.IdentityOwner
		key.Spec.Owner = &apikeysv1alpha1.Owner{Username: "nobody"}
		if err := alice.Create(ctx, key, client.DryRunAll); err == nil {
			return fmt.Errorf("the owner policy is not enforced yet")
		}
		return nil
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
})

var _ = AfterSuite(func() {
	cancel()
	Expect(testEnv.Stop()).To(Succeed())
})

func objectMeta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

func userClient(u envtest.User) client.Client {
	GinkgoHelper()
	user, err := testEnv.AddUser(u, nil)
	Expect(err).NotTo(HaveOccurred())
	c, err := client.New(user.Config(), client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	return c
}

func bindInTeamA(user, clusterRole string) {
	GinkgoHelper()
	err := admin.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: teamA, Name: user + "-" + clusterRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	})
	if !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}

// applyClusterRoles creates every ClusterRole in dir's YAML files, so the
// specs exercise the RBAC that ships, not a copy of it.
func applyClusterRoles(dir string) {
	GinkgoHelper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		Expect(err).NotTo(HaveOccurred())
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			role := &rbacv1.ClusterRole{}
			if err := dec.Decode(role); err != nil {
				break
			}
			if role.Kind != "ClusterRole" {
				continue
			}
			Expect(admin.Create(ctx, role)).To(Succeed(), f)
			n++
		}
	}
	Expect(n).To(BeNumerically(">=", 3))
}

// verifyAs asks the auth server's /verify who tok is.
func verifyAs(tok string) authserver.VerifyResponse {
	GinkgoHelper()
	body, err := json.Marshal(authserver.VerifyRequest{Token: tok})
	Expect(err).NotTo(HaveOccurred())
	var answer authserver.VerifyResponse
	Eventually(func(g Gomega) {
		resp, err := verifyClient.Post(verifyURL, "application/json", bytes.NewReader(body))
		g.Expect(err).NotTo(HaveOccurred())
		defer func() { _ = resp.Body.Close() }()
		g.Expect(json.NewDecoder(resp.Body).Decode(&answer)).To(Succeed())
		g.Expect(answer.Valid).To(BeTrue(), answer.Code)
	}, 20*time.Second, 50*time.Millisecond).Should(Succeed())
	return answer
}
