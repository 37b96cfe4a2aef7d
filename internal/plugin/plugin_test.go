package plugin

import (
	"bytes"
	"context"
	"maps"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
)

// keyName is a fresh ApiKey name.
func keyName() string { return "key-" + rand.String(6) }

// fetchKey reads an ApiKey from the API server.
func fetchKey(ns, name string) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	key := &apikeysv1alpha1.ApiKey{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, key)).To(Succeed())
	return key
}

// readyStatus is the status of key's Ready condition ("" if absent).
func readyStatus(ns, name string) func() metav1.ConditionStatus {
	return func() metav1.ConditionStatus {
		key := &apikeysv1alpha1.ApiKey{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, key); err != nil {
			return ""
		}
		c := meta.FindStatusCondition(key.Status.Conditions, apikeysv1alpha1.ConditionReady)
		if c != nil && c.ObservedGeneration == key.Generation {
			return c.Status
		}
		return ""
	}
}

// tokenOf reads a key's token straight from its Secret, as the specs'
// reference for what the plugin may and may not print.
func tokenOf(key *apikeysv1alpha1.ApiKey) string {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}, secret)).To(Succeed())
	tok := string(secret.Data[apikeysv1alpha1.SecretTokenKey])
	Expect(tok).NotTo(BeEmpty())
	return tok
}

// created runs `create name -n ns` and expects success.
func created(ns, name string, flags ...string) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	r := kubectlApikey(append([]string{"create", name, "-n", ns}, flags...)...)
	Expect(r.code).To(Equal(0), r.stderr)
	return fetchKey(ns, name)
}

