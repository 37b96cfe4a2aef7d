package authserver

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// fixtureNow is the pinned clock of every test server; its nanoseconds make
// expiry boundaries visible.
var fixtureNow = time.Date(2031, time.March, 14, 15, 9, 26, 535897932, time.UTC)

const (
	base62Digits     = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	fixtureNamespace = "team-payments"
	fixtureName      = "billing-export"
	fixtureKeyUID    = "0b6c8c1e-2f4a-4d53-9a51-6c0f0d7e3a11"
)

// stableToken returns a well-formed token with a correct checksum whose body
// is derived from seed, so a test token is the same in every run and the
// fuzz corpus under testdata/ can name it.
func stableToken(prefix, seed string) string {
	var body [token.BodyLength]byte
	for i := range body {
		sum := sha256.Sum256([]byte(seed + "/" + string(rune('a'+i/26)) + string(rune('a'+i%26))))
		body[i] = base62Digits[sum[0]%62]
	}
	head := prefix + "_" + string(body[:])
	return head + token.Checksum(head)
}

// tokenBody is the secret part of tok: what follows its last '_'.
func tokenBody(tok string) string {
	return tok[strings.LastIndexByte(tok, '_')+1:]
}

// informerKey returns the ApiKey a record points at, as an informer delivers it.
func informerKey(namespace, name, uid string) *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID(uid)}}
}

// issuedRecord returns the record the controller writes for tok issued to key
// with identity Key (whose uid is the ApiKey's), changed by edits.
func issuedRecord(tok string, key *apikeysv1alpha1.ApiKey, edits ...func(*apikeysv1alpha1.ApiKeyRecordSpec)) *apikeysv1alpha1.ApiKeyRecord {
	rec := hashedRecord(token.Sum(tok), token.Hint(tok), key)
	for _, edit := range edits {
		edit(&rec.Spec)
	}
	return rec
}

// hashedRecord is issuedRecord for the token whose hash is sum and hint is
// hint, for records whose token no test presents.
func hashedRecord(sum [32]byte, hint string, key *apikeysv1alpha1.ApiKey) *apikeysv1alpha1.ApiKeyRecord {
	rec := &apikeysv1alpha1.ApiKeyRecord{}
	refillRecord(rec, sum, hint, key)
	return rec
}

// refillRecord makes rec the record hashedRecord returns, reusing its memory.
func refillRecord(rec *apikeysv1alpha1.ApiKeyRecord, sum [32]byte, hint string, key *apikeysv1alpha1.ApiKey) {
	rec.Name = apikeysv1alpha1.RecordName(sum)
	if rec.Labels == nil {
		rec.Labels = map[string]string{}
	}
	rec.Labels[apikeysv1alpha1.ApiKeyUIDLabel] = string(key.UID)
	rec.Spec = apikeysv1alpha1.ApiKeyRecordSpec{
		TokenHash: token.FormatHash(sum),
		TokenHint: hint,
		ApiKey:    apikeysv1alpha1.ApiKeyReference{Namespace: key.Namespace, Name: key.Name, UID: string(key.UID)},
		IssuedAt:  metav1.NewTime(fixtureNow.Add(-24 * time.Hour)),
		Username:  "apikey:" + key.Namespace + ":" + key.Name,
		UID:       string(key.UID),
		Groups:    append(rec.Spec.Groups[:0], "apikeys", "apikeys:"+key.Namespace),
		Scopes:    append(rec.Spec.Scopes[:0], "orders:read", "invoices:*"),
	}
}

// metaTime returns a *metav1.Time of t, as records carry optional times.
func metaTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

// authFixture is an index holding one live key, plus the server answering from it.
type authFixture struct {
	index  *Index
	server *Server
	key    *apikeysv1alpha1.ApiKey
	token  string
	// secrets are every token the fixture minted or a test sent; no
	// response may carry any of them or their bodies.
	secrets []string
}

// newAuthFixture returns a synced index with one key issued fixtureToken, and a
// server on it whose clock reads fixtureNow.
func newAuthFixture(tb testing.TB) *authFixture {
	tb.Helper()
	f := &authFixture{index: NewIndex(), key: informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)}
	f.token = f.issue(f.key, "fixture")
	f.index.MarkSynced()
	f.server = NewServer(f.index, Options{Now: func() time.Time { return fixtureNow }})
	return f
}

// unsynced returns a server whose index holds the fixture's key and record
// but has not synced yet, as a replica still listing.
func (f *authFixture) unsynced() *Server {
	loading := NewIndex()
	loading.SetKey(f.key)
	loading.SetRecord(issuedRecord(f.token, f.key))
	return NewServer(loading, Options{Now: func() time.Time { return fixtureNow }})
}

// issue adds a stable token for key (seeded by seed) and the key itself to
// the index, and returns the token.
func (f *authFixture) issue(key *apikeysv1alpha1.ApiKey, seed string, edits ...func(*apikeysv1alpha1.ApiKeyRecordSpec)) string {
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, seed)
	f.index.SetKey(key)
	f.index.SetRecord(issuedRecord(tok, key, edits...))
	f.secrets = append(f.secrets, tok)
	return tok
}

// secret notes a token a test sends, so leak checks look for it too.
func (f *authFixture) secret(tok string) string {
	f.secrets = append(f.secrets, tok)
	return tok
}

// fixtureToken is the token newAuthFixture issues; the fuzz corpus uses it.
var fixtureToken = stableToken(apikeysv1alpha1.DefaultPrefix, "fixture")
