package deploy

import (
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/apikey-operator/apikey-operator/internal/policy"
)

// TestOwnerPolicyIsWhatTheManagerExpects: kustomize and the chart ship the
// owner policy exactly as the manager, started with the flags they give it,
// renders it; otherwise the manager would refuse every Owner key.
func TestOwnerPolicyIsWhatTheManagerExpects(t *testing.T) {
	for _, tc := range []struct {
		name     string
		manifest func(t *testing.T) []byte
	}{
		{"kustomize config/default", func(t *testing.T) []byte { return kustomizeBuild(t, "config/default") }},
		{"chart, defaults", func(t *testing.T) []byte { return helmTemplate(t, "apikey-operator-system") }},
		{"chart, lists set", func(t *testing.T) []byte {
			return helmTemplate(t, "apikey-operator-system", "--set",
				`ownerRequesters[0]=system:serviceaccount:ci:minter,forbiddenGroups[0]=cluster-admins,forbiddenGroups[1]=o'brien,`+
					`forbiddenGroups[2]=ops #1`) // unquoted, " #" would start a YAML comment in the flag
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := decode(t, tc.manifest(t))
			policies := byKind(objs, "ValidatingAdmissionPolicy")
			bindings := byKind(objs, "ValidatingAdmissionPolicyBinding")
			if len(policies) != 1 || len(bindings) != 1 {
				t.Fatalf("want one owner policy and one binding, got %d and %d", len(policies), len(bindings))
			}
			var vap admissionregistrationv1.ValidatingAdmissionPolicy
			var vapb admissionregistrationv1.ValidatingAdmissionPolicyBinding
			convert(t, policies[0], &vap)
			convert(t, bindings[0], &vapb)

			args := map[string]string{}
			for _, d := range byKind(objs, "Deployment") {
				dep := deployment(t, d)
				if c := container(dep, "manager"); c != nil {
					for _, a := range c.Args {
						if k, v, ok := strings.Cut(a, "="); ok {
							args[k] = v
						}
					}
				}
			}
			split := func(s string) []string {
				if s == "" {
					return nil
				}
				return strings.Split(s, ",")
			}
			names := func(flag, def string) string {
				if v, ok := args[flag]; ok {
					return v
				}
				return def
			}
			want, err := policy.New(policy.Options{
				ForbiddenGroups:        split(args["--forbidden-groups"]),
				OwnerRequesters:        split(args["--owner-requesters"]),
				OwnerPolicyName:        names("--owner-policy", "apikey-operator-owner-policy"),
				OwnerPolicyBindingName: names("--owner-policy-binding", "apikey-operator-owner-policy-binding"),
			}).OwnerRule()
			must(t, err)
			if vap.Name != want.Policy.Name || vapb.Name != want.Binding.Name {
				t.Errorf("names %q, %q; the manager looks for %q, %q", vap.Name, vapb.Name, want.Policy.Name, want.Binding.Name)
			}
			if !equality.Semantic.DeepEqual(vap.Spec, want.Policy.Spec) {
				t.Errorf("the policy differs from what the manager renders from its flags %v", args)
			}
			if !equality.Semantic.DeepEqual(vapb.Spec, want.Binding.Spec) {
				t.Errorf("the binding differs from what the manager renders")
			}
		})
	}
}
