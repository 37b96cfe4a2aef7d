package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// issue makes sure the key has a delivered token. Issuance is a sequence of
// writes that a crash can cut anywhere, so it is ordered to be resumable,
// and so that only what the operator itself wrote decides which hash lives:
//
//  1. deliver: the Secret is created with the token (and its hash as an
//     annotation); the Secret's name is the lock, two passes cannot both
//     create it;
//  2. record: the ApiKeyRecord is created from the token in memory. Only
//     the operator can write records, so a record exists only for a token
//     the operator minted and delivered;
//  3. status reports the record (the deferred patch).
//
// With the finalizer set by admission, that is three writes besides the
// user's create, and no read of the API server: the records come from the
// cache plus those this process created and the cache does not show yet.
// Only when the Secret's name is taken does issuance ask the API server:
// whose Secret it is (someone else's stalls the key), then for a record the
// cache may not show (then there is nothing to issue). A Secret of its own
// without a record was left by
// a pass cut between 1 and 2: nobody can prove what it holds, so it is
// deleted and its token never goes live. Status is never read to decide.
func (r *ApiKeyReconciler) issue(ctx context.Context, p *pass) error {
	if p.issued() {
		return nil
	}
	return r.mint(ctx, p)
}

// mint generates a token, delivers it and records its hash. The token lives
// only in this function and the Secret it writes.
func (r *ApiKeyReconciler) mint(ctx context.Context, p *pass) error {
	key := p.key
	name := secretNameFor(key)
	var issuance int64
	for i := range p.records {
		issuance = max(issuance, p.records[i].Spec.Issuance)
	}
	tok, rec, err := r.newRecord(p, name, issuance+1)
	if err != nil {
		return err
	}
	secretUID, err := r.deliverSecret(ctx, key, name, tok, rec)
	if apierrors.IsAlreadyExists(err) {
		if err := r.clearSecretName(ctx, p, name); err != nil {
			return err
		}
		if p.issued() {
			return nil
		}
		secretUID, err = r.deliverSecret(ctx, key, name, tok, rec)
	}
	if err != nil {
		return err
	}
	rec.Spec.SecretUID = string(secretUID)
	if err := r.Create(ctx, rec); err != nil {
		return fmt.Errorf("recording token %s: %w", rec.Spec.TokenHint, err)
	}
	r.created.add(key.UID, rec, p.now)
	p.setRecords(append(p.records, *rec))
	// No Event: Ready=True with reason Issued says the same, and an Event
	// would be a fifth API write per key (the target allows four: docs/benchmarks.md).
	p.delivered = true
	return nil
}

// recordedAfterAll asks the API server for the key's records, when the
// Secret's name is taken and the cache showed none: if the key has a live
// record after all, there is nothing to issue.
func (r *ApiKeyReconciler) recordedAfterAll(ctx context.Context, p *pass) (bool, error) {
	records, err := r.listRecords(ctx, p.key, true)
	if err != nil {
		return false, err
	}
	p.setRecords(records)
	if !p.issued() {
		return false, nil
	}
	p.expiresAt = r.expiryOf(p.key, p.live)
	return true, nil
}

// newRecord mints a token for key, issued now, and returns it with the
// record that will hold its hash. The record keeps the rotation request in
// force, so that only a later change of the annotation rotates again.
func (r *ApiKeyReconciler) newRecord(p *pass, secretName string, issuance int64) (string, *apikeysv1alpha1.ApiKeyRecord, error) {
	key := p.key
	tok, err := token.Generate(prefixOf(key))
	if err != nil {
		return "", nil, fmt.Errorf("generating a token: %w", err)
	}
	issuedAt := p.now.Truncate(time.Second)
	p.expiresAt = nil
	if exp := r.Policy.TokenExpiry(&key.Spec, issuedAt); !exp.IsZero() {
		p.expiresAt = &metav1.Time{Time: exp}
	}
	return tok, RecordFor(key, tok, issuedAt, secretName, issuance, p.expiresAt), nil
}

