package controller

import (
	"context"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// reconcileSecret follows the delivered Secret: it deletes it once
// spec.secret.deleteAfter has passed, and notes when it is gone.
// Either way the key stays valid and no new token is minted: the token was
// delivered once.
func (r *ApiKeyReconciler) reconcileSecret(ctx context.Context, p *pass) error {
	if !p.issued() {
		return nil
	}
	after := p.key.Spec.Secret.DeleteAfter
	// Counted from the delivery of the live token, which a rotation renews.
	var deadline time.Time
	if after != nil {
		deadline = p.live.Spec.IssuedAt.Add(after.Duration)
		if p.now.Before(deadline) {
			p.wakeUpAt(deadline)
		}
	}
	if p.delivered && (after == nil || p.now.Before(deadline)) {
		// This pass wrote the Secret: no need to look it up.
		p.secretDeletedAt = nil
		return nil
	}
	m, err := r.deliveredSecret(ctx, p)
	if m == nil || err != nil {
		return err
	}
	p.secretDeletedAt = nil
	if after == nil || p.now.Before(deadline) {
		return nil
	}
	if err := r.Delete(ctx, m, client.Preconditions{UID: &m.UID}); client.IgnoreNotFound(err) != nil {
		return err
	}
	r.secretGone(p, "Deleted Secret %s %s after delivery, as spec.secret.deleteAfter asks; the key stays valid",
		m.Name, after.Duration)
	return nil
}

// deliveredSecret reads the live token's Secret (its metadata), or notes
// that it is gone and returns nil.
func (r *ApiKeyReconciler) deliveredSecret(ctx context.Context, p *pass) (*metav1.PartialObjectMetadata, error) {
	name := p.live.Spec.SecretName
	m := secretMeta()
	ref := client.ObjectKey{Namespace: p.key.Namespace, Name: name}
	err := r.Get(ctx, ref, m)
	if apierrors.IsNotFound(err) && p.secretDeletedAt == nil {
		// The cache may not have seen a Secret created moments ago: ask the
		// API server before concluding it is gone.
		err = r.APIReader.Get(ctx, ref, m)
	}
	if apierrors.IsNotFound(err) || (err == nil && !metav1.IsControlledBy(m, p.key)) {
		if p.secretDeletedAt == nil {
			r.secretGone(p, "Secret %s is gone; the key stays valid and no new token is minted until the key is rotated", name)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// secretGone records that the delivered Secret no longer exists.
func (r *ApiKeyReconciler) secretGone(p *pass, format string, args ...any) {
	p.secretDeletedAt = &metav1.Time{Time: p.now.Truncate(time.Second)}
	r.Recorder.Eventf(p.key, nil, corev1.EventTypeNormal, apikeysv1alpha1.ReasonSecretDeleted, "DeleteSecret", format, args...)
}