var _ = Describe("kubectl apikey", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	Describe("create", func() {
		It("creates the key, waits until it is Ready and prints how to get the token, never the token", func() {
			name := keyName()
			r := kubectlApikey("create", name, "-n", ns, "--scopes", "deployments:write,images:read",
				"--audiences", "registry", "--ttl", "2h", "--description", "deploys from CI", "--prefix", "ro_pat")
			Expect(r.code).To(Equal(0), r.stderr)

			key := fetchKey(ns, name)
			Expect(key.Spec.Scopes).To(ConsistOf("deployments:write", "images:read"))
			Expect(key.Spec.Audiences).To(ConsistOf("registry"))
			Expect(key.Spec.TTL.Duration).To(Equal(2 * time.Hour))
			Expect(key.Spec.Description).To(Equal("deploys from CI"))
			Expect(key.Spec.Prefix).To(Equal("ro_pat"))
			Expect(readyStatus(ns, name)()).To(Equal(metav1.ConditionTrue), "create returned before the key was Ready")

			Expect(r.stdout).To(ContainSubstring("apikey/%s created in namespace %s and Ready", name, ns))
			Expect(r.stdout).To(ContainSubstring(key.Status.TokenHint))
			Expect(r.stdout).To(ContainSubstring("apikey:%s:%s", ns, name))
			Expect(r.stdout).To(ContainSubstring("kubectl apikey get-token %s -n %s", name, ns))
			Expect(r.stdout).To(MatchRegexp(`expires:\s+\S+Z \(in \d+m\)`))

			tok := tokenOf(key)
			Expect(tok).To(HavePrefix("ro_pat_"))
			Expect(r.stdout + r.stderr).NotTo(ContainSubstring(tok))
		})

		It("sets the Secret name, the Owner identity and an absolute expiry from flags", func() {
			name := keyName()
			expiresAt := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Second)
			r := kubectlApikey("create", name, "-n", ns, "--owner-identity", "--secret-name", "my-token",
				"--expires-at", expiresAt.Format(time.RFC3339), "--wait=false")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("kubectl apikey get-token %s -n %s", name, ns))

			key := fetchKey(ns, name)
			Expect(key.Spec.Identity).To(Equal(apikeysv1alpha1.IdentityOwner))
			Expect(key.Spec.Secret.Name).To(Equal("my-token"))
			Expect(key.Spec.ExpiresAt.Time).To(BeTemporally("==", expiresAt))
		})

		It("exits non-zero with the condition's message when the operator stalls the key", func() {
			name := keyName()
			r := kubectlApikey("create", name, "-n", ns, "--ttl", "48h")
			Expect(r.code).NotTo(Equal(0))

			stalled := meta.FindStatusCondition(fetchKey(ns, name).Status.Conditions, apikeysv1alpha1.ConditionStalled)
			Expect(stalled).NotTo(BeNil())
			Expect(stalled.Reason).To(Equal(apikeysv1alpha1.ReasonInvalidExpiry))
			Expect(r.stderr).To(ContainSubstring("Stalled (%s): %s", apikeysv1alpha1.ReasonInvalidExpiry, stalled.Message))
			Expect(r.stderr).To(ContainSubstring("kubectl apikey revoke %s -n %s", name, ns))
			Expect(r.stdout).NotTo(ContainSubstring("Ready"))
		})

		It("exits non-zero when the key is not Ready within --timeout, saying where to look", func() {
			name := keyName()
			r := kubectlApikey("create", name, "-n", ns, "--timeout", "1ms")
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("apikey %s/%s was created but is not Ready after 1ms", ns, name))
			Expect(r.stderr).To(ContainSubstring("kubectl describe apikey %s -n %s", name, ns))
			fetchKey(ns, name)
		})

		It("refuses a name that is taken and bad flag values, saying what to do", func() {
			name := keyName()
			created(ns, name, "--wait=false")

			r := kubectlApikey("create", name, "-n", ns)
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("already exists"))

			r = kubectlApikey("create", keyName(), "-n", ns, "--expires-at", "tomorrow")
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("RFC 3339"))

			r = kubectlApikey("create", keyName(), "-n", ns, "--ttl", "1h", "--expires-at", "2030-01-01T00:00:00Z")
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("ttl"))

			r = kubectlApikey("create", "-n", ns)
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("needs exactly one ApiKey NAME"))
		})
	})

	Describe("get-token", func() {
		It("prints only the token, and with --delete removes the Secret while the key stays Ready", func() {
			name := keyName()
			key := created(ns, name)
			tok := tokenOf(key)

			r := kubectlApikey("get-token", name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(Equal(tok + "\n"))
			Expect(r.stderr).To(BeEmpty())

			r = kubectlApikey("get-token", name, "-n", ns, "--delete")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(Equal(tok + "\n"))
			Expect(r.stderr).To(ContainSubstring("stays valid"))
			Expect(r.stderr).NotTo(ContainSubstring(tok))

			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Status.SecretName}, &corev1.Secret{})
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Secret is still there: %v", err)
			Eventually(func() *metav1.Time { return fetchKey(ns, name).Status.SecretDeletedAt }, timeout, interval).NotTo(BeNil())
			Expect(readyStatus(ns, name)()).To(Equal(metav1.ConditionTrue))

			r = kubectlApikey("get-token", name, "-n", ns)
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(ContainSubstring("the token was delivered once and its Secret is gone (status.secretDeletedAt"))
			Expect(r.stderr).To(ContainSubstring("kubectl apikey rotate %s -n %s --wait", name, ns))

			// As the message says, a rotation delivers a new token to the same Secret.
			r = kubectlApikey("rotate", name, "-n", ns, "--wait")
			Expect(r.code).To(Equal(0), r.stderr)
			r = kubectlApikey("get-token", name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).NotTo(Equal(tok + "\n"))
			Expect(r.stdout).To(Equal(tokenOf(fetchKey(ns, name)) + "\n"))
		})

		It("with --delete keeps the Secret if a new token arrived in it after it was read", func() {
			name := keyName()
			key := created(ns, name)
			tok := tokenOf(key)
			base, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: scheme})
			Expect(err).NotTo(HaveOccurred())
			rotated := false
			c := interceptor.NewClient(base, interceptor.Funcs{
				Delete: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
					if _, ok := obj.(*corev1.Secret); ok && !rotated {
						// A rotation writes the next token into the Secret
						// between get-token's read and its delete.
						rotated = true
						next := []byte(`{"data":{"` + apikeysv1alpha1.SecretTokenKey + `":"bmV4dA=="}}`)
						if err := cl.Patch(ctx, obj.DeepCopyObject().(client.Object), client.RawPatch(types.MergePatchType, next)); err != nil {
							return err
						}
					}
					return cl.Delete(ctx, obj, opts...)
				},
			})
			var out, errOut bytes.Buffer
			s := &session{client: c, namespace: ns, streams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}}
			err = s.getToken(ctx, name, true)
			Expect(rotated).To(BeTrue(), "get-token never tried to delete the Secret")
			Expect(err).To(MatchError(ContainSubstring("changed after it was read")))
			Expect(strings.Contains(err.Error(), tok)).To(BeFalse(), "the error carries the token")
			// By hash: a failure must not print the token.
			Expect(out.String()).To(HaveSuffix("\n"))
			Expect(token.Hash(strings.TrimSuffix(out.String(), "\n"))).To(Equal(token.Hash(tok)), "stdout does not hold exactly the token read")
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Status.SecretName}, &corev1.Secret{})).
				To(Succeed(), "the Secret holding a token nobody has read was deleted")
		})

		It("says the Secret is gone even before the operator has noticed", func() {
			name := keyName()
			key := created(ns, name)
			Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Status.SecretName}})).To(Succeed())

			r := kubectlApikey("get-token", name, "-n", ns)
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("its Secret is gone"))
		})

		It("prints the token the operator issued: its fingerprint matches the key's status", func() {
			name := keyName()
			key := created(ns, name)
			genuine := tokenOf(key)
			Expect(key.Status.TokenFingerprint).To(Equal(token.Fingerprint(genuine)),
				"the operator has not written status.tokenFingerprint for the key it issued")

			r := kubectlApikey("get-token", name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(Equal(genuine + "\n"))
		})

		It("refuses a token the operator did not issue, even in a Secret forged to look like its own", func() {
			name := keyName()
			key := created(ns, name)
			genuine := tokenOf(key)

			// A namespace editor replaces the Secret: same name, type and
			// controller, the hash annotation rewritten for their own token.
			forged, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
			Expect(err).NotTo(HaveOccurred())
			delivered := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Status.SecretName}, delivered)).To(Succeed())
			Expect(k8sClient.Delete(ctx, delivered)).To(Succeed())
			replacement := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: ns, Name: delivered.Name, Labels: delivered.Labels,
					Annotations: maps.Clone(delivered.Annotations), OwnerReferences: delivered.OwnerReferences,
				},
				Type: delivered.Type,
				Data: map[string][]byte{apikeysv1alpha1.SecretTokenKey: []byte(forged)},
			}
			replacement.Annotations[apikeysv1alpha1.TokenHashAnnotation] = token.Hash(forged)
			Expect(k8sClient.Create(ctx, replacement)).To(Succeed())

			// Once the operator has seen the Secret back, the fingerprint
			// check is what refuses; every answer before that refuses too.
			var answers []result
			Eventually(func() string {
				r := kubectlApikey("get-token", name, "-n", ns)
				answers = append(answers, r)
				return r.stderr
			}, timeout, interval).Should(And(ContainSubstring("status.tokenFingerprint"), ContainSubstring("refusing to print it")))
			answers = append(answers, kubectlApikey("get-token", name, "-n", ns, "--delete"))
			for _, r := range answers {
				Expect(r.code).NotTo(Equal(0))
				Expect(r.stdout).To(BeEmpty())
				for _, part := range []string{forged, forged[strings.LastIndexByte(forged, '_')+1:], genuine} {
					Expect(r.stdout+r.stderr).NotTo(ContainSubstring(part), "get-token printed a token")
				}
			}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(replacement), &corev1.Secret{})).To(Succeed(),
				"--delete removed a Secret whose token it refused to print")
		})

		It("prints an Owner key's token only to its owner, not to another editor who asks for it by name", func() {
			// Alice created my-pat; bob, an editor of the namespace too,
			// deleted it and created his own my-pat. Alice's get-token must
			// not hand her bob's token, which would let her act as bob.
			remove, err := testenv.InstallOwnerRule(ctx, k8sClient, testPolicy, nil)
			if remove != nil {
				DeferCleanup(remove)
			}
			Expect(err).NotTo(HaveOccurred())
			owned := func(name, owner string) *apikeysv1alpha1.ApiKey {
				GinkgoHelper()
				key := &apikeysv1alpha1.ApiKey{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
					Spec: apikeysv1alpha1.ApiKeySpec{Identity: apikeysv1alpha1.IdentityOwner,
						Owner: &apikeysv1alpha1.Owner{Username: owner}},
				}
				Expect(k8sClient.Create(ctx, key)).To(Succeed())
				Eventually(readyStatus(ns, name), timeout, interval).Should(Equal(metav1.ConditionTrue))
				return fetchKey(ns, name)
			}
			bobs := owned(keyName(), "bob")
			r := kubectlApikey("get-token", bobs.Name, "-n", ns)
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(ContainSubstring(`apikey %s/%s is a personal key of "bob", not yours ("admin")`, ns, bobs.Name))
			Expect(r.stderr).NotTo(ContainSubstring(tokenOf(bobs)))

			// The owner gets it: the suite's admin its own key, and one who
			// acts as bob (with the admin's rights) bob's.
			mine := owned(keyName(), "admin")
			r = kubectlApikey("get-token", mine.Name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(Equal(tokenOf(mine) + "\n"))
			r = kubectlApikey("get-token", bobs.Name, "-n", ns, "--as", "bob", "--as-group", "system:masters")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(Equal(tokenOf(bobs) + "\n"))
		})

		It("fails clearly for a key that does not exist", func() {
			r := kubectlApikey("get-token", "nope", "-n", ns)
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(ContainSubstring(`apikey "nope" not found in namespace %q`, ns))
		})
	})

	Describe("list", func() {
		It("prints a row per key, and a NAMESPACE column with -A", func() {
			other := newNamespace()
			first, second, elsewhere := keyName(), keyName(), keyName()
			created(ns, first)
			created(ns, second)
			created(other, elsewhere)
			Expect(kubectlApikey("suspend", second, "-n", ns).code).To(Equal(0))

			r := kubectlApikey("list", "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			Expect(lines).To(HaveLen(3))
			Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "READY", "IDENTITY", "USER", "HINT", "EXPIRES", "LAST-USED", "AGE"}))
			Expect(r.stdout).NotTo(ContainSubstring(elsewhere))
			row := rowOf(lines, first)
			Expect(row[:5]).To(Equal([]string{first, "True", "Key", "apikey:" + ns + ":" + first, fetchKey(ns, first).Status.TokenHint}))
			Expect(row[5:7]).To(Equal([]string{"in", "23h"}))
			Expect(row[7]).To(Equal("<none>"))
			Eventually(func() string {
				return rowOf(strings.Split(kubectlApikey("list", "-n", ns).stdout, "\n"), second)[1]
			}, timeout, interval).Should(Equal("False"))

			r = kubectlApikey("list", "-A")
			Expect(r.code).To(Equal(0), r.stderr)
			lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
			Expect(strings.Fields(lines[0])[:2]).To(Equal([]string{"NAMESPACE", "NAME"}))
			Expect(rowOf(lines, first)[0]).To(Equal(ns))
			Expect(rowOf(lines, elsewhere)[0]).To(Equal(other))
		})

		It("says so when there are no keys", func() {
			r := kubectlApikey("list", "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(ContainSubstring("No ApiKeys found in %s namespace", ns))
		})
	})

	Describe("suspend and resume", func() {
		It("patch spec.suspended and the key's Ready follows", func() {
			name := keyName()
			created(ns, name)

			r := kubectlApikey("suspend", name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("apikey/%s suspended", name))
			Expect(fetchKey(ns, name).Spec.Suspended).To(BeTrue())
			Eventually(readyStatus(ns, name), timeout, interval).Should(Equal(metav1.ConditionFalse))
			Expect(meta.FindStatusCondition(fetchKey(ns, name).Status.Conditions, apikeysv1alpha1.ConditionReady).Reason).
				To(Equal(apikeysv1alpha1.ReasonSuspended))

			r = kubectlApikey("suspend", name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("already suspended (unchanged)"))

			r = kubectlApikey("resume", name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("apikey/%s resumed", name))
			Expect(fetchKey(ns, name).Spec.Suspended).To(BeFalse())
			Eventually(readyStatus(ns, name), timeout, interval).Should(Equal(metav1.ConditionTrue))
		})
	})

	Describe("revoke", func() {
		It("deletes the key and with --wait returns once it is gone", func() {
			name := keyName()
			created(ns, name)

			r := kubectlApikey("revoke", name, "-n", ns, "--wait")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("apikey/%s revoked", name))
			Expect(r.stdout).To(ContainSubstring("apikey/%s is gone", name))
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &apikeysv1alpha1.ApiKey{})
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the ApiKey is still there: %v", err)

			r = kubectlApikey("revoke", name, "-n", ns)
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("not found"))
		})
	})

	Describe("rotate", func() {
		It("with --wait delivers a new token to the same Secret and refuses the old one at once", func() {
			name := keyName()
			key := created(ns, name)
			before := kubectlApikey("get-token", name, "-n", ns)
			Expect(before.code).To(Equal(0), before.stderr)

			r := kubectlApikey("rotate", name, "-n", ns, "--wait")
			Expect(r.code).To(Equal(0), r.stderr)

			rotated := fetchKey(ns, name)
			value := rotated.Annotations[apikeysv1alpha1.RotateAnnotation]
			Expect(value).NotTo(BeEmpty())
			Expect(rotated.Status.LastRotateRequest).To(Equal(value), "--wait returned before the operator acted on the request")
			Expect(rotated.Status.SecretName).To(Equal(key.Status.SecretName))
			Expect(rotated.Status.TokenHint).NotTo(Equal(key.Status.TokenHint))
			Expect(rotated.Status.PreviousKeys).To(BeEmpty())
			Expect(r.stdout).To(ContainSubstring("apikeys.dev/rotate=%s", value))
			Expect(r.stdout).To(ContainSubstring("apikey/%s rotated.", name))
			Expect(r.stdout).To(MatchRegexp(`hint:\s+%s`, regexp.QuoteMeta(rotated.Status.TokenHint)))
			Expect(r.stdout).To(MatchRegexp(`secret:\s+%s`, rotated.Status.SecretName))
			Expect(r.stdout).To(ContainSubstring("previous: %s refused from now on", key.Status.TokenHint))
			Expect(r.stdout).To(ContainSubstring("kubectl apikey get-token %s -n %s", name, ns))

			after := kubectlApikey("get-token", name, "-n", ns)
			Expect(after.code).To(Equal(0), after.stderr)
			Expect(after.stdout).NotTo(Equal(before.stdout))
			tok := strings.TrimSuffix(after.stdout, "\n")
			rec := &apikeysv1alpha1.ApiKeyRecord{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: rotated.Status.RecordName}, rec)).To(Succeed())
			Expect(rec.Spec.TokenHash).To(Equal(token.Hash(tok)), "get-token printed a token other than the live record's")
			Expect(r.stdout + r.stderr).NotTo(ContainSubstring(tok))
		})

		It("with --grace sets spec.rotation.gracePeriod and keeps the old token listed until then", func() {
			name := keyName()
			key := created(ns, name)

			r := kubectlApikey("rotate", name, "-n", ns, "--grace", "1h", "--wait")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("keeps working for 1h0m0s"))
			Expect(r.stdout).To(ContainSubstring("set by --grace; it stays for later rotations"))

			rotated := fetchKey(ns, name)
			Expect(rotated.Spec.Rotation).NotTo(BeNil())
			Expect(rotated.Spec.Rotation.GracePeriod.Duration).To(Equal(time.Hour))
			Expect(rotated.Status.PreviousKeys).To(HaveLen(1))
			prev := rotated.Status.PreviousKeys[0]
			Expect(prev.TokenHint).To(Equal(key.Status.TokenHint))
			Expect(prev.ValidUntil.Time).To(BeTemporally("~", rotated.Status.IssuedAt.Add(time.Hour), time.Second))
			Expect(r.stdout).To(ContainSubstring("previous: %s accepted until %s",
				prev.TokenHint, prev.ValidUntil.UTC().Format(time.RFC3339)))
		})

		It("without --wait returns after the request, and the operator rotates", func() {
			name := keyName()
			key := created(ns, name)

			r := kubectlApikey("rotate", name, "-n", ns)
			Expect(r.code).To(Equal(0), r.stderr)
			value := fetchKey(ns, name).Annotations[apikeysv1alpha1.RotateAnnotation]
			at, err := time.Parse(time.RFC3339Nano, value)
			Expect(err).NotTo(HaveOccurred())
			Expect(at).To(BeTemporally("~", time.Now(), time.Minute))
			Expect(r.stdout).To(ContainSubstring("apikey/%s rotation requested: apikeys.dev/rotate=%s", name, value))
			Expect(r.stdout).To(ContainSubstring("grace: 0s (spec.rotation.gracePeriod): the current token %s is refused", key.Status.TokenHint))
			Expect(r.stdout).To(ContainSubstring("Secret %s", key.Status.SecretName))
			Expect(r.stdout).NotTo(ContainSubstring("rotated."))

			Eventually(func(g Gomega) {
				k := fetchKey(ns, name)
				g.Expect(k.Status.LastRotateRequest).To(Equal(value))
				g.Expect(k.Status.TokenHint).NotTo(Equal(key.Status.TokenHint))
			}, timeout, interval).Should(Succeed())
		})

		It("with --wait rotates a suspended key, which stays suspended", func() {
			name := keyName()
			key := created(ns, name)
			Expect(kubectlApikey("suspend", name, "-n", ns).code).To(Equal(0))
			Eventually(readyStatus(ns, name), timeout, interval).Should(Equal(metav1.ConditionFalse))

			r := kubectlApikey("rotate", name, "-n", ns, "--wait")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("It stays suspended"))
			rotated := fetchKey(ns, name)
			Expect(rotated.Status.TokenHint).NotTo(Equal(key.Status.TokenHint))
			Expect(meta.FindStatusCondition(rotated.Status.Conditions, apikeysv1alpha1.ConditionReady).Reason).
				To(Equal(apikeysv1alpha1.ReasonSuspended))
		})

		It("with --wait exits non-zero with the condition when the key becomes Stalled", func() {
			name := keyName()
			key := created(ns, name)
			// Someone else's Secret takes the delivered Secret's name: the
			// operator will not rotate into it.
			Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Status.SecretName}})).To(Succeed())
			Eventually(func() *metav1.Time { return fetchKey(ns, name).Status.SecretDeletedAt }, timeout, interval).NotTo(BeNil())
			foreign := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Status.SecretName},
				StringData: map[string]string{"password": "not-a-token"},
			}
			Expect(k8sClient.Create(ctx, foreign)).To(Succeed())

			r := kubectlApikey("rotate", name, "-n", ns, "--wait")
			Expect(r.code).NotTo(Equal(0))
			stalled := meta.FindStatusCondition(fetchKey(ns, name).Status.Conditions, apikeysv1alpha1.ConditionStalled)
			Expect(stalled).NotTo(BeNil())
			Expect(stalled.Reason).To(Equal(apikeysv1alpha1.ReasonSecretNameTaken))
			Expect(r.stderr).To(ContainSubstring("Stalled (%s): %s", apikeysv1alpha1.ReasonSecretNameTaken, stalled.Message))
			Expect(r.stderr).To(ContainSubstring("No new token was issued (the live token is still %s)", key.Status.TokenHint))
			Expect(r.stdout).NotTo(ContainSubstring("rotated."))
			Expect(fetchKey(ns, name).Status.TokenHint).To(Equal(key.Status.TokenHint))

			got := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), got)).To(Succeed())
			Expect(got.Data).To(Equal(map[string][]byte{"password": []byte("not-a-token")}), "the operator wrote into a Secret it does not own")

			// With the cause gone, the next rotate waits past the old stall,
			// which no status update clears before the operator acts.
			Expect(k8sClient.Delete(ctx, foreign)).To(Succeed())
			r = kubectlApikey("rotate", name, "-n", ns, "--wait")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stderr).To(ContainSubstring("Note: apikey/%s is Stalled (%s)", name, apikeysv1alpha1.ReasonSecretNameTaken))
			Expect(r.stdout).To(ContainSubstring("apikey/%s rotated.", name))
			rotated := fetchKey(ns, name)
			Expect(rotated.Status.TokenHint).NotTo(Equal(key.Status.TokenHint))
			Expect(kubectlApikey("get-token", name, "-n", ns).stdout).To(Equal(tokenOf(rotated) + "\n"))
		})

		It("with --wait exits non-zero when --timeout passes, saying the request stays", func() {
			name := keyName()
			created(ns, name)
			r := kubectlApikey("rotate", name, "-n", ns, "--wait", "--timeout", "1ms")
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("apikey %s/%s was not rotated within 1ms", ns, name))
			Expect(r.stderr).To(ContainSubstring("stays: the operator acts on it once it can"))
		})

		It("refuses a bad --grace before patching anything", func() {
			name := keyName()
			created(ns, name)
			key := fetchKey(ns, name)
			patch := client.MergeFrom(key.DeepCopy())
			key.Spec.Rotation = &apikeysv1alpha1.Rotation{Every: &metav1.Duration{Duration: 2 * time.Hour}}
			Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())

			for args, want := range map[string]string{
				"--grace=-1h":  "--grace must be 0 or more",
				"--grace=2h":   "--grace 2h0m0s must be shorter than apikey " + ns + "/" + name + "'s spec.rotation.every (2h0m0s)",
				"--grace=soon": `invalid argument "soon" for "--grace" flag`,
			} {
				r := kubectlApikey("rotate", name, "-n", ns, args, "--wait")
				Expect(r.code).NotTo(Equal(0), args)
				Expect(r.stderr).To(ContainSubstring(want), args)
				Expect(r.stdout).To(BeEmpty(), args)
			}
			unchanged := fetchKey(ns, name)
			Expect(unchanged.Annotations).NotTo(HaveKey(apikeysv1alpha1.RotateAnnotation))
			Expect(unchanged.Spec.Rotation.GracePeriod).To(BeNil())
			Expect(unchanged.Generation).To(Equal(key.Generation))
		})
	})

	Describe("--namespace and --context", func() {
		It("act where kubectl would: -n over the context's namespace over default", func() {
			nsA, nsB := ns, newNamespace()
			kubeconfig := writeKubeconfig(map[string]string{"ctx-a": nsA, "ctx-b": nsB}, "ctx-a")
			inA, inB, explicit := keyName(), keyName(), keyName()

			Expect(kubectlApikeyWith(kubeconfig, "create", inA, "--wait=false").code).To(Equal(0))
			Expect(kubectlApikeyWith(kubeconfig, "--context", "ctx-b", "create", inB, "--wait=false").code).To(Equal(0))
			Expect(kubectlApikeyWith(kubeconfig, "--context", "ctx-b", "create", explicit, "--namespace", nsA, "--wait=false").code).To(Equal(0))
			fetchKey(nsA, inA)
			fetchKey(nsB, inB)
			fetchKey(nsA, explicit)

			r := kubectlApikeyWith(kubeconfig, "--context", "ctx-b", "list")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring(inB))
			Expect(r.stdout).NotTo(ContainSubstring(inA))

			r = kubectlApikeyWith(kubeconfig, "--context", "no-such-context", "list")
			Expect(r.code).NotTo(Equal(0))
			Expect(r.stderr).To(ContainSubstring("no-such-context"))
		})
	})

	Describe("--help", func() {
		It("shows each command's description and examples", func() {
			root := NewRootCommand(genericiooptions.NewTestIOStreamsDiscard())
			var checked []string
			for _, cmd := range root.Commands() {
				if cmd.Name() == "help" || cmd.Name() == "completion" {
					continue
				}
				Expect(cmd.Example).NotTo(BeEmpty(), cmd.Name())
				r := kubectlApikey(cmd.Name(), "--help")
				Expect(r.code).To(Equal(0), r.stderr)
				Expect(r.stdout).To(ContainSubstring(cmd.Long), cmd.Name())
				Expect(r.stdout).To(ContainSubstring(cmd.Example), cmd.Name())
				Expect(r.stdout).To(ContainSubstring("kubectl apikey " + cmd.Name()))
				checked = append(checked, cmd.Name())
			}
			Expect(checked).To(ConsistOf("create", "get-token", "list", "suspend", "resume", "revoke", "rotate", "version"))
		})
	})
})

