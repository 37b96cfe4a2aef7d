package controller

import (
	"context"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// recordNamePrefix starts every record name; the rest is the token's hash in
// hex, so one token can only ever have one record.
const recordNamePrefix = "sha256-"

func recordNameFor(sum [32]byte) string {
	return recordNamePrefix + hex.EncodeToString(sum[:])
}

// hashOfRecordName is the sha256:<hex> token hash a record name stands for.
func hashOfRecordName(name string) string {
	return "sha256:" + strings.TrimPrefix(name, recordNamePrefix)
}

// syncRecords keeps exactly one record for a delivered key, the live token's,
// with a spec that mirrors the ApiKey: scope, audience, suspension and expiry
// edits reach the auth server without a new token. Records of tokens that
// never went live are deleted.
func (r *ApiKeyReconciler) syncRecords(ctx context.Context, p *pass) error {
	key := p.key
	if p.issued() {
		key.Status.ExpiresAt = p.expiresAt
	}

	var records apikeysv1alpha1.ApiKeyRecordList
	if err := r.List(ctx, &records, client.MatchingLabels{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)}); err != nil {
		return err
	}
	live := false
	for i := range records.Items {
		rec := &records.Items[i]
		if rec.Name != key.Status.RecordName || !p.issued() {
			if err := r.Delete(ctx, rec, client.Preconditions{UID: &rec.UID}); client.IgnoreNotFound(err) != nil {
				return err
			}
			continue
		}
		live = true
		want := recordSpecFor(key)
		if equality.Semantic.DeepEqual(rec.Spec, want) {
			continue
		}
		patch := client.MergeFrom(rec.DeepCopy())
		rec.Spec = want
		if err := r.Patch(ctx, rec, patch); err != nil {
			return err
		}
	}
	if live || !p.issued() {
		return nil
	}
	rec := &apikeysv1alpha1.ApiKeyRecord{
		ObjectMeta: metav1.ObjectMeta{
			Name:   key.Status.RecordName,
			Labels: map[string]string{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)},
		},
		Spec: recordSpecFor(key),
	}
	// AlreadyExists means the cache has not caught up with a record this
	// controller created; the next pass patches it if it differs.
	if err := r.Create(ctx, rec); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// recordSpecFor is what the auth server needs to answer for key's live token.
func recordSpecFor(key *apikeysv1alpha1.ApiKey) apikeysv1alpha1.ApiKeyRecordSpec {
	st := &key.Status
	spec := apikeysv1alpha1.ApiKeyRecordSpec{
		TokenHash: hashOfRecordName(st.RecordName),
		TokenHint: st.TokenHint,
		ApiKey: apikeysv1alpha1.ApiKeyReference{
			Namespace: key.Namespace,
			Name:      key.Name,
			UID:       string(key.UID),
		},
		Username:  usernameFor(key),
		UID:       uidFor(key),
		Groups:    groupsFor(key),
		Scopes:    key.Spec.Scopes,
		Audiences: key.Spec.Audiences,
		ExpiresAt: st.ExpiresAt,
		Suspended: key.Spec.Suspended,
	}
	if st.IssuedAt != nil {
		spec.IssuedAt = *st.IssuedAt
	}
	return spec
}
