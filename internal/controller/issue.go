package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

const (
	// SecretType marks a Secret that holds an API key token.
	SecretType corev1.SecretType = "apikeys.dev/token"
	// SecretTokenKey is the data key of the token in its Secret.
	SecretTokenKey = "token"
	// TokenHashAnnotation on the Secret names the hash of the token it was
	// written with. It lets a restarted controller recognise a delivery it
	// made without ever reading the token back.
	TokenHashAnnotation = "apikeys.dev/token-hash"
	// ManagedByLabel marks Secrets the operator wrote.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "apikey-operator"
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
// A pass that finds no record mints afresh, first deleting a Secret of its
// own left by a pass cut between 1 and 2: nobody can prove what that Secret
// holds, so its token never goes live. Status is never read to decide.
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
	if err := r.clearSecretName(ctx, key, name); err != nil {
		return err
	}

	tok, err := token.Generate(prefixOf(key))
	if err != nil {
		return fmt.Errorf("generating a token: %w", err)
	}
	sum := token.Sum(tok)
	issuedAt := metav1.Time{Time: p.now.Truncate(time.Second)}
	if exp := r.Policy.ExpiryFor(&key.Spec, issuedAt.Time); !exp.IsZero() {
		p.expiresAt = &metav1.Time{Time: exp}
	}
	rec := &apikeysv1alpha1.ApiKeyRecord{
		ObjectMeta: metav1.ObjectMeta{
			Name:   recordNameFor(sum),
			Labels: map[string]string{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)},
		},
		Spec: apikeysv1alpha1.ApiKeyRecordSpec{
			TokenHash:        token.FormatHash(sum),
			TokenHint:        token.Hint(tok),
			TokenFingerprint: token.Fingerprint(tok),
			IssuedAt:         issuedAt,
			SecretName:       name,
		},
	}
	rec.Spec = recordSpecFor(key, rec, p.expiresAt)

	if err := r.deliverSecret(ctx, key, name, tok, sum); err != nil {
		return err
	}
	if err := r.Create(ctx, rec); err != nil {
		return fmt.Errorf("recording token %s: %w", rec.Spec.TokenHint, err)
	}
	p.setRecords(append(p.records, *rec))
	r.Recorder.Eventf(key, nil, corev1.EventTypeNormal, ReasonIssued, "Issue",
		"Issued token %s and delivered it to Secret %s", rec.Spec.TokenHint, name)
	return nil
}

// clearSecretName makes room for a new delivery: a Secret of ours without a
// record holds a token that never went live and is deleted; anyone else's
// Secret stalls the key.
func (r *ApiKeyReconciler) clearSecretName(ctx context.Context, key *apikeysv1alpha1.ApiKey, name string) error {
	existing := secretMeta()
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: name}, existing)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	case !metav1.IsControlledBy(existing, key):
		return stalled(ReasonSecretNameTaken,
			"Secret %q already exists and does not belong to this ApiKey: delete it or set spec.secret.name to another name", name)
	}
	err = r.Delete(ctx, existing, client.Preconditions{UID: &existing.UID})
	return client.IgnoreNotFound(err)
}

// deliverSecret writes the token into a new, immutable Secret owned by key.
// Errors carry only the API server's reason, checked never to hold the token.
func (r *ApiKeyReconciler) deliverSecret(ctx context.Context, key *apikeysv1alpha1.ApiKey, name, tok string, sum [32]byte) error {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   key.Namespace,
			Labels:      map[string]string{},
			Annotations: map[string]string{},
		},
		Type:      SecretType,
		Immutable: ptr.To(true),
		Data:      map[string][]byte{SecretTokenKey: []byte(tok)},
	}
	for k, v := range key.Spec.Secret.Labels {
		secret.Labels[k] = v
	}
	for k, v := range key.Spec.Secret.Annotations {
		secret.Annotations[k] = v
	}
	secret.Labels[ManagedByLabel] = ManagedByValue
	secret.Annotations[TokenHashAnnotation] = token.FormatHash(sum)
	if err := controllerutil.SetControllerReference(key, secret, r.Scheme()); err != nil {
		return err
	}

	err := r.Create(ctx, secret)
	if err == nil {
		return nil
	}
	msg := string(apierrors.ReasonForError(err))
	if apierrors.IsInvalid(err) {
		if detail := err.Error(); !strings.Contains(detail, tok) {
			msg = detail
		}
		return stalled(ReasonInvalidSpec, "spec.secret: the token's Secret was refused: %s", msg)
	}
	return fmt.Errorf("delivering the token to Secret %s/%s: %s", key.Namespace, name, msg)
}

// secretNameFor is where key's next token is delivered; a delivered token's
// Secret is named by its record.
func secretNameFor(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Secret.Name != "" {
		return key.Spec.Secret.Name
	}
	return key.Name + "-token"
}