var _ = DescribeTable("relative times in the table",
	func(expiresAt, issuedAt, lastUsedAt *metav1.Time, wantExpires, wantLastUsed string) {
		key := &apikeysv1alpha1.ApiKey{Status: apikeysv1alpha1.ApiKeyStatus{ExpiresAt: expiresAt, IssuedAt: issuedAt, LastUsedAt: lastUsedAt}}
		Expect(expiresIn(key, tableNow)).To(Equal(wantExpires))
		Expect(ago(key.Status.LastUsedAt, tableNow)).To(Equal(wantLastUsed))
	},
	Entry("expires in 29 days, used 5 minutes ago", at(29*24*time.Hour), at(-time.Hour), at(-5*time.Minute), "in 29d", "5m ago"),
	Entry("expired 5 hours ago, never used", at(-5*time.Hour), at(-29*time.Hour), nil, "expired 5h ago", "<none>"),
	Entry("issued without expiry", nil, at(-time.Hour), nil, "never", "<none>"),
	Entry("not issued yet", nil, nil, nil, "<none>", "<none>"),
)

// tableNow pins the clock of the relative-time table.
var tableNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// at is tableNow moved by d.
func at(d time.Duration) *metav1.Time { return &metav1.Time{Time: tableNow.Add(d)} }

