package policy

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// OwnerPolicyYAML is the shipped owner rule: a ValidatingAdmissionPolicy
// and its binding, with the default lists. config/policy and the Helm chart
// carry copies; tests keep them equal.
//
//go:embed owner_policy.yaml
var OwnerPolicyYAML []byte

// Names of the two variables the operator's flags set in the policy.
const (
	ownerRequestersVariable = "ownerRequesters"
	forbiddenGroupsVariable = "forbiddenGroups"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get

// OwnerRule is the owner rule as it must stand in the cluster.
type OwnerRule struct {
	Policy  *admissionregistrationv1.ValidatingAdmissionPolicy
	Binding *admissionregistrationv1.ValidatingAdmissionPolicyBinding
}

// OwnerRule renders the shipped policy and binding for p's names and lists.
func (p *Policy) OwnerRule() (*OwnerRule, error) {
	rule, err := decodeOwnerRule(OwnerPolicyYAML)
	if err != nil {
		return nil, err
	}
	rule.Policy.Name, rule.Binding.Name = p.policyName, p.bindingName
	rule.Binding.Spec.PolicyName = p.policyName
	setLists(rule.Policy.Spec.Variables, map[string][]string{
		ownerRequestersVariable: p.ownerRequesters,
		forbiddenGroupsVariable: p.forbiddenGroups(),
	})
	return rule, nil
}

// setLists sets each variable named in lists to its list, as a CEL list
// literal: the policies' variables the operator's flags decide.
func setLists(vars []admissionregistrationv1.Variable, lists map[string][]string) {
	for i := range vars {
		if list, ok := lists[vars[i].Name]; ok {
			vars[i].Expression = CELList(list)
		}
	}
}

// CELList writes list as a CEL list literal of strings. JSON's string
// escapes are all valid in CEL's double-quoted strings.
func CELList(list []string) string {
	if len(list) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(list)
	return string(b)
}

func decodeOwnerRule(manifest []byte) (*OwnerRule, error) {
	rule := &OwnerRule{
		Policy:  &admissionregistrationv1.ValidatingAdmissionPolicy{},
		Binding: &admissionregistrationv1.ValidatingAdmissionPolicyBinding{},
	}
	if err := decodeManifest(manifest, "the owner policy", rule.Policy, rule.Binding); err != nil {
		return nil, err
	}
	return rule, nil
}

// decodeManifest decodes the documents of a YAML manifest into objs, each
// document into the one of its kind (named by its Go type), and fails
// unless every one of objs was found.
func decodeManifest(manifest []byte, what string, objs ...any) error {
	byKind := map[string]any{}
	for _, obj := range objs {
		byKind[reflect.TypeOf(obj).Elem().Name()] = obj
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("decoding %s: %w", what, err)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(raw, &tm); err != nil {
			return err
		}
		into, ok := byKind[tm.Kind]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, into); err != nil {
			return err
		}
		delete(byKind, tm.Kind)
	}
	if len(byKind) > 0 {
		return fmt.Errorf("%s: the manifest lacks the policy or its binding", what)
	}
	return nil
}

