//go:build e2e

package e2e

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
)

var _ = Describe("kube-apiserver with the auth server as its token webhook", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("lets kubectl act as the key, under ordinary RBAC, until the key is suspended or deleted", func() {
		tok, key := createReadyKey(&apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns}})
		user := "apikey:" + ns + ":" + key.Name
		kubeconfig := userKubeconfig(cfg.Host, cfg.CAData, tok)

		By("kubectl auth whoami shows the key's identity")
		Expect(whoami(kubeconfig)).To(Equal(user))

		By("RBAC granted to that user allows a get; an ungranted verb is forbidden")
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-configmaps"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "key-reads-configmaps"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-configmaps"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
		})).To(Succeed())
		Eventually(func() error {
			_, _, err := kubectl(kubeconfig, "-n", ns, "get", "configmap", "settings")
			return err
		}, timeout, interval).Should(Succeed())
		_, stderr, err := kubectl(kubeconfig, "-n", ns, "delete", "configmap", "settings")
		Expect(err).To(HaveOccurred())
		Expect(stderr).To(ContainSubstring("forbidden"))

		By("suspension refuses the token within the webhook cache TTL")
		setSuspended(key, true)
		Eventually(whoami, timeout, interval).WithArguments(kubeconfig).Should(ContainSubstring("Unauthorized"))
		setSuspended(key, false)
		Eventually(whoami, timeout, interval).WithArguments(kubeconfig).Should(Equal(user))

		By("deleting the ApiKey revokes the token")
		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		Eventually(whoami, timeout, interval).WithArguments(kubeconfig).Should(ContainSubstring("Unauthorized"))
	})

	It("accepts a rotated key's new token at once, and its old one until validUntil and kube-apiserver's token cache end", func() {
		oldTok, key := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns},
			Spec: apikeysv1alpha1.ApiKeySpec{
				Rotation: &apikeysv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: 3 * time.Second}},
			},
		})
		user := "apikey:" + ns + ":" + key.Name
		// kube-apiserver does not see the old token before the rotation: a
		// cached answer would then stand in for the auth server's during the
		// grace period, and the check below must reach the auth server.

		By("rotating with a 3s grace period")
		newTok, rotated := rotate(key, "e2e-kube-apiserver")
		validUntil := previousKeyUntil(rotated, oldTok)
		newKubeconfig := userKubeconfig(cfg.Host, cfg.CAData, newTok)
		oldKubeconfig := userKubeconfig(cfg.Host, cfg.CAData, oldTok)

		By("kubectl accepts the new token on its first try")
		Expect(whoami(newKubeconfig)).To(Equal(user))

		By("kubectl accepts the old token before its validUntil")
		Expect(time.Until(validUntil)).To(BeNumerically(">", graceMargin), "too little of the grace period is left to check it")
		firstUsed := time.Now()
		Expect(whoami(oldKubeconfig)).To(Equal(user))

		By("kubectl refuses the old token after its validUntil, once kube-apiserver's token cache lets go")
		late := awaitRefusal(validUntil, apiserverTokenCacheTTL+time.Second, func() bool {
			out := whoami(oldKubeconfig)
			if out == user {
				return true
			}
			Expect(out).To(ContainSubstring("Unauthorized"))
			return false
		})
		AddReportEntry("kube-apiserver: the old token after validUntil", fmt.Sprintf("%s, and %s after kubectl first used it",
			late, validUntil.Add(late.refused).Sub(firstUsed).Round(time.Millisecond)))
		Expect(whoami(newKubeconfig)).To(Equal(user))
	})

	It("refuses an expired key", func() {
		tok, _ := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns},
			Spec:       apikeysv1alpha1.ApiKeySpec{TTL: &metav1.Duration{Duration: 3 * time.Second}},
		})
		kubeconfig := userKubeconfig(cfg.Host, cfg.CAData, tok)
		Expect(whoami(kubeconfig)).To(HavePrefix("apikey:"))
		Eventually(whoami, timeout, interval).WithArguments(kubeconfig).Should(ContainSubstring("Unauthorized"))
	})

	It("refuses a key limited to other audiences", func() {
		tok, _ := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns},
			Spec:       apikeysv1alpha1.ApiKeySpec{Audiences: []string{"shortener"}},
		})
		Expect(whoami(userKubeconfig(cfg.Host, cfg.CAData, tok))).To(ContainSubstring("Unauthorized"))
		status := forwardAuth(tok, "?audience=shortener")
		Expect(status).To(Equal(200))
	})

	It("answers a kube-apiserver that speaks TokenReview v1beta1", func() {
		tok, key := createReadyKey(&apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns}})
		beta, _, err := testenv.Start(testenv.Options{APIServerFlags: tokenWebhookFlags("v1beta1")})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(beta.Stop)
		Expect(whoami(userKubeconfig(beta.Config.Host, beta.Config.CAData, tok))).To(Equal("apikey:" + ns + ":" + key.Name))
	})

	It("records when the key was last used, off the request path", func() {
		tok, key := createReadyKey(&apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns}})
		Expect(key.Status.LastUsedAt).To(BeNil())
		before := time.Now().Truncate(time.Second)
		status := forwardAuth(tok, "")
		Expect(status).To(Equal(200))
		Eventually(func(g Gomega) {
			got := &apikeysv1alpha1.ApiKey{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
			g.Expect(got.Status.LastUsedAt).NotTo(BeNil())
			g.Expect(got.Status.LastUsedAt.Time).To(BeTemporally(">=", before))
		}, timeout, interval).Should(Succeed())
	})
})

var _ = Describe("Revocation while the controller is down", func() {
	It("refuses a deleting key's token although nobody removed its record", func() {
		// No controller watches this namespace: issue the key by hand, as a
		// controller would have before it went down.
		direct, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		r := &controller.ApiKeyReconciler{Client: direct, APIReader: direct, Recorder: events.NewFakeRecorder(10), Policy: policy.New(policy.Options{MaxTTL: time.Hour})}
		key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: noControllerNamespace, Name: "orphaned"}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)}
		_, err = r.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Get(ctx, req.NamespacedName, key)).To(Succeed())
		tok := readToken(key)
		Eventually(func() int { return forwardAuth(tok, "") }, timeout, interval).Should(Equal(200))

		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		Eventually(func() int { return forwardAuth(tok, "") }, timeout, interval).Should(Equal(401))
		var records apikeysv1alpha1.ApiKeyRecordList
		Expect(k8sClient.List(ctx, &records, client.MatchingLabels{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)})).To(Succeed())
		Expect(records.Items).To(HaveLen(1), "the record is still there: the refusal came from the ApiKey's deletion alone")

		By("the controller, back, finishes the deletion")
		_, err = r.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, req.NamespacedName, key))).To(BeTrue())
	})
})
