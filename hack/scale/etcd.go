package main

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

// etcdGateway talks to etcd's gRPC-JSON gateway (on by default on the
// client URL): the same calls etcdctl makes, without adding etcd's Go client
// to the module.
type etcdGateway struct {
	url    string // e.g. http://127.0.0.1:2379
	client *http.Client
}

func newEtcdGateway(url string) *etcdGateway {
	return &etcdGateway{url: url, client: &http.Client{Timeout: 5 * time.Minute}}
}

// call posts req as JSON to path and decodes the answer into resp.
func (g *etcdGateway) call(ctx context.Context, path string, req, resp any) error {
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
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, res.Status, bytes.TrimSpace(data))
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(data, resp)
}

// header is the response header every etcd call returns. Int64 fields come
// as JSON strings from the gateway.
type header struct {
	Revision string `json:"revision"`
}

// status is etcd's view of its own database: dbSize is the bbolt file,
// free pages included, which the quota (--quota-backend-bytes) is checked
// against.
type status struct {
	DBSize string `json:"dbSize"`
}

func (g *etcdGateway) dbSize(ctx context.Context) (int64, error) {
	var s status
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

// compactDefrag compacts etcd to its current revision as a kube-apiserver
// compactor does (claiming compact_rev_key, so the API server's watch cache
// learns of it), then rewrites the file without free pages. It returns the
// database size, which then counts only the latest version of each key.
func (g *etcdGateway) compactDefrag(ctx context.Context) (int64, error) {
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
	return g.dbSize(ctx)
}

// keyValue is one stored key and its value, as the gateway returns them.
type keyValue struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

// rangePrefix returns every key under prefix with its value: the bytes
// kube-apiserver stored, JSON for custom resources, protobuf (with the
// "k8s\x00" magic) for built-in kinds such as Secrets.
func (g *etcdGateway) rangePrefix(ctx context.Context, prefix string) ([]keyValue, error) {
	end := []byte(prefix)
	end[len(end)-1]++
	var resp struct {
		Kvs []keyValue `json:"kvs"`
	}
	req := map[string]any{fieldKey: []byte(prefix), "range_end": end}
	if err := g.call(ctx, "/v3/kv/range", req, &resp); err != nil {
		return nil, err
	}
	return resp.Kvs, nil
}

// maxTxnOps is etcd's default --max-txn-ops: the most puts one transaction
// may carry.
const maxTxnOps = 128

// putAll writes kvs in one transaction (at most maxTxnOps of them).
func (g *etcdGateway) putAll(ctx context.Context, kvs []keyValue) error {
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
