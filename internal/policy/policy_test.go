package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

var created = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func ownerKey(p *Policy, owner *apikeysv1alpha1.Owner, attestedAt time.Time) *apikeysv1alpha1.ApiKey {
	key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{
		Namespace: "team-a", Name: "pat", CreationTimestamp: metav1.Time{Time: created},
	}}
	key.Spec.Identity = apikeysv1alpha1.IdentityOwner
	key.Spec.Owner = owner
	key.Annotations = map[string]string{AttestationAnnotation: p.Attest("team-a", "pat", owner, attestedAt)}
	return key
}

func alice() *apikeysv1alpha1.Owner {
	return &apikeysv1alpha1.Owner{Username: "alice", UID: "u1", Groups: []string{"devs"}}
}

func TestCheckAttestation(t *testing.T) {
	p := New(time.Hour, nil, []byte("operator key"))
	other := New(time.Hour, nil, []byte("someone else's key"))
	for name, tc := range map[string]struct {
		key  func() *apikeysv1alpha1.ApiKey
		want bool
	}{
		"stamped at creation":        {func() *apikeysv1alpha1.ApiKey { return ownerKey(p, alice(), created) }, true},
		"stamped 30s before":         {func() *apikeysv1alpha1.ApiKey { return ownerKey(p, alice(), created.Add(-30*time.Second)) }, true},
		"replayed from an older key": {func() *apikeysv1alpha1.ApiKey { return ownerKey(p, alice(), created.Add(-time.Hour)) }, false},
		"signed with another key":    {func() *apikeysv1alpha1.ApiKey { return ownerKey(other, alice(), created) }, false},
		"owner changed after signing": {func() *apikeysv1alpha1.ApiKey {
			k := ownerKey(p, alice(), created)
			k.Spec.Owner.Groups = append(k.Spec.Owner.Groups, "admins")
			return k
		}, false},
		"moved to another name": {func() *apikeysv1alpha1.ApiKey {
			k := ownerKey(p, alice(), created)
			k.Name = "other"
			return k
		}, false},
		"no annotation": {func() *apikeysv1alpha1.ApiKey {
			k := ownerKey(p, alice(), created)
			k.Annotations = nil
			return k
		}, false},
		"garbage annotation": {func() *apikeysv1alpha1.ApiKey {
			k := ownerKey(p, alice(), created)
			k.Annotations[AttestationAnnotation] = "v1.x.!!"
			return k
		}, false},
	} {
		err := p.CheckAttestation(tc.key())
		if (err == nil) != tc.want {
			t.Errorf("%s: CheckAttestation() = %v, want ok=%v", name, err, tc.want)
		}
		var v *Violation
		if err != nil && (!errors.As(err, &v) || v.Rule != RuleOwnerNotAttest) {
			t.Errorf("%s: want a %s violation, got %v", name, RuleOwnerNotAttest, err)
		}
	}
	if err := New(time.Hour, nil, nil).CheckAttestation(ownerKey(p, alice(), created)); err == nil {
		t.Error("without an attestation key, no owner may be attested")
	}
}

func TestForbiddenGroups(t *testing.T) {
	p := New(0, []string{" cluster-admins ", ""}, nil)
	if got := p.AllowedGroups([]string{"devs", MastersGroup, "cluster-admins"}); strings.Join(got, ",") != "devs" {
		t.Errorf("AllowedGroups = %v, want [devs]", got)
	}
	err := p.CheckOwnerGroups(&apikeysv1alpha1.Owner{Username: "x", Groups: []string{"devs", "cluster-admins"}})
	if err == nil || !strings.Contains(err.Error(), `"cluster-admins" is never carried`) {
		t.Errorf("CheckOwnerGroups = %v", err)
	}
	if err := p.CheckOwnerGroups(&apikeysv1alpha1.Owner{Username: "x", Groups: []string{"devs"}}); err != nil {
		t.Errorf("CheckOwnerGroups(devs) = %v", err)
	}
}

func TestCheckExpiry(t *testing.T) {
	now := created
	p := New(24*time.Hour, nil, nil)
	ttl := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	for name, tc := range map[string]struct {
		spec   apikeysv1alpha1.ApiKeySpec
		issued bool
		want   string
	}{
		"no expiry: max-ttl applies":       {apikeysv1alpha1.ApiKeySpec{}, false, ""},
		"ttl within max-ttl":               {apikeysv1alpha1.ApiKeySpec{TTL: ttl(time.Hour)}, false, ""},
		"ttl beyond max-ttl":               {apikeysv1alpha1.ApiKeySpec{TTL: ttl(25 * time.Hour)}, false, "--max-ttl"},
		"expiresAt beyond max-ttl":         {apikeysv1alpha1.ApiKeySpec{ExpiresAt: at(48 * time.Hour)}, false, "--max-ttl"},
		"expiresAt in the past":            {apikeysv1alpha1.ApiKeySpec{ExpiresAt: at(-time.Second)}, false, "not in the future"},
		"expiresAt past once issued is ok": {apikeysv1alpha1.ApiKeySpec{ExpiresAt: at(-time.Second)}, true, ""},
		"both":                             {apikeysv1alpha1.ApiKeySpec{TTL: ttl(time.Hour), ExpiresAt: at(time.Hour)}, false, "at most one"},
		"negative ttl":                     {apikeysv1alpha1.ApiKeySpec{TTL: ttl(-time.Hour)}, false, "positive"},
	} {
		err := p.CheckExpiry(&tc.spec, now, tc.issued, now)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: CheckExpiry = %v, want %q", name, err, tc.want)
		}
	}
	if got := p.ExpiryFor(&apikeysv1alpha1.ApiKeySpec{}, now); !got.Equal(now.Add(24 * time.Hour)) {
		t.Errorf("ExpiryFor(no expiry) = %v, want issuance + max-ttl", got)
	}
	if got := New(0, nil, nil).ExpiryFor(&apikeysv1alpha1.ApiKeySpec{}, now); !got.IsZero() {
		t.Errorf("ExpiryFor with --max-ttl=0 = %v, want never", got)
	}
}

func TestCheckSyntax(t *testing.T) {
	for _, tc := range []struct {
		spec apikeysv1alpha1.ApiKeySpec
		ok   bool
	}{
		{apikeysv1alpha1.ApiKeySpec{Scopes: []string{"links:read", "a/b.c-d_*"}}, true},
		{apikeysv1alpha1.ApiKeySpec{Scopes: []string{"Links"}}, false},
		{apikeysv1alpha1.ApiKeySpec{Scopes: []string{strings.Repeat("a", 65)}}, false},
		{apikeysv1alpha1.ApiKeySpec{Audiences: []string{""}}, false},
		{apikeysv1alpha1.ApiKeySpec{Audiences: []string{"shortener"}}, true},
	} {
		if err := CheckSyntax(&tc.spec); (err == nil) != tc.ok {
			t.Errorf("CheckSyntax(%v) = %v, want ok=%v", tc.spec, err, tc.ok)
		}
	}
}
