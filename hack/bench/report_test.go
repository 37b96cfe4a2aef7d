package main

import (
	"errors"
	"strings"
	"testing"
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
		issue:  &issueResult{Err: failed, GaveUp: true, writes: apiWrites{{verb: "POST", resource: "apikeys", N: 1}}},
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
