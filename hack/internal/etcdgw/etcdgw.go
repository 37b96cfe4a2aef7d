// Package etcdgw talks to etcd's gRPC-JSON gateway (on by default on the
// client URL): the same calls etcdctl makes, without adding etcd's Go
// client to the modules that measure the control plane. hack/scale reads
// and grows etcd with it; hack/bench loads keys straight into it.
package etcdgw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Gateway is one etcd's gateway.
type Gateway struct {
	url    string // e.g. http://127.0.0.1:2379
	client *http.Client
}

// New is a gateway for etcd at url, whose calls give up after timeout.
func New(url string, timeout time.Duration) *Gateway {
	return &Gateway{url: url, client: &http.Client{Timeout: timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

// ErrUnavailable is etcd's 503, which it answers when a request timed out
// inside it (a busy machine); the call may be repeated.
var ErrUnavailable = errors.New("etcd unavailable")

// call posts req as JSON to path and decodes the answer into resp.
func (g *Gateway) call(ctx context.Context, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	res, err := g.client.Do(r)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	switch {
	case res.StatusCode == http.StatusServiceUnavailable:
		return fmt.Errorf("%w: %s: %s", ErrUnavailable, path, bytes.TrimSpace(data))
	case res.StatusCode != http.StatusOK:
		return fmt.Errorf("etcd %s: %s: %s", path, res.Status, bytes.TrimSpace(data))
	case resp == nil:
		return nil
	}
	return json.Unmarshal(data, resp)
}

// header is the response header every etcd call returns. Int64 fields come
// as JSON strings from the gateway.
type header struct {
	Revision string `json:"revision"`
}

// DBSize is etcd's database file, free pages included: what the quota
// (--quota-backend-bytes) is checked against.
func (g *Gateway) DBSize(ctx context.Context) (int64, error) {
	var s struct {
		DBSize string `json:"dbSize"`
	}
	if err := g.call(ctx, "/v3/maintenance/status", struct{}{}, &s); err != nil {
		return 0, err
	}
	return strconv.ParseInt(s.DBSize, 10, 64)
}

// fieldKey is the key field of etcd's requests, as the gateway spells it.
const fieldKey = "key"

// compactRevKey is where kube-apiserver's compactor records the last
// compaction; every kube-apiserver watches it to learn how far etcd was
// compacted, and its watch cache then drops what it kept for older
// revisions.
const compactRevKey = "compact_rev_key"

// CompactDefrag compacts etcd to its current revision as a kube-apiserver
// compactor does (claiming compact_rev_key, so the API server's watch cache
// learns of it), then rewrites the file without free pages. It returns the
// database size, which then counts only the latest version of each key.
func (g *Gateway) CompactDefrag(ctx context.Context) (int64, error) {
	var cur struct {
		Header header `json:"header"`
		Kvs    []struct {
			Version string `json:"version"`
		} `json:"kvs"`
	}
	if err := g.call(ctx, "/v3/kv/range", map[string]any{fieldKey: []byte(compactRevKey)}, &cur); err != nil {
		return 0, err
	}
	version := "0"
	if len(cur.Kvs) > 0 {
		version = cur.Kvs[0].Version
	}
	rev := cur.Header.Revision
	claim := map[string]any{
		"compare": []map[string]any{{fieldKey: []byte(compactRevKey), "target": "VERSION", "result": "EQUAL", "version": version}},
		"success": []map[string]any{{"request_put": map[string]any{fieldKey: []byte(compactRevKey), "value": []byte(rev)}}},
	}
	var claimed struct {
		Succeeded bool `json:"succeeded"`
	}
	if err := g.call(ctx, "/v3/kv/txn", claim, &claimed); err != nil {
		return 0, err
	}
	if !claimed.Succeeded {
		return 0, errors.New("kube-apiserver compacted etcd at the same moment: measure again")
	}
	compact := map[string]any{"revision": rev, "physical": true}
	if err := g.call(ctx, "/v3/kv/compaction", compact, nil); err != nil {
		return 0, err
	}
	if err := g.call(ctx, "/v3/maintenance/defragment", struct{}{}, nil); err != nil {
		return 0, err
	}
	return g.DBSize(ctx)
}

// KeyValue is one stored key and its value, as the gateway returns them:
// the bytes kube-apiserver stored, JSON for custom resources, protobuf
// (with the "k8s\x00" magic) for built-in kinds such as Secrets, though
// kube-apiserver reads JSON for those too.
type KeyValue struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

// RangePrefix returns every key under prefix with its value.
func (g *Gateway) RangePrefix(ctx context.Context, prefix string) ([]KeyValue, error) {
	end := []byte(prefix)
	end[len(end)-1]++
	var resp struct {
		Kvs []KeyValue `json:"kvs"`
	}
	req := map[string]any{fieldKey: []byte(prefix), "range_end": end}
	if err := g.call(ctx, "/v3/kv/range", req, &resp); err != nil {
		return nil, err
	}
	return resp.Kvs, nil
}

// MaxTxnOps is etcd's default --max-txn-ops: the most puts one transaction
// may carry.
const MaxTxnOps = 128

// PutAll writes kvs in one transaction (at most MaxTxnOps of them). The
// puts are idempotent, so a transaction repeated after ErrUnavailable is
// harmless even if it did apply.
func (g *Gateway) PutAll(ctx context.Context, kvs []KeyValue) error {
	ops := make([]map[string]any, 0, len(kvs))
	for _, kv := range kvs {
		ops = append(ops, map[string]any{"request_put": map[string]any{fieldKey: kv.Key, "value": kv.Value}})
	}
	var resp struct {
		Succeeded bool `json:"succeeded"`
	}
	if err := g.call(ctx, "/v3/kv/txn", map[string]any{"success": ops}, &resp); err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcd transaction of %d puts did not succeed", len(kvs))
	}
	return nil
}
