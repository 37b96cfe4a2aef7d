package main

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// benchScopes are the scopes every benchmark key asks for: a typical pair.
var benchScopes = []string{"orders:read", "invoices:*"}

// benchKey is an ApiKey as a user would write it: a description and scopes,
// identity Key, no expiry of its own (the operator's --max-ttl applies).
func benchKey(namespace, name string) *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: apikeysv1alpha1.ApiKeySpec{
			Description: "Benchmark key for the " + name + " service",
			Scopes:      benchScopes,
		},
	}
}

// recordFor is the ApiKeyRecord the controller would write for tok, key's
// first token, issued at issuedAt under the bench's policy (a year's
// --max-ttl).
func recordFor(tok string, key *apikeysv1alpha1.ApiKey, issuedAt time.Time) *apikeysv1alpha1.ApiKeyRecord {
	issuedAt = issuedAt.Truncate(time.Second)
	expires := metav1.NewTime(benchPolicy().ExpiryFor(&key.Spec, issuedAt))
	return controller.RecordFor(key, tok, issuedAt, apikeysv1alpha1.DefaultSecretName(key.Name), 1, &expires)
}

// issuedStatus is the status the controller writes once it has issued rec's
// token: what the auth server's ApiKey cache holds for a live key.
func issuedStatus(key *apikeysv1alpha1.ApiKey, rec *apikeysv1alpha1.ApiKeyRecord) apikeysv1alpha1.ApiKeyStatus {
	secret := apikeysv1alpha1.DefaultSecretName(key.Name)
	issued := rec.Spec.IssuedAt
	return apikeysv1alpha1.ApiKeyStatus{
		Conditions: []metav1.Condition{{
			Type:               "Ready",
			Status:             metav1.ConditionTrue,
			Reason:             "Issued",
			Message:            fmt.Sprintf("Token %s is live; delivered to Secret %s", rec.Spec.TokenHint, secret),
			ObservedGeneration: key.Generation,
			LastTransitionTime: issued,
		}},
		ObservedGeneration: key.Generation,
		TokenHint:          rec.Spec.TokenHint,
		TokenFingerprint:   rec.Spec.TokenFingerprint,
		IssuedAt:           &issued,
		ExpiresAt:          rec.Spec.ExpiresAt,
		SecretName:         secret,
		Username:           rec.Spec.Username,
		RecordName:         rec.Name,
	}
}

// issueInMemory makes n keys with a fresh token each and hands every key
// and its record to add, as the informers would hand them to the index. It
// returns the tokens, which stay in memory.
func issueInMemory(n int, add func(*apikeysv1alpha1.ApiKey, *apikeysv1alpha1.ApiKeyRecord)) ([]string, error) {
	now := time.Now()
	tokens := make([]string, 0, n)
	for i := range n {
		key := benchKey(fmt.Sprintf("team-%02d", i%50), fmt.Sprintf("service-%05d", i))
		key.UID = uuid.NewUUID()
		key.Generation = 1
		tok, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
		if err != nil {
			return nil, err
		}
		add(key, recordFor(tok, key, now))
		tokens = append(tokens, tok)
	}
	return tokens, nil
}
