package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

var created = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func alice() *apikeysv1alpha1.Owner {
	return &apikeysv1alpha1.Owner{Username: "alice", UID: "u1", Groups: []string{"devs"}}
}

func TestCheckOwner(t *testing.T) {
	p := New(Options{ForbiddenGroups: []string{"cluster-admins"}, OwnerRequesters: []string{"system:serviceaccount:ci:minter"}})
	with := func(change func(o *apikeysv1alpha1.Owner)) *apikeysv1alpha1.Owner {
		o := alice()
		change(o)
		return o
	}
	for name, tc := range map[string]struct {
		owner *apikeysv1alpha1.Owner
		rule  string
	}{
		"a person": {alice(), ""},
		"no owner": {nil, RuleOwnerNotAllowed},
		"a service account": {
			with(func(o *apikeysv1alpha1.Owner) { o.Username = "system:serviceaccount:argocd:app" }), RuleOwnerNotAllowed},
		"a listed service account":  {with(func(o *apikeysv1alpha1.Owner) { o.Username = "system:serviceaccount:ci:minter" }), ""},
		"an API key":                {with(func(o *apikeysv1alpha1.Owner) { o.Username = "apikey:team-a:ci" }), RuleOwnerNotAllowed},
		"system:masters":            {with(func(o *apikeysv1alpha1.Owner) { o.Groups = []string{MastersGroup} }), RuleForbiddenGroup},
		"a --forbidden-groups item": {with(func(o *apikeysv1alpha1.Owner) { o.Groups = []string{"devs", "cluster-admins"} }), RuleForbiddenGroup},
		"a group with a comma":      {with(func(o *apikeysv1alpha1.Owner) { o.Groups = []string{"a,b"} }), RuleForbiddenGroup},
	} {
		err := p.CheckOwner(tc.owner)
		var v *Violation
		switch {
		case tc.rule == "" && err != nil:
			t.Errorf("%s: CheckOwner() = %v, want ok", name, err)
		case tc.rule != "" && (!errors.As(err, &v) || v.Rule != tc.rule):
			t.Errorf("%s: CheckOwner() = %v, want a %s violation", name, err, tc.rule)
		}
	}
}

func TestAllowedGroupsDropsWhatNoKeyCarries(t *testing.T) {
	p := New(Options{ForbiddenGroups: []string{"cluster-admins"}})
	got := p.AllowedGroups([]string{"devs", MastersGroup, "cluster-admins", "a,b", " admins", "ops\n", "", "oidc:team a", "ops"})
	if strings.Join(got, "|") != "devs|oidc:team a|ops" {
		t.Errorf("AllowedGroups = %q", got)
	}
}

func TestOwnerRuleRendersTheFlags(t *testing.T) {
	p := New(Options{
		ForbiddenGroups: []string{"cluster-admins"}, OwnerRequesters: []string{`system:serviceaccount:ci:"odd"`},
		OwnerPolicyName: "p", OwnerPolicyBindingName: "b",
	})
	rule, err := p.OwnerRule()
	if err != nil {
		t.Fatal(err)
	}
	if rule.Policy.Name != "p" || rule.Binding.Name != "b" || rule.Binding.Spec.PolicyName != "p" {
		t.Errorf("names: policy %q, binding %q for %q", rule.Policy.Name, rule.Binding.Name, rule.Binding.Spec.PolicyName)
	}
	vars := map[string]string{}
	for _, v := range rule.Policy.Spec.Variables {
		vars[v.Name] = v.Expression
	}
	if got := vars[forbiddenGroupsVariable]; got != `["cluster-admins","system:masters"]` {
		t.Errorf("forbiddenGroups = %s", got)
	}
	if got := vars[ownerRequestersVariable]; got != `["system:serviceaccount:ci:\"odd\""]` {
		t.Errorf("ownerRequesters = %s", got)
	}

	defaults, err := New(Options{OwnerPolicyName: "owner-policy", OwnerPolicyBindingName: "owner-policy-binding"}).OwnerRule()
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := decodeOwnerRule(OwnerPolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(defaults.Policy.Spec, shipped.Policy.Spec) ||
		!equality.Semantic.DeepEqual(defaults.Binding.Spec, shipped.Binding.Spec) {
		t.Error("the default flags do not render the shipped policy: the file's lists must be the defaults")
	}
}

func TestCheckOwnerRuleCovers(t *testing.T) {
	since := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	if CheckOwnerRuleCovers(since, since.Add(time.Second)) != nil {
		t.Error("a key created a second after the rule is covered")
	}
	for _, created := range []time.Time{since, since.Add(-time.Hour)} {
		var v *Violation
		if err := CheckOwnerRuleCovers(since, created); !errors.As(err, &v) || v.Rule != RuleOwnerPolicy {
			t.Errorf("created %s: %v, want an %s violation", created, err, RuleOwnerPolicy)
		}
	}
}

func TestCheckExpiry(t *testing.T) {
	now := created
	p := New(Options{MaxTTL: 24 * time.Hour})
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
		var issuedAt *metav1.Time
		if tc.issued {
			issuedAt = &metav1.Time{Time: now}
		}
		err := p.CheckExpiry(&tc.spec, issuedAt, now)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: CheckExpiry = %v, want %q", name, err, tc.want)
		}
	}
	if got := p.ExpiryFor(&apikeysv1alpha1.ApiKeySpec{}, now); !got.Equal(now.Add(24 * time.Hour)) {
		t.Errorf("ExpiryFor(no expiry) = %v, want issuance + max-ttl", got)
	}
	if got := New(Options{}).ExpiryFor(&apikeysv1alpha1.ApiKeySpec{}, now); !got.IsZero() {
		t.Errorf("ExpiryFor with --max-ttl=0 = %v, want never", got)
	}
}

