package v1alpha1

import (
	"bytes"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

const (
	mutatingWebhook   = "mapikey-v1alpha1.apikeys.dev"
	validatingWebhook = "vapikey-v1alpha1.apikeys.dev"
)

// webhookCalls is how many times kube-apiserver has called the named
// webhook for operation, by its own count
// (apiserver_admission_webhook_admission_duration_seconds).
func webhookCalls(name, operation string) uint64 {
	GinkgoHelper()
	cs, err := kubernetes.NewForConfig(adminCfg)
	Expect(err).NotTo(HaveOccurred())
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	Expect(err).NotTo(HaveOccurred())
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	Expect(err).NotTo(HaveOccurred())
	var n uint64
	for _, m := range families["apiserver_admission_webhook_admission_duration_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["name"] == name && labels["operation"] == operation {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}

// calls counts both webhooks' calls for one operation.
type calls struct{ mutating, validating uint64 }

func callsFor(operation string) calls {
	GinkgoHelper()
	return calls{webhookCalls(mutatingWebhook, operation), webhookCalls(validatingWebhook, operation)}
}

// Specs here run alone (Serial), and update a key only once the controller
// is done writing it: a conflicting update is admitted before it conflicts,
// and would count.
var _ = Describe("When kube-apiserver calls the webhooks (matchConditions)", Serial, func() {
	It("calls neither webhook for a plain key, nor for an edit that keeps the owner", func() {
		before := callsFor("CREATE")
		key := newKey(apikeysv1alpha1.IdentityKey)
		key.Spec.Scopes = []string{"orders:read"}
		Expect(alice.Create(ctx, key)).To(Succeed())
		Expect(key.Finalizers).To(ContainElement(apikeysv1alpha1.RecordsFinalizer), "the defaults policy ran")
		Expect(key.Spec.Owner).NotTo(BeNil(), "the defaults policy ran")
		Expect(callsFor("CREATE")).To(Equal(before))

		_, key = readyToken(key) // the controller is done writing it
		before = callsFor("UPDATE")
		key.Spec.Scopes = append(key.Spec.Scopes, "orders:write")
		Expect(alice.Update(ctx, key)).To(Succeed())
		Expect(callsFor("UPDATE")).To(Equal(before))
	})

	It("calls the validating webhook for a key with a lifetime or Secret metadata", func() {
		before := callsFor("CREATE")
		withTTL := newKey(apikeysv1alpha1.IdentityKey)
		withTTL.Spec.TTL = &metav1.Duration{Duration: suiteMaxTTL / 2}
		Expect(alice.Create(ctx, withTTL)).To(Succeed())
		withLabels := newKey(apikeysv1alpha1.IdentityKey)
		withLabels.Spec.Secret.Labels = map[string]string{"app": "orders"}
		Expect(alice.Create(ctx, withLabels)).To(Succeed())
		Expect(callsFor("CREATE")).To(Equal(calls{before.mutating, before.validating + 2}))
	})

	It("refuses Secret labels the Secret could not carry, with the validating webhook's message", func() {
		key := newKey(apikeysv1alpha1.IdentityKey)
		key.Spec.Secret.Labels = map[string]string{"not a label": "x"}
		expectDenied(alice.Create(ctx, key), "spec.secret.labels")
	})

	It("refuses an audience with a control character, in the CRD itself (no webhook)", func() {
		before := callsFor("CREATE")
		key := newKey(apikeysv1alpha1.IdentityKey)
		key.Spec.Audiences = []string{"orders-api", "vault\x1b]0;owned\x07"}
		expectDenied(alice.Create(ctx, key), "spec.audiences: an audience may not contain control characters")
		key.Spec.Audiences = []string{"orders-api", "vault\u009b2J"} // C1: a one-character CSI
		expectDenied(alice.Create(ctx, key), "spec.audiences: an audience may not contain control characters")
		key.Spec.Audiences = []string{"orders-api", "vault\x7f"}
		expectDenied(alice.Create(ctx, key), "spec.audiences: an audience may not contain control characters")
		Expect(callsFor("CREATE").validating).To(Equal(before.validating))
	})

	It("puts back an owner an update dropped: the mutating webhook is called for it", func() {
		key := newKey(apikeysv1alpha1.IdentityKey)
		Expect(alice.Create(ctx, key)).To(Succeed())
		owner := key.Spec.Owner
		Expect(owner).NotTo(BeNil())
		_, key = readyToken(key)
		before := callsFor("UPDATE")
		key.Spec.Owner = nil
		Expect(alice.Update(ctx, key)).To(Succeed())
		Expect(key.Spec.Owner).To(Equal(owner))
		Expect(callsFor("UPDATE").mutating).To(Equal(before.mutating + 1))
	})
})
