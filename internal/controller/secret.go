package controller

import (
	"context"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// reconcileSecret follows the delivered Secret: it deletes it once
// spec.secret.deleteAfter has passed, and notes when it is gone.
// Either way the key stays valid and no new token is minted: the token was
// delivered once.
func (r *ApiKeyReconciler) reconcileSecret(ctx context.Context, p *pass) error {
	if !p.issued() || p.secretUnsettled {
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
	due := after != nil && !p.now.Before(deadline)
	m, err := r.deliveredSecret(ctx, p, due)
	if m == nil || err != nil {
		return err
	}
	p.secretDeletedAt = nil
	if !due || m.DeletionTimestamp != nil {
		// Being deleted: finalizers hold it, and the Secret watch wakes
		// the key once it is gone.
		return nil
	}
	if err := r.Delete(ctx, m, client.Preconditions{UID: &m.UID}); client.IgnoreNotFound(err) != nil {
		return err
	}
	if n := len(m.Finalizers); n > 0 {
		// Someone else's finalizers keep it, token included: it is not
		// gone until they let it go.
		r.Recorder.Eventf(p.key, nil, corev1.EventTypeWarning, apikeysv1alpha1.ReasonSecretDeletionBlocked, "DeleteSecret",
			"Deleting Secret %s %s after delivery, as spec.secret.deleteAfter asks; %d finalizers keep it, and its "+
				"token, until they are removed", m.Name, after.Duration, n)
		return nil
	}
	r.secretGone(p, "Deleted Secret %s %s after delivery, as spec.secret.deleteAfter asks; the key stays valid",
		m.Name, after.Duration)
	return nil
}

// deliveredSecret finds the live token's Secret, or notes that it is gone
// and returns nil. The watch of delivered Secrets answers, unless it shows
// the Secret and its metadata is needed (live: to delete it), or does not
// show it (with the UID the record pinned) and it was not already found
// gone (the watch may not have shown a Secret created moments ago): then
// its metadata is read from the API server. The Secret returned holds its UID only if read from there.
func (r *ApiKeyReconciler) deliveredSecret(ctx context.Context, p *pass, live bool) (*metav1.PartialObjectMetadata, error) {
	m := secretMeta()
	m.Namespace, m.Name = p.key.Namespace, p.live.Spec.SecretName
	unpinned := p.live.Spec.SecretUID == ""
	switch watched := r.secrets.controlledBy(m.Namespace, m.Name, p.key.UID, types.UID(p.live.Spec.SecretUID)); {
	case watched && !live && !unpinned:
		return m, nil
	case !watched && p.secretDeletedAt != nil:
		return nil, nil
	}
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(m), m)
	if apierrors.IsNotFound(err) || (err == nil && !r.ownSecret(m, p.key, p.live)) {
		if p.secretDeletedAt == nil {
			r.secretGone(p, "Secret %s is gone; the key stays valid and no new token is minted until the key is rotated", m.Name)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if unpinned {
		// A token delivered before records kept the Secret's UID: pinned
		// now, so that a Secret made in its place later is known for what
		// it is.
		if err := r.pinSecret(ctx, p.key, p.live, m.UID); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// secretGone records that the delivered Secret no longer exists.
func (r *ApiKeyReconciler) secretGone(p *pass, format string, args ...any) {
	p.secretDeletedAt = &metav1.Time{Time: p.now.Truncate(time.Second)}
	r.Recorder.Eventf(p.key, nil, corev1.EventTypeNormal, apikeysv1alpha1.ReasonSecretDeleted, "DeleteSecret", format, args...)
}