// OwnerRuleInForceSince reads the owner rule's policy and binding from the
// API server and returns the instant from which both have stood unchanged
// and equal to OwnerRule: the latest of their creation and of every write to
// them (managed fields record when each writer last changed them), and, for
// a policy changed in place, of its status's last write. A key created after
// that instant was admitted under the rule. A rule that is missing, differs,
// or whose last change has no known time is a violation whose message says
// what to fix.
//
// reader must read from the API server, not a cache that drops managed
// fields.
func (p *Policy) OwnerRuleInForceSince(ctx context.Context, reader client.Reader) (time.Time, error) {
	want, err := p.OwnerRule()
	if err != nil {
		return time.Time{}, err
	}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	for _, obj := range []client.Object{policy, binding} {
		name := p.policyName
		if obj == binding {
			name = p.bindingName
		}
		if err := reader.Get(ctx, client.ObjectKey{Name: name}, obj); apierrors.IsNotFound(err) {
			return time.Time{}, violation(RuleOwnerPolicy,
				"the owner rule is not in force: %T %q is missing, so nothing checked who created this key; "+
					"install config/policy (or the chart) and recreate the key, or use identity Key", obj, name)
		} else if err != nil {
			return time.Time{}, fmt.Errorf("reading the owner policy: %w", err)
		}
	}
	if !equality.Semantic.DeepEqual(policy.Spec, want.Policy.Spec) {
		return time.Time{}, violation(RuleOwnerPolicy,
			"the owner rule is not as shipped: ValidatingAdmissionPolicy %q differs from the operator's (check --owner-requesters "+
				"and --forbidden-groups match the policy's lists); restore it and recreate the key", p.policyName)
	}
	if !equality.Semantic.DeepEqual(binding.Spec, want.Binding.Spec) {
		return time.Time{}, violation(RuleOwnerPolicy,
			"the owner rule is not as shipped: ValidatingAdmissionPolicyBinding %q differs from the operator's; restore it and recreate the key",
			p.bindingName)
	}
	since := lastChange(policy, binding)
	// A write that only removes fields (a JSON-patch remove, a three-way
	// merge that drops a condition someone added) takes no field, so it
	// leaves no managed-fields time: an edit that paused the rule, undone
	// that way, would not show. generation counts every change of spec, so
	// an object changed in place needs another witness of when it took its
	// current form. The policy has one, its status, which
	// kube-controller-manager writes after type-checking each generation;
	// the binding has none, so it must be as it was created.
	if binding.Generation > 1 {
		return time.Time{}, violation(RuleOwnerPolicy,
			"the owner rule's ValidatingAdmissionPolicyBinding %q was changed in place (generation %d), and kube-apiserver keeps no "+
				"time for an edit that only removes fields, so nothing shows it stood unchanged since this key was created: "+
				"re-create it (kubectl replace --force -f), then recreate the key", p.bindingName, binding.Generation)
	}
	if policy.Generation > 1 {
		checked := managedTime(policy, "status")
		if policy.Status.ObservedGeneration != policy.Generation || checked.IsZero() {
			v := violation(RuleOwnerPolicy,
				"the owner rule's ValidatingAdmissionPolicy %q was changed in place (generation %d), and kube-apiserver keeps no "+
					"time for an edit that only removes fields; its status, which kube-controller-manager writes after each change, "+
					"does not show the current one yet (status.observedGeneration %d), so nothing shows since when the rule stands. "+
					"If it stays behind, kube-controller-manager's validatingadmissionpolicy-status-controller is not running: "+
					"re-create the policy (kubectl replace --force -f)",
				p.policyName, policy.Generation, policy.Status.ObservedGeneration)
			v.Pending = true
			return time.Time{}, v
		}
		since = later(since, checked)
	}
	return since, nil
}

// lastChange is the latest creation or managed-fields time of objs. Status
// (the API server's type checking) does not change what is enforced.
func lastChange(objs ...client.Object) time.Time {
	var last time.Time
	for _, obj := range objs {
		last = later(last, obj.GetCreationTimestamp().Time, managedTime(obj, ""))
	}
	return last
}

// managedTime is the latest time a writer of obj's subresource ("" for the
// object itself) changed it; zero if none did.
func managedTime(obj client.Object, subresource string) time.Time {
	var last time.Time
	for _, mf := range obj.GetManagedFields() {
		if mf.Subresource == subresource && mf.Time != nil {
			last = later(last, mf.Time.Time)
		}
	}
	return last
}

// later is the latest of ts.
func later(ts ...time.Time) time.Time {
	var last time.Time
	for _, t := range ts {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// CheckOwnerRuleCovers refuses a key created no later than the rule came
// into force (timestamps have whole seconds, so the same second is too
// close to tell).
func CheckOwnerRuleCovers(since, created time.Time) error {
	if created.After(since) {
		return nil
	}
	return violation(RuleOwnerPolicy,
		"the owner rule came into force at %s, not before this key was created at %s, so nothing checked who created it: "+
			"recreate the key, or use identity Key", since.UTC().Format(time.RFC3339), created.UTC().Format(time.RFC3339))
}
