package controller

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// TestGroupsForLeavesOutHeaderUnsafeGroups checks the groups a personal
// key's records carry: its owner's, without one a forward-auth header would
// change (the defaults policy leaves those out of the owner it stamps; a
// key stamped before it did keeps working without them), and without
// changing the key's own list.
func TestGroupsForLeavesOutHeaderUnsafeGroups(t *testing.T) {
	owned := []string{"team-a", "admins\nX-Auth-Request-User: root", " ops", "", "oidc:team a", "system:authenticated"}
	key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "pat"},
		Spec: apikeysv1alpha1.ApiKeySpec{Identity: apikeysv1alpha1.IdentityOwner,
			Owner: &apikeysv1alpha1.Owner{Username: "alice", Groups: slices.Clone(owned)}}}
	if got, want := groupsFor(key), []string{"team-a", "oidc:team a", "system:authenticated"}; !slices.Equal(got, want) {
		t.Errorf("groupsFor = %q, want %q", got, want)
	}
	if !slices.Equal(key.Spec.Owner.Groups, owned) {
		t.Errorf("groupsFor changed the key's owner groups to %q", key.Spec.Owner.Groups)
	}
	key.Spec.Identity = apikeysv1alpha1.IdentityKey
	if got, want := groupsFor(key), []string{"apikeys", "apikeys:team-a"}; !slices.Equal(got, want) {
		t.Errorf("groupsFor a Key identity = %q, want %q", got, want)
	}
}
