package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/etcdgw"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// kind is one of the three objects every key has, and where etcd keeps it.
type kind struct {
	name   string
	prefix string
}

var (
	recordKind = kind{"ApiKeyRecord", recordsPrefix}
	apikeyKind = kind{"ApiKey", apikeysPrefix}
	secretKind = kind{"Secret", secretsPrefix}
	// kinds is the order a size is filled in: each kind's cost is the
	// difference it makes on its own.
	kinds = []kind{recordKind, apikeyKind, secretKind}
)

// identity is what differs between two keys' objects: every other byte of
// a copy is the template's. A copy has the template's length in every
// field, so it stores exactly as many bytes.
type identity struct {
	name                       string // the ApiKey's; the Secret's is <name>-token
	keyUID, recUID, secretUID  string
	token                      string
	hint, hashHex, fingerprint string
}

func identityFor(name, keyUID, recUID, secretUID, tok string) identity {
	sum := token.Sum(tok)
	return identity{
		name: name, keyUID: keyUID, recUID: recUID, secretUID: secretUID, token: tok,
		hint: token.Hint(tok), hashHex: hex.EncodeToString(sum[:]), fingerprint: token.Fingerprint(tok),
	}
}

// cloner makes byte-exact copies of one key's stored objects (ApiKey,
// ApiKeyRecord, Secret, as the controller wrote them), each with its own
// name, UIDs and a fresh token, and writes them straight into etcd, where
// kube-apiserver's watch picks them up as if it had written them.
type cloner struct {
	etcd      *etcdgw.Gateway
	workers   int
	base      identity
	templates map[kind]etcdgw.KeyValue
	ids       []identity // ids[i] is key i's; the sample's own keys have none
	first     int        // the first index that is a copy
}

// newCloner takes key 0 of the sample as the template.
func newCloner(ctx context.Context, e *env, s *sampleResult, workers int) (*cloner, error) {
	name := fmt.Sprintf(keyNameFormat, 0)
	key := &apikeysv1alpha1.ApiKey{}
	if err := e.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, key); err != nil {
		return nil, err
	}
	var records apikeysv1alpha1.ApiKeyRecordList
	if err := e.client.List(ctx, &records); err != nil {
		return nil, err
	}
	var rec *apikeysv1alpha1.ApiKeyRecord
	for i := range records.Items {
		if records.Items[i].Spec.ApiKey.UID == string(key.UID) {
			if rec != nil {
				return nil, fmt.Errorf("ApiKey %s has more than one record", name)
			}
			rec = &records.Items[i]
		}
	}
	if rec == nil {
		return nil, fmt.Errorf("ApiKey %s has no record", name)
	}
	secret := &corev1.Secret{}
	if err := e.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: rec.Spec.SecretName}, secret); err != nil {
		return nil, err
	}
	tok := string(secret.Data[apikeysv1alpha1.SecretTokenKey])
	base := identityFor(name, string(key.UID), string(rec.UID), string(secret.UID), tok)
	c := &cloner{etcd: e.etcd, workers: workers, base: base, templates: map[kind]etcdgw.KeyValue{}, first: s.keys}
	want := map[kind]string{
		apikeyKind: apikeysPrefix + name,
		recordKind: recordsPrefix + rec.Name,
		secretKind: secretsPrefix + rec.Spec.SecretName,
	}
	for k, storedAt := range want {
		for _, kv := range s.stored[k.prefix] {
			if string(kv.Key) == storedAt {
				c.templates[k] = kv
			}
		}
		if _, ok := c.templates[k]; !ok {
			return nil, fmt.Errorf("no %s at %s in etcd", k.name, storedAt)
		}
	}
	return c, nil
}

