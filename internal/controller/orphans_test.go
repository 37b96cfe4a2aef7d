package controller

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

var _ = Describe("Records left while the operator was down", func() {
	It("are deleted when it starts, if their key is gone; the others stay", func() {
		op := runOperator(1, -1)
		kept, orphaned := newCrashKey(), newCrashKey()
		var records []apikeysv1alpha1.ApiKeyRecord
		for _, key := range []*apikeysv1alpha1.ApiKey{kept, orphaned} {
			Eventually(func() []apikeysv1alpha1.ApiKeyRecord { return recordsOf(key) }, timeout, interval).Should(HaveLen(1))
		}
		records = recordsOf(orphaned)
		op.stop()

		By("deleting a key without its finalizer while no operator runs")
		stripped := fetch(orphaned)
		patch := client.MergeFrom(stripped.DeepCopy())
		stripped.Finalizers = nil
		Expect(k8sClient.Patch(ctx, stripped, patch)).To(Succeed())
		Expect(k8sClient.Delete(ctx, stripped)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(orphaned), &apikeysv1alpha1.ApiKey{}))
		}, timeout, interval).Should(BeTrue())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&records[0]), &apikeysv1alpha1.ApiKeyRecord{})).
			To(Succeed(), "with no operator running, the record stays")

		By("starting the operator again")
		op = runOperator(1, -1)
		defer op.stop()
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(&records[0]), &apikeysv1alpha1.ApiKeyRecord{}))
		}, timeout, interval).Should(BeTrue(), "the orphan's record is collected at start")
		Consistently(func() []apikeysv1alpha1.ApiKeyRecord { return recordsOf(kept) }, "2s", interval).Should(HaveLen(1))
	})
})
