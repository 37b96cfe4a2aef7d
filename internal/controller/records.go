package controller

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// listRecords reads key's records: those the record watch shows or, where
// a decision must not rest on a watch that may lag, all the API server
// holds.
func (r *ApiKeyReconciler) listRecords(ctx context.Context, key *apikeysv1alpha1.ApiKey,
	fromAPIServer bool) ([]apikeysv1alpha1.ApiKeyRecord, error) {
	if !fromAPIServer && r.records != nil {
		return r.cachedRecords(ctx, key)
	}
	var records apikeysv1alpha1.ApiKeyRecordList
	var reader client.Reader = r.Client
	if fromAPIServer {
		reader = r.APIReader
	}
	// By the selectable field, not the label. A reconciler not set up with
	// a manager has no index: its client answers.
	if err := reader.List(ctx, &records, client.MatchingFields{recordsByKeyUID: string(key.UID)}); err != nil {
		return nil, err
	}
	return records.Items, nil
}

// cachedRecords reads key's records, those the record watch shows: from
// kube-apiserver, each at least as new as the watch showed it, or, in a
// start-up pass, from the watch's first listing.
func (r *ApiKeyReconciler) cachedRecords(ctx context.Context, key *apikeysv1alpha1.ApiKey) ([]apikeysv1alpha1.ApiKeyRecord, error) {
	uid := digestOf(string(key.UID))
	refs := r.records.of(uid)
	records := make([]apikeysv1alpha1.ApiKeyRecord, 0, len(refs))
	for _, ref := range refs {
		if listed := r.records.takeListed(ref); listed != nil && listed.Spec.ApiKey.UID == string(key.UID) {
			records = append(records, *listed)
			continue
		}
		var rec apikeysv1alpha1.ApiKeyRecord
		if err := r.APIReader.Get(ctx, client.ObjectKey{Name: ref.name()}, &rec, atLeast(ref.resourceVersion)); apierrors.IsNotFound(err) {
			r.records.drop(uid, ref) // deleted since the watch showed it
			continue
		} else if err != nil {
			return nil, err
		}
		if rec.Spec.ApiKey.UID != string(key.UID) {
			r.records.drop(uid, ref) // moved to another key by hand
			continue
		}
		records = append(records, rec)
	}
	return records, nil
}

// observeRecords reads the key's records, the truth about its tokens, then
// checks that status reports them as the operator wrote it. The cache may not
// yet show a record created moments ago: those this process created are
// added from memory. It asks the API server for all the key's records when
// status names a token of the key's that the cache does not show yet (a
// read of that record first: whoever may write status must not make each
// write cost a list of every record), or when a record this process
// created has stayed out of the cache too long. (Issuance asks again
// before it could mint a second token, see mint.)
func (r *ApiKeyReconciler) observeRecords(ctx context.Context, p *pass) error {
	records, fromAPIServer, err := r.knownRecords(ctx, p.key, p.now)
	if err != nil {
		return err
	}
	p.setRecords(records)
	if named := p.base.Status.RecordName; !fromAPIServer && named != "" && findRecord(p.records, named) == nil &&
		len(validation.IsDNS1123Subdomain(named)) == 0 {
		rec := &apikeysv1alpha1.ApiKeyRecord{}
		err := r.APIReader.Get(ctx, client.ObjectKey{Name: named}, rec)
		if client.IgnoreNotFound(err) != nil {
			return err
		}
		if err == nil && rec.Spec.ApiKey.UID == string(p.key.UID) {
			if records, err = r.listRecords(ctx, p.key, true); err != nil {
				return err
			}
			p.setRecords(records)
		}
	}
	p.forgery = checkStatus(p)
	return nil
}

// knownRecords is key's records as the cache shows them, with those this
// process created that it does not show yet; from the API server instead
// (fromAPIServer) if one of those has stayed out of the cache too long.
func (r *ApiKeyReconciler) knownRecords(ctx context.Context, key *apikeysv1alpha1.ApiKey,
	now time.Time) (records []apikeysv1alpha1.ApiKeyRecord, fromAPIServer bool, err error) {
	if records, err = r.listRecords(ctx, key, false); err != nil {
		return nil, false, err
	}
	records, stale := r.created.merge(key.UID, records, now)
	if !stale {
		return records, false, nil
	}
	records, err = r.listRecords(ctx, key, true)
	return records, true, err
}