var _ = DescribeTable("tokenFrom decides by the key's status.tokenFingerprint",
	func(fingerprint func(tok string) string, wantErr string) {
		tok, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
		Expect(err).NotTo(HaveOccurred())
		key := &apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ci", UID: "key-uid"},
			Status:     apikeysv1alpha1.ApiKeyStatus{TokenFingerprint: fingerprint(tok)},
		}
		isController := true
		owner := metav1.OwnerReference{APIVersion: "apikeys.dev/v1alpha1", Kind: "ApiKey", Name: "ci", UID: "key-uid", Controller: &isController}
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "team-a", Name: "ci-token",
				Annotations:     map[string]string{apikeysv1alpha1.TokenHashAnnotation: token.Hash(tok)},
				OwnerReferences: []metav1.OwnerReference{owner},
			},
			Type: apikeysv1alpha1.SecretType,
			Data: map[string][]byte{apikeysv1alpha1.SecretTokenKey: []byte(tok)},
		}
		got, err := tokenFrom(secret, key)
		if wantErr == "" {
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(tok))
			return
		}
		Expect(err).To(MatchError(ContainSubstring(wantErr)))
		Expect(got).To(BeEmpty())
		Expect(err.Error()).NotTo(ContainSubstring(tok[strings.LastIndexByte(tok, '_')+1:]))
	},
	Entry("matching fingerprint", token.Fingerprint, ""),
	Entry("no fingerprint in status", func(string) string { return "" }, "has no status.tokenFingerprint"),
	Entry("another token's fingerprint", func(string) string { return token.Fingerprint("ak_another") }, "no rotation appears to be under way"),
)