func TestTokenExpiryIsBoundedFromItsOwnIssuance(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := &metav1.Time{Time: issued.Add(40 * time.Hour)}
	bounded := New(Options{MaxTTL: 24 * time.Hour})
	for name, tc := range map[string]struct {
		p    *Policy
		spec apikeysv1alpha1.ApiKeySpec
		want time.Time
	}{
		"expiresAt within --max-ttl": {bounded,
			apikeysv1alpha1.ApiKeySpec{ExpiresAt: &metav1.Time{Time: issued.Add(time.Hour)}}, issued.Add(time.Hour)},
		"expiresAt moved past --max-ttl": {bounded, apikeysv1alpha1.ApiKeySpec{ExpiresAt: later}, issued.Add(24 * time.Hour)},
		"ttl past --max-ttl": {bounded,
			apikeysv1alpha1.ApiKeySpec{TTL: &metav1.Duration{Duration: 48 * time.Hour}}, issued.Add(24 * time.Hour)},
		"no expiry":                         {bounded, apikeysv1alpha1.ApiKeySpec{}, issued.Add(24 * time.Hour)},
		"no --max-ttl keeps the spec's":     {New(Options{}), apikeysv1alpha1.ApiKeySpec{ExpiresAt: later}, later.Time},
		"no --max-ttl and no expiry: never": {New(Options{}), apikeysv1alpha1.ApiKeySpec{}, time.Time{}},
	} {
		if got := tc.p.TokenExpiry(&tc.spec, issued); !got.Equal(tc.want) {
			t.Errorf("%s: TokenExpiry = %v, want %v", name, got, tc.want)
		}
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

func TestDefaultsRuleRendersTheFlags(t *testing.T) {
	rule, err := New(Options{ForbiddenGroups: []string{"cluster-admins"}}).DefaultsRule()
	if err != nil {
		t.Fatal(err)
	}
	if rule.Binding.Spec.PolicyName != rule.Policy.Name {
		t.Errorf("the binding names %q, the policy is %q", rule.Binding.Spec.PolicyName, rule.Policy.Name)
	}
	var forbidden string
	for _, v := range rule.Policy.Spec.Variables {
		if v.Name == forbiddenGroupsVariable {
			forbidden = v.Expression
		}
	}
	if forbidden != `["cluster-admins","system:masters"]` {
		t.Errorf("forbiddenGroups = %s", forbidden)
	}

	defaults, err := New(Options{}).DefaultsRule()
	if err != nil {
		t.Fatal(err)
	}
	shipped := &DefaultsRule{
		Policy:  &admissionregistrationv1.MutatingAdmissionPolicy{},
		Binding: &admissionregistrationv1.MutatingAdmissionPolicyBinding{},
	}
	if err := decodeManifest(DefaultsPolicyYAML, "the defaults policy", shipped.Policy, shipped.Binding); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(defaults, shipped) {
		t.Error("the default flags do not render the shipped policy: the file's list must be the default")
	}
}