// grow makes sure keys [c.first, n) have an identity.
func (c *cloner) grow(n int) error {
	if len(c.ids) < c.first {
		c.ids = make([]identity, c.first, n)
	}
	for i := len(c.ids); i < n; i++ {
		tok, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
		if err != nil {
			return err
		}
		c.ids = append(c.ids, identityFor(fmt.Sprintf(keyNameFormat, i),
			string(uuid.NewUUID()), string(uuid.NewUUID()), string(uuid.NewUUID()), tok))
	}
	return nil
}

// replacer turns the template's identity into id's. The token goes first:
// its hint is a prefix of it.
func (c *cloner) replacer(id identity) (*strings.Replacer, error) {
	b := c.base
	pairs := []string{
		b.token, id.token, b.hint, id.hint, b.hashHex, id.hashHex, b.fingerprint, id.fingerprint,
		b.keyUID, id.keyUID, b.recUID, id.recUID, b.secretUID, id.secretUID, b.name, id.name,
	}
	for i := 0; i < len(pairs); i += 2 {
		if len(pairs[i]) != len(pairs[i+1]) {
			return nil, fmt.Errorf("a copy's field differs in length from the template's (%d vs %d bytes)",
				len(pairs[i+1]), len(pairs[i]))
		}
	}
	return strings.NewReplacer(pairs...), nil
}

// copyOf is key i's object of kind k. It checks that nothing of the
// template's identity is left in it.
func (c *cloner) copyOf(k kind, i int) (etcdgw.KeyValue, error) {
	r, err := c.replacer(c.ids[i])
	if err != nil {
		return etcdgw.KeyValue{}, err
	}
	t := c.templates[k]
	kv := etcdgw.KeyValue{Key: []byte(r.Replace(string(t.Key))), Value: []byte(r.Replace(string(t.Value)))}
	for _, old := range []string{c.base.name, c.base.keyUID, c.base.hashHex} {
		if bytes.Contains(kv.Value, []byte(old)) || bytes.Contains(kv.Key, []byte(old)) {
			return etcdgw.KeyValue{}, fmt.Errorf("a copy of the %s still holds the template's identity", k.name)
		}
	}
	return kv, nil
}

// issuanceOrder is the order issuance writes a key's objects in: the
// Secret, the record, then the ApiKey's status.
var issuanceOrder = []kind{secretKind, recordKind, apikeyKind}

// load writes the objects of the given kinds for keys [from, to) into
// etcd, key by key (each key's objects together, in the order given), in
// transactions of up to etcdgw.MaxTxnOps puts, c.workers at a time.
func (c *cloner) load(ctx context.Context, ks []kind, from, to int) error {
	if err := c.grow(to); err != nil {
		return err
	}
	from = max(from, c.first)
	perTxn := etcdgw.MaxTxnOps / len(ks)
	batches := make(chan [2]int)
	errs := make([]error, c.workers)
	var wg sync.WaitGroup
	for w := range c.workers {
		wg.Go(func() {
			for b := range batches {
				if errs[w] != nil {
					continue
				}
				errs[w] = c.put(ctx, ks, b[0], b[1])
			}
		})
	}
	for lo := from; lo < to; lo += perTxn {
		batches <- [2]int{lo, min(lo+perTxn, to)}
	}
	close(batches)
	wg.Wait()
	return errors.Join(errs...)
}

func (c *cloner) put(ctx context.Context, ks []kind, lo, hi int) error {
	kvs := make([]etcdgw.KeyValue, 0, (hi-lo)*len(ks))
	for i := lo; i < hi; i++ {
		for _, k := range ks {
			kv, err := c.copyOf(k, i)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
	}
	return c.etcd.PutAll(ctx, kvs)
}

// dump writes the template ApiKey and ApiKeyRecord, as etcd holds them,
// into dir (nothing when dir is empty). The Secret is left out: it holds
// the template's token.
func (c *cloner) dump(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for file, k := range map[string]kind{"apikey.json": apikeyKind, "apikeyrecord.json": recordKind} {
		if err := os.WriteFile(filepath.Join(dir, file), c.templates[k].Value, 0o644); err != nil {
			return err
		}
	}
	return nil
}