var _ = DescribeTable("tokenFrom asks to retry while a rotation is under way",
	func(underWay func(*apikeysv1alpha1.ApiKey, *corev1.Secret), wantErr string) {
		tok, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
		Expect(err).NotTo(HaveOccurred())
		issuedAt := metav1.NewTime(tableNow)
		key := &apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ci", UID: "key-uid"},
			Status: apikeysv1alpha1.ApiKeyStatus{
				TokenFingerprint: token.Fingerprint("ak_previous"), IssuedAt: &issuedAt, LastRotateRequest: "first",
			},
		}
		isController := true
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "team-a", Name: "ci-token",
				Annotations: map[string]string{
					apikeysv1alpha1.TokenHashAnnotation: token.Hash(tok),
					apikeysv1alpha1.IssuedAtAnnotation:  tableNow.Format(time.RFC3339),
				},
				OwnerReferences: []metav1.OwnerReference{{Kind: "ApiKey", Name: "ci", UID: "key-uid", Controller: &isController}},
			},
			Type: apikeysv1alpha1.SecretType,
			Data: map[string][]byte{apikeysv1alpha1.SecretTokenKey: []byte(tok)},
		}
		underWay(key, secret)
		_, err = tokenFrom(secret, key)
		Expect(err).To(MatchError(ContainSubstring(wantErr)))
		Expect(err).To(MatchError(ContainSubstring("refusing to print it")))
	},
	Entry("a rotate request status does not report yet",
		func(k *apikeysv1alpha1.ApiKey, _ *corev1.Secret) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "second"}
		}, "status disagree: the Secret's token does not match status.tokenFingerprint"),
	Entry("a Secret issued after the token status reports",
		func(_ *apikeysv1alpha1.ApiKey, s *corev1.Secret) {
			s.Annotations[apikeysv1alpha1.IssuedAtAnnotation] = tableNow.Add(time.Hour).Format(time.RFC3339)
		}, "Retry in a moment"),
	Entry("neither: the Secret was replaced",
		func(k *apikeysv1alpha1.ApiKey, _ *corev1.Secret) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "first"}
		}, "no rotation appears to be under way"),
)

