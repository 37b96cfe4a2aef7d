package controller

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
)

func objectMeta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

// newNamespace creates a namespace of its own for one spec.
func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// newKey returns an ApiKey with a random name in ns.
func newKey(ns string) *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "key-" + rand.String(6)}}
}

// fetch re-reads key from the API server.
func fetch(key *apikeysv1alpha1.ApiKey) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	got := &apikeysv1alpha1.ApiKey{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
	return got
}

// condition returns key's condition of type typ, or nil.
func condition(key *apikeysv1alpha1.ApiKey, typ string) *metav1.Condition {
	return meta.FindStatusCondition(key.Status.Conditions, typ)
}

// waitReady waits until key is Ready for its current generation and returns it.
func waitReady(key *apikeysv1alpha1.ApiKey) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	return waitCondition(key, apikeysv1alpha1.ConditionReady, metav1.ConditionTrue, apikeysv1alpha1.ReasonIssued)
}

// waitCondition waits until key has condition typ with status and reason,
// observed at its current generation.
func waitCondition(key *apikeysv1alpha1.ApiKey, typ string, status metav1.ConditionStatus, reason string) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	var got *apikeysv1alpha1.ApiKey
	Eventually(func(g Gomega) {
		got = &apikeysv1alpha1.ApiKey{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		c := condition(got, typ)
		g.Expect(c).NotTo(BeNil(), "condition %s", typ)
		g.Expect(c.Status).To(Equal(status), "condition %s: %s", typ, c.Message)
		g.Expect(c.Reason).To(Equal(reason))
	}, timeout, interval).Should(Succeed())
	return got
}

// readToken reads key's token from its Secret, as a user would, and
// remembers it for the suite's leak check. It never prints the token.
func readToken(key *apikeysv1alpha1.ApiKey) (string, *corev1.Secret) {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}, secret)).To(Succeed())
	tok := string(secret.Data[apikeysv1alpha1.SecretTokenKey])
	Expect(tok).NotTo(BeEmpty(), "Secret has no token")
	seenTokens.add(tok)
	return tok, secret
}

// recordsOf lists the records issued for key, straight from the API server.
func recordsOf(key *apikeysv1alpha1.ApiKey) []apikeysv1alpha1.ApiKeyRecord {
	GinkgoHelper()
	var list apikeysv1alpha1.ApiKeyRecordList
	Expect(k8sClient.List(ctx, &list, client.MatchingLabels{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)})).To(Succeed())
	return list.Items
}

// expectOneLiveToken checks the heart of issuance: the Secret's token is
// well-formed, and its hash is that of the key's one and only record.
func expectOneLiveToken(key *apikeysv1alpha1.ApiKey) (string, apikeysv1alpha1.ApiKeyRecord) {
	GinkgoHelper()
	tok, secret := readToken(key)
	_, err := token.Parse(tok)
	Expect(err).NotTo(HaveOccurred(), "the delivered token does not parse")
	Expect(secret.Type).To(Equal(apikeysv1alpha1.SecretType))
	Expect(metav1.IsControlledBy(secret, key)).To(BeTrue(), "the Secret is not owned by its ApiKey")

	records := recordsOf(key)
	Expect(records).To(HaveLen(1), "want exactly one record for the key")
	rec := records[0]
	Expect(rec.Name).To(Equal(key.Status.RecordName))
	Expect(rec.Spec.TokenHash).To(Equal(token.Hash(tok)), "the record does not hold the hash of the delivered token")
	Expect(secret.Annotations[apikeysv1alpha1.TokenHashAnnotation]).To(Equal(rec.Spec.TokenHash))
	Expect(rec.Spec.SecretUID).To(Equal(string(secret.UID)), "the record does not name the Secret it was delivered to")
	Expect(key.Status.TokenHint).To(Equal(token.Hint(tok)))
	return tok, rec
}

// expectNoLeak searches everything the operator wrote or logged for each
// token (and its secret body), failing without ever printing one.
func expectNoLeak(tokens []string) {
	GinkgoHelper()
	places := map[string]string{"manager logs": managerLogs.String()}

	var evs eventsv1.EventList
	Expect(k8sClient.List(ctx, &evs)).To(Succeed())
	places["events.k8s.io events"] = mustJSON(evs)
	var coreEvs corev1.EventList
	Expect(k8sClient.List(ctx, &coreEvs)).To(Succeed())
	places["core events"] = mustJSON(coreEvs)
	var keys apikeysv1alpha1.ApiKeyList
	Expect(k8sClient.List(ctx, &keys)).To(Succeed())
	places["ApiKeys (spec and status)"] = mustJSON(keys)
	var records apikeysv1alpha1.ApiKeyRecordList
	Expect(k8sClient.List(ctx, &records)).To(Succeed())
	places["ApiKeyRecords"] = mustJSON(records)

	Expect(places["manager logs"]).NotTo(BeEmpty(), "no logs were captured: the leak check would prove nothing")
	for i, tok := range tokens {
		parts, err := token.Parse(tok)
		Expect(err).NotTo(HaveOccurred())
		for where, text := range places {
			if strings.Contains(text, tok) || strings.Contains(text, parts.Body) {
				Fail(fmt.Sprintf("token #%d (%s) appears in %s", i, token.Hint(tok), where))
			}
		}
	}
}

func mustJSON(v any) string {
	GinkgoHelper()
	b, err := json.Marshal(v)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// issuedWithSecretGone issues a key in ns, deletes the Secret its token
// was delivered to and waits until status says so; it returns the key as
// it then is and the deleted Secret's name.
func issuedWithSecretGone(ns string) (*apikeysv1alpha1.ApiKey, string) {
	GinkgoHelper()
	key := newKey(ns)
	Expect(k8sClient.Create(ctx, key)).To(Succeed())
	key = waitReady(key)
	_, secret := readToken(key)
	Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(fetch(key).Status.SecretDeletedAt).NotTo(BeNil())
	}, timeout, interval).Should(Succeed())
	return fetch(key), secret.Name
}
