package controller

import (
	"context"
	"fmt"
	"strings"

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
// writes that a crash can cut anywhere, so it is ordered to be resumable:
//
//  1. reserve: status.recordName (from the token's hash) is written with an
//     optimistic lock, so two passes can never both mint;
//  2. deliver: the Secret is created with the token and its hash annotation;
//  3. record: the ApiKeyRecord is created (syncRecords);
//  4. status.secretName is written (the deferred patch): delivered.
//
// A pass that finds a reservation without delivery checks the Secret: if it
// holds the reserved hash, issuance resumes at step 3; otherwise nobody can
// read that token and a fresh one is minted.
func (r *ApiKeyReconciler) issue(ctx context.Context, p *pass) error {
	st := &p.key.Status
	if p.issued() {
		return nil
	}
	if st.RecordName != "" {
		holds, err := r.secretHolds(ctx, p.key, hashOfRecordName(st.RecordName))
		if err != nil {
			return err
		}
		if holds {
			st.SecretName = secretNameFor(p.key)
			return nil
		}
	}
	return r.mint(ctx, p)
}

// mint generates a token, reserves it in status and delivers it. The token
// lives only in this function and the Secret it writes.
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

	reserved := key.DeepCopy()
	clearIssuance(&reserved.Status)
	reserved.Status.RecordName = recordNameFor(sum)
	reserved.Status.TokenHint = token.Hint(tok)
	reserved.Status.IssuedAt = &metav1.Time{Time: p.now.Truncate(1e9)}
	if exp := r.Policy.ExpiryFor(&key.Spec, reserved.Status.IssuedAt.Time); !exp.IsZero() {
		reserved.Status.ExpiresAt = &metav1.Time{Time: exp}
	}
	if err := r.Status().Patch(ctx, reserved, client.MergeFromWithOptions(p.base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("reserving a new token in status: %w", err)
	}
	p.key.Status = reserved.Status
	p.key.ObjectMeta = reserved.ObjectMeta
	p.base = reserved.DeepCopy()
	p.expiresAt = reserved.Status.ExpiresAt

	if err := r.deliverSecret(ctx, key, name, tok, sum); err != nil {
		return err
	}
	p.key.Status.SecretName = name
	r.Recorder.Eventf(key, nil, corev1.EventTypeNormal, ReasonIssued, "Issue",
		"Issued token %s and delivered it to Secret %s", p.key.Status.TokenHint, name)
	return nil
}

// clearSecretName makes room for a new delivery: a Secret of ours that holds a
// token which never went live is deleted; anyone else's Secret stalls the key.
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

// secretHolds reports, from the API server rather than the cache, whether the
// key's Secret exists, belongs to key and was written with the token whose
// hash is tokenHash.
func (r *ApiKeyReconciler) secretHolds(ctx context.Context, key *apikeysv1alpha1.ApiKey, tokenHash string) (bool, error) {
	m := secretMeta()
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: secretNameFor(key)}, m)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return metav1.IsControlledBy(m, key) && m.GetAnnotations()[TokenHashAnnotation] == tokenHash, nil
}

// secretNameFor is where key's token is delivered.
func secretNameFor(key *apikeysv1alpha1.ApiKey) string {
	if key.Status.SecretName != "" {
		return key.Status.SecretName
	}
	if key.Spec.Secret.Name != "" {
		return key.Spec.Secret.Name
	}
	return key.Name + "-token"
}
