//go:build e2e

package e2e

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// gcTimeout bounds what waits on kube-controller-manager: its garbage
// collector syncs a monitor per resource before it collects anything, and
// the namespace controller walks every resource type of a namespace.
const gcTimeout = 90 * time.Second

var _ = Describe("garbage collection and namespace deletion by kube-controller-manager", func() {
	It("deletes an ApiKey's Secret through its owner reference", func() {
		tok, key := createReadyKey(&apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace()}})
		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}, secret)).To(Succeed())
		Expect(secret.OwnerReferences).To(ContainElement(HaveField("UID", key.UID)))

		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		Eventually(func() int { return forwardAuth(tok, "") }, time.Second, 10*time.Millisecond).Should(Equal(401),
			"the token of a deleting ApiKey is refused within a second")
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(key), &apikeysv1alpha1.ApiKey{})
		}, timeout, interval).Should(Satisfy(apierrors.IsNotFound), "the controller lets the ApiKey go")
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{})
		}, gcTimeout, interval).Should(Satisfy(apierrors.IsNotFound), "the garbage collector deletes the Secret")
		Expect(recordsOf(key.UID)).To(BeEmpty())
	})

	It("deletes a namespace of 50 keys, refusing every token from the start", func() {
		ns := newNamespace()
		keys, tokens := createReadyKeys(ns, 50)

		deleteNamespace(ns)
		deleted := time.Now()
		Eventually(func() []string { return acceptedTokens(tokens) }, time.Second, 10*time.Millisecond).Should(BeEmpty(),
			"tokens of a namespace being deleted still accepted")
		AddReportEntry("namespace deletion: every one of 50 tokens refused", time.Since(deleted).Round(time.Millisecond).String())

		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
		}, gcTimeout, interval).Should(Satisfy(apierrors.IsNotFound), "the namespace is deleted")
		AddReportEntry("namespace of 50 keys deleted", time.Since(deleted).Round(time.Millisecond).String())
		for _, key := range keys {
			Expect(recordsOf(key.UID)).To(BeEmpty(), "records of %s", key.Name)
		}
		Expect(acceptedTokens(tokens)).To(BeEmpty())
	})

	It("holds a namespace of keys while the operator is down, its tokens already refused", func() {
		ns := newNamespace()
		keys, tokens := createReadyKeys(ns, 3)

		By("stopping the controller, and kube-controller-manager so that nothing deletes the ApiKeys yet")
		stopController()
		DeferCleanup(func() {
			if stopController == nil {
				startController()
			}
		})
		kcm.stop()
		DeferCleanup(func() {
			if kcm.running == nil {
				kcm.start()
			}
		})

		By("deleting the namespace: its tokens are refused before any ApiKey in it is deleted")
		deleteNamespace(ns)
		Eventually(func() []string { return acceptedTokens(tokens) }, time.Second, 10*time.Millisecond).Should(BeEmpty())
		for _, key := range keys {
			got := &apikeysv1alpha1.ApiKey{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
			Expect(got.DeletionTimestamp).To(BeNil(), "this spec means to show the namespace alone refusing tokens")
		}

		By("starting kube-controller-manager: the ApiKeys are deleted, and wait for the operator's finalizer")
		kcm.start()
		Eventually(func(g Gomega) {
			for _, key := range keys {
				got := &apikeysv1alpha1.ApiKey{}
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
				g.Expect(got.DeletionTimestamp).NotTo(BeNil(), "%s is being deleted", key.Name)
				g.Expect(got.Finalizers).To(ContainElement(apikeysv1alpha1.RecordsFinalizer))
			}
		}, gcTimeout, interval).Should(Succeed())
		namespace := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, namespace)).To(Succeed())
		Expect(namespace.Status.Phase).To(Equal(corev1.NamespaceTerminating))
		for _, key := range keys {
			Expect(recordsOf(key.UID)).NotTo(BeEmpty(), "with the operator down, %s's records stay", key.Name)
		}
		Expect(acceptedTokens(tokens)).To(BeEmpty())

		By("starting the operator again: the namespace completes")
		startController()
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
		}, gcTimeout, interval).Should(Satisfy(apierrors.IsNotFound), "the namespace is deleted")
		for _, key := range keys {
			Expect(recordsOf(key.UID)).To(BeEmpty(), "records of %s", key.Name)
		}
	})
})

// createReadyKeys applies n keys in ns at once and waits until every one is
// Ready, returning them and their tokens (never printed).
func createReadyKeys(ns string, n int) ([]*apikeysv1alpha1.ApiKey, []string) {
	GinkgoHelper()
	keys := make([]*apikeysv1alpha1.ApiKey, n)
	for i := range keys {
		keys[i] = &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("key-%02d", i)}}
		Expect(k8sClient.Create(ctx, keys[i])).To(Succeed())
	}
	tokens := make([]string, n)
	for i, key := range keys {
		tokens[i], keys[i] = awaitReady(key)
	}
	Expect(acceptedTokens(tokens)).To(HaveLen(n), "every new token is accepted")
	return keys, tokens
}

// acceptedTokens names, by position (never by value), the tokens the auth
// server accepts.
func acceptedTokens(tokens []string) []string {
	GinkgoHelper()
	var accepted []string
	for i, tok := range tokens {
		if forwardAuth(tok, "") == 200 {
			accepted = append(accepted, fmt.Sprint("token ", i))
		}
	}
	return accepted
}

// recordsOf lists the ApiKeyRecords issued for the ApiKey with uid.
func recordsOf(uid types.UID) []apikeysv1alpha1.ApiKeyRecord {
	GinkgoHelper()
	list := &apikeysv1alpha1.ApiKeyRecordList{}
	Expect(k8sClient.List(ctx, list, client.MatchingLabels{apikeysv1alpha1.ApiKeyUIDLabel: string(uid)})).To(Succeed())
	return list.Items
}

func deleteNamespace(name string) {
	GinkgoHelper()
	Expect(k8sClient.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
}
