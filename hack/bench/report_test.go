package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestMarkdown renders the report with no section run, and with every
// section run but empty or failed, which is where the template's branches
// are: it must render them all without an error.
func TestMarkdown(t *testing.T) {
	failed := errors.New("boom")
	empty := &report{}
	everySection := &report{
		envErr: failed,
		micro:  &microResult{err: failed, raw: "PASS"},
		http:   &httpResult{err: failed},
		revoke: &revokeResult{Err: failed},
		apply:  &applyResult{Err: failed},
		rotate: &rotateResult{Err: failed},
		issue:  &issueResult{Err: failed, GaveUp: true, writes: apiRequests{{verb: "POST", resource: "apikeys", N: 1}}},
		heap: &heapResult{Err: failed, WithKeys: true, BudgetHit: true, Samples: []heapSample{{Records: 1, ApiKeys: 2}},
			Combined: &heapResult{Mode: combinedMode, Err: failed}, Revoke: &scaleRevokeResult{LoadErr: failed}},
		applyAdmission: &admissionCost{Err: failed},
		issueAdmission: &admissionCost{Steps: []admissionStep{{What: "webhook"}, {What: "policy", Calls: 1}}},
	}
	for name, r := range map[string]*report{"nothing run": empty, "every section": everySection} {
		md, err := r.markdown(config{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, heading := range []string{"## Summary", "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7.",
			"## How to reproduce"} {
			if !strings.Contains(md, "\n"+heading) {
				t.Errorf("%s: no %q heading", name, heading)
			}
		}
	}
}

// TestHTTPHeadersServer: with the third closed-loop server measured, the
// report splits the gap into net/http's header cost and the auth server's
// own, in the section and in the summary.
func TestHTTPHeadersServer(t *testing.T) {
	r := &report{http: &httpResult{
		closed:  []closedRound{{Bare: 40000, Headers: 36000, Ours: 34200}},
		bareRPS: 40000, headersRPS: 36000, oursRPS: 34200,
	}}
	assertRenders(t, r,
		"| 1 | 40000 | 36000 | 34200 | 0.85× |",
		"The bare handler with the headers ran at 0.90× of the bare one, and the auth server at 0.95× of the bare handler with the headers",
		"0.85× (34200 vs 40000 req/s); a bare handler writing the same five headers: 0.90×, the auth server 0.95× of it")
}

// TestScaleRevocationSplit: trials that watched the index in process say
// when it refused the token, apart from the first 401.
func TestScaleRevocationSplit(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	trials := latencies{N: 100, P50: ms(4), P99: ms(23), Max: ms(24)}
	r := &report{heap: &heapResult{Combined: &heapResult{Mode: combinedMode}, Revoke: &scaleRevokeResult{
		revokeResult: revokeResult{Deleted: trials, Suspended: trials, All: trials,
			Indexed: latencies{N: 100, P50: ms(-0.5), P99: ms(19), Max: ms(20)}},
		Keys: 100000,
	}}}
	assertRenders(t, r,
		"It refused it -0.50 ms (p50), +19.00 ms (p99), +20.00 ms (max) after the API call returned",
		"the slow trials were mostly slow before the index knew")
}

// TestIssueReads: the issuance section counts the reads of the resources
// issuance touches, and only those, beside the writes.
func TestIssueReads(t *testing.T) {
	r := &report{issue: &issueResult{Keys: 1000, ConfigMaps: time.Second, Ready: 10 * time.Second,
		writes: apiRequests{{verb: "POST", resource: "apikeys", N: 1000}},
		reads:  apiRequests{{verb: "GET", resource: "secrets", N: 30}, {verb: "LIST", resource: "leases", N: 500}}}}
	md, err := r.markdown(config{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(md, "leases") {
		t.Error("the report counts reads of leases, which issuance does not touch")
	}
	assertRenders(t, r, "**0.03 per key**", "| GET | secrets | 30 | 0.03 |")
}

// assertRenders renders r and fails for each of wants the report lacks.
func assertRenders(t *testing.T, r *report, wants ...string) {
	t.Helper()
	md, err := r.markdown(config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}
