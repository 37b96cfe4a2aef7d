package policy

import (
	_ "embed"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
)

// DefaultsPolicyYAML is the shipped defaults rule: the MutatingAdmissionPolicy
// that stamps a new ApiKey's finalizer, Secret name and owner inside
// kube-apiserver, and its binding, with the default forbidden groups.
// config/policy and the Helm chart carry copies (`make manifests` writes
// them; `make verify` fails when they differ).
//
//go:embed defaults_policy.yaml
var DefaultsPolicyYAML []byte

// DefaultsRule is the defaults policy as it should stand in the cluster. It
// is a convenience, not a security boundary (the owner rule checks what it
// stamps), so the operator does not check it is in force: without it, a
// key's create carries no finalizer, which issuance then adds, and an
// identity: Owner key no owner, which the owner rule refuses.
type DefaultsRule struct {
	Policy  *admissionregistrationv1.MutatingAdmissionPolicy
	Binding *admissionregistrationv1.MutatingAdmissionPolicyBinding
}

// DefaultsRule renders the shipped defaults policy and binding with p's
// forbidden groups, under their shipped names.
func (p *Policy) DefaultsRule() (*DefaultsRule, error) {
	rule := &DefaultsRule{
		Policy:  &admissionregistrationv1.MutatingAdmissionPolicy{},
		Binding: &admissionregistrationv1.MutatingAdmissionPolicyBinding{},
	}
	if err := decodeManifest(DefaultsPolicyYAML, "the defaults policy", rule.Policy, rule.Binding); err != nil {
		return nil, err
	}
	setLists(rule.Policy.Spec.Variables, map[string][]string{forbiddenGroupsVariable: p.forbiddenGroups()})
	return rule, nil
}