// RecordFor is the record the controller writes for tok, the issuance-th
// token of key, issued at issuedAt (whole seconds) into the Secret
// secretName and expiring at expiresAt (nil: never). Programs that write
// keys straight into a cluster (hack/bench) use it, so that the controller
// finds their records as it would have written them; they set
// spec.secretUID to the UID of the Secret they write.
func RecordFor(key *apikeysv1alpha1.ApiKey, tok string, issuedAt time.Time, secretName string, issuance int64,
	expiresAt *metav1.Time) *apikeysv1alpha1.ApiKeyRecord {
	sum := token.Sum(tok)
	rec := &apikeysv1alpha1.ApiKeyRecord{
		ObjectMeta: metav1.ObjectMeta{
			Name:   apikeysv1alpha1.RecordName(sum),
			Labels: map[string]string{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)},
		},
		Spec: apikeysv1alpha1.ApiKeyRecordSpec{
			TokenHash:        token.FormatHash(sum),
			TokenHint:        token.Hint(tok),
			TokenFingerprint: token.Fingerprint(tok),
			IssuedAt:         metav1.NewTime(issuedAt),
			SecretName:       secretName,
			Issuance:         issuance,
			RotateRequest:    rotateRequestOf(key),
		},
	}
	rec.Spec = recordSpecFor(key, rec, expiresAt)
	return rec
}

// clearSecretName makes room for a new delivery, once the Secret's name was
// found taken: anyone else's Secret stalls the key (without listing the
// records, which a tenant could otherwise have the operator do at each
// touch of such a key); if the key has a live record after all
// (recordedAfterAll), there is nothing to issue; else a Secret of ours
// holds a token that never went live, and is deleted.
func (r *ApiKeyReconciler) clearSecretName(ctx context.Context, p *pass, name string) error {
	existing := secretMeta()
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: p.key.Namespace, Name: name}, existing)
	switch {
	case apierrors.IsNotFound(err):
		existing = nil
	case err != nil:
		return err
	case !metav1.IsControlledBy(existing, p.key):
		return stalled(apikeysv1alpha1.ReasonSecretNameTaken,
			"Secret %q already exists and does not belong to this ApiKey: delete it or set spec.secret.name to another name", name)
	}
	if recorded, err := r.recordedAfterAll(ctx, p); err != nil || recorded || existing == nil {
		return err
	}
	err = r.Delete(ctx, existing, client.Preconditions{UID: &existing.UID})
	return client.IgnoreNotFound(err)
}

// deliverSecret writes the token into a new Secret owned by key, and
// returns the Secret's UID, which the record keeps: owner references can be
// forged by anyone who may create Secrets, a UID cannot. The Secret is not
// immutable: a rotation writes the next token into it, and kubelet
// refreshes only mutable Secrets. Its data is read back only to tell
// whether a rotated token reached it (holdsToken); what decides is the
// record. Errors never hold the token (secretWriteError).
func (r *ApiKeyReconciler) deliverSecret(ctx context.Context, key *apikeysv1alpha1.ApiKey, name, tok string,
	rec *apikeysv1alpha1.ApiKeyRecord) (types.UID, error) {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   key.Namespace,
			Labels:      map[string]string{},
			Annotations: deliveryAnnotations(key, rec),
		},
		Type: apikeysv1alpha1.SecretType,
		Data: map[string][]byte{apikeysv1alpha1.SecretTokenKey: []byte(tok)},
	}
	for k, v := range key.Spec.Secret.Labels {
		secret.Labels[k] = v
	}
	secret.Labels[apikeysv1alpha1.ManagedByLabel] = apikeysv1alpha1.ManagedByValue
	if err := controllerutil.SetControllerReference(key, secret, r.Scheme()); err != nil {
		return "", err
	}

	err := r.Create(ctx, secret)
	if err == nil || apierrors.IsAlreadyExists(err) {
		return secret.UID, err
	}
	return "", secretWriteError(err, tok, "the token's Secret")
}

// deliveryAnnotations are the Secret's annotations for rec's token: the
// user's own, then the operator's, which tell which token the Secret holds.
func deliveryAnnotations(key *apikeysv1alpha1.ApiKey, rec *apikeysv1alpha1.ApiKeyRecord) map[string]string {
	a := make(map[string]string, len(key.Spec.Secret.Annotations)+3)
	for k, v := range key.Spec.Secret.Annotations {
		a[k] = v
	}
	a[apikeysv1alpha1.TokenHashAnnotation] = rec.Spec.TokenHash
	a[apikeysv1alpha1.TokenHintAnnotation] = rec.Spec.TokenHint
	a[apikeysv1alpha1.IssuedAtAnnotation] = rec.Spec.IssuedAt.UTC().Format(time.RFC3339)
	return a
}

// secretNameFor is where key's next token is delivered; a delivered token's
// Secret is named by its record.
func secretNameFor(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Secret.Name != "" {
		return key.Spec.Secret.Name
	}
	return apikeysv1alpha1.DefaultSecretName(key.Name)
}