var _ = DescribeTable("rotate --wait checks that the token changed",
	func(before, after, wantErr string) {
		key := func(fingerprint string) *apikeysv1alpha1.ApiKey {
			return &apikeysv1alpha1.ApiKey{
				ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ci"},
				Status:     apikeysv1alpha1.ApiKeyStatus{TokenFingerprint: fingerprint, TokenHint: "ak_7Qz4…", LastRotateRequest: "now"},
			}
		}
		err := unchangedToken(key(before), key(after))
		if wantErr == "" {
			Expect(err).NotTo(HaveOccurred())
			return
		}
		Expect(err).To(MatchError(ContainSubstring(wantErr)))
	},
	Entry("a new token", "3f9a0c7e51d2b846", "a41c09be7d3e5f20", ""),
	Entry("the first token of a key that had none", "", "a41c09be7d3e5f20", ""),
	Entry("the same token: the request was recorded, nothing rotated", "3f9a0c7e51d2b846", "3f9a0c7e51d2b846",
		"the live token is still ak_7Qz4…, issued before it: no new token was delivered"),
)

// rowOf returns the fields of the table row whose NAME (or, with -A, second
// column) is name; empty if there is none.
func rowOf(lines []string, name string) []string {
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) > 1 && (f[0] == name || f[1] == name) {
			return f
		}
	}
	return make([]string, 9)
}