// checkStatus compares what status says of the live token with the records
// and returns a finding if they disagree. Status is a report: the operator
// writes it only from records, and deletes a record only once status no
// longer names it. A status that names a token this key has no record of, or
// tells another issuance time or hint for it, was written by someone else
// (whoever holds apikeys/status). It is never obeyed, and never stops the
// pass: status is rewritten from the records, and the key is reported
// Stalled until its spec changes, so that a person looks at it.
func checkStatus(p *pass) *stalledError {
	if c := meta.FindStatusCondition(p.base.Status.Conditions, apikeysv1alpha1.ConditionStalled); c != nil &&
		c.Reason == apikeysv1alpha1.ReasonStatusForged && c.ObservedGeneration == p.key.Generation {
		return &stalledError{reason: apikeysv1alpha1.ReasonStatusForged, message: c.Message}
	}
	st := &p.base.Status
	if st.RecordName == "" {
		return nil
	}
	rec := findRecord(p.records, st.RecordName)
	switch {
	case rec == nil:
		return &stalledError{reason: apikeysv1alpha1.ReasonStatusForged, message: "status.recordName named a token this operator never issued " +
			"for this key (or whose record was deleted by hand); it was ignored. Someone other than the operator writes " +
			"apikeys/status: find who, then edit the spec to clear this"}
	case st.IssuedAt != nil && !st.IssuedAt.Equal(&rec.Spec.IssuedAt),
		st.TokenHint != "" && st.TokenHint != rec.Spec.TokenHint:
		return &stalledError{reason: apikeysv1alpha1.ReasonStatusForged, message: fmt.Sprintf("status.issuedAt or status.tokenHint differed "+
			"from the record of token %s; they were ignored. Someone other than the operator writes apikeys/status: "+
			"find who, then edit the spec to clear this", rec.Spec.TokenHint)}
	}
	return nil
}

func findRecord(records []apikeysv1alpha1.ApiKeyRecord, name string) *apikeysv1alpha1.ApiKeyRecord {
	for i := range records {
		if records[i].Name == name {
			return &records[i]
		}
	}
	return nil
}

// syncRecords keeps every record's spec in step with the ApiKey, so that
// scope, audience, suspension and expiry edits reach the auth server without
// a new token, for the live token and one in its grace period alike. A
// record superseded by the live token gets its grace period as validUntil,
// counted from the rotation (the live token's issuance); without one it ends
// at once. A record whose grace period has ended goes, once status no
// longer names it.
func (r *ApiKeyReconciler) syncRecords(ctx context.Context, p *pass) error {
	grace := gracePeriodOf(p.key)
	kept := make([]apikeysv1alpha1.ApiKeyRecord, 0, len(p.records))
	for i := range p.records {
		rec := &p.records[i]
		want := recordSpecFor(p.key, rec, r.expiryOf(p.key, rec))
		if rec == p.live {
			if rec.Spec.Issuance == 0 {
				// Issued before rotation existed, when the annotation
				// rotated nothing: its value is taken as answered, and
				// only a new one rotates.
				want.Issuance, want.RotateRequest = 1, rotateRequestOf(p.key)
			}
			if p.dropRotateRequest {
				want.RotateRequest = rotateRequestOf(p.key)
			}
		} else {
			if want.ValidUntil == nil {
				want.ValidUntil = &metav1.Time{Time: graceEnd(p.live, grace)}
			}
			switch {
			case p.now.Before(want.ValidUntil.Time):
				p.wakeUpAt(want.ValidUntil.Time)
			case p.base.Status.RecordName != rec.Name:
				if err := r.deleteRecord(ctx, p.key, rec); err != nil {
					return err
				}
				continue
			default:
				// Status still names it: it ends now (validUntil), and goes
				// in the next pass, once status names its successor.
				p.wakeUpAt(p.now)
			}
		}
		if !equality.Semantic.DeepEqual(rec.Spec, want) {
			patch := client.MergeFrom(rec.DeepCopy())
			rec.Spec = want
			if err := r.Patch(ctx, rec, patch); err != nil {
				return err
			}
		}
		kept = append(kept, *rec)
	}
	p.setRecords(kept)
	return nil
}

// expiryOf is when rec's token expires: spec.expiresAt, or spec.ttl after
// the token's own issuance, and never past --max-ttl after it.
func (r *ApiKeyReconciler) expiryOf(key *apikeysv1alpha1.ApiKey, rec *apikeysv1alpha1.ApiKeyRecord) *metav1.Time {
	if exp := r.Policy.TokenExpiry(&key.Spec, rec.Spec.IssuedAt.Time); !exp.IsZero() {
		return &metav1.Time{Time: exp}
	}
	return nil
}

// recordSpecFor is what the auth server needs to answer for rec's token:
// what identifies the token comes from rec, who it is and what it may do
// from key.
func recordSpecFor(key *apikeysv1alpha1.ApiKey, rec *apikeysv1alpha1.ApiKeyRecord,
	expiresAt *metav1.Time) apikeysv1alpha1.ApiKeyRecordSpec {
	return apikeysv1alpha1.ApiKeyRecordSpec{
		TokenHash:        rec.Spec.TokenHash,
		TokenHint:        rec.Spec.TokenHint,
		TokenFingerprint: rec.Spec.TokenFingerprint,
		IssuedAt:         rec.Spec.IssuedAt,
		SecretName:       rec.Spec.SecretName,
		SecretUID:        rec.Spec.SecretUID,
		ValidUntil:       rec.Spec.ValidUntil,
		Issuance:         rec.Spec.Issuance,
		RotateRequest:    rec.Spec.RotateRequest,
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
		ExpiresAt: expiresAt,
		Suspended: key.Spec.Suspended,
	}
}
