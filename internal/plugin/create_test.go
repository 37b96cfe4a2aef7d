package plugin

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

var _ = Describe("kubectl apikey create --dry-run", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	flags := []string{"--scopes", "deployments:write,images:read", "--audiences", "registry", "--ttl", "2h",
		"--description", "deploys from CI", "--prefix", "ro_pat", "--secret-name", "ci-token"}

	DescribeTable("=client prints the ApiKey without contacting the cluster",
		func(output []string, want func(name, ns string) string) {
			name := keyName()
			args := append([]string{"create", name, "--dry-run=client", "--scopes", "a,b", "--ttl", "720h"}, output...)
			r := kubectlApikeyWith(unreachableKubeconfig(), args...)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stderr).To(BeEmpty())
			Expect(r.stdout).To(Equal(want(name, "from-context")))
		},
		Entry("-o yaml", []string{"-o", "yaml"}, func(name, ns string) string {
			return "apiVersion: apikeys.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: " + name + "\n  namespace: " + ns +
				"\nspec:\n  scopes:\n  - a\n  - b\n  ttl: 720h0m0s\n"
		}),
		Entry("-o json", []string{"-ojson"}, func(name, ns string) string {
			return `{
    "apiVersion": "apikeys.dev/v1alpha1",
    "kind": "ApiKey",
    "metadata": {
        "name": "` + name + `",
        "namespace": "` + ns + `"
    },
    "spec": {
        "scopes": [
            "a",
            "b"
        ],
        "ttl": "720h0m0s"
    }
}
`
		}),
		Entry("-o name", []string{"--output=name"}, func(name, _ string) string { return "apikey.apikeys.dev/" + name + "\n" }),
		Entry("without -o, one line as kubectl says it", nil, func(name, ns string) string {
			return "apikey/" + name + " created in namespace " + ns + " (dry run)\n"
		}),
	)

	It("=client -o yaml is a manifest the API server takes as create would make it", func() {
		name := keyName()
		r := kubectlApikeyWith(unreachableKubeconfig(), append([]string{"create", name, "-n", ns, "--dry-run=client", "-o", "yaml"}, flags...)...)
		Expect(r.code).To(Equal(0), r.stderr)

		// Only what a user writes: no status, nothing a server sets.
		raw := map[string]any{}
		Expect(yaml.Unmarshal([]byte(r.stdout), &raw)).To(Succeed())
		Expect(raw).To(HaveLen(4))
		Expect(raw).To(HaveKey("spec"))
		Expect(raw["metadata"]).To(Equal(map[string]any{"name": name, "namespace": ns}))
		manifest := &apikeysv1alpha1.ApiKey{}
		Expect(yaml.UnmarshalStrict([]byte(r.stdout), manifest)).To(Succeed())
		Expect(manifest.GroupVersionKind()).To(Equal(apikeysv1alpha1.GroupVersion.WithKind("ApiKey")))

		// The API server accepts the manifest (server-side dry run), and
		// makes of it, defaults included, what create makes of the flags.
		accepted := manifest.DeepCopy()
		Expect(k8sClient.Create(ctx, accepted, client.DryRunAll)).To(Succeed())
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(manifest), &apikeysv1alpha1.ApiKey{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a dry run stored the key: %v", err)

		made := created(ns, name, append(flags, "--wait=false")...)
		Expect(made.Spec).To(Equal(accepted.Spec))
		Expect(made.Spec.Prefix).To(Equal("ro_pat"))
		Expect(made.Labels).To(Equal(accepted.Labels))
		Expect(made.Annotations).To(Equal(accepted.Annotations))
	})

	It("=server prints the server's answer and stores nothing; a spec it refuses exits non-zero", func() {
		name := keyName()
		r := kubectlApikey("create", name, "-n", ns, "--dry-run=server", "-o", "yaml", "--ttl", "1h")
		Expect(r.code).To(Equal(0), r.stderr)
		answer := &apikeysv1alpha1.ApiKey{}
		Expect(yaml.UnmarshalStrict([]byte(r.stdout), answer)).To(Succeed())
		Expect(answer.Spec.Prefix).To(Equal("ak"), "the server's defaults are missing")
		Expect(answer.UID).NotTo(BeEmpty())

		r = kubectlApikey("create", name, "-n", ns, "--dry-run=server")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("apikey/" + name + " created in namespace " + ns + " (server dry run)\n"))

		r = kubectlApikey("create", name, "-n", ns, "--dry-run=server", "--prefix", "Not_A_Prefix")
		Expect(r.code).To(Equal(1))
		Expect(r.stdout).To(BeEmpty())
		Expect(r.stderr).To(ContainSubstring("spec.prefix"))

		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &apikeysv1alpha1.ApiKey{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a dry run stored the key: %v", err)
	})

	It("without a dry run, -o prints the created key once it is Ready, never its token", func() {
		name := keyName()
		r := kubectlApikey("create", name, "-n", ns, "-o", "yaml")
		Expect(r.code).To(Equal(0), r.stderr)
		printed := &apikeysv1alpha1.ApiKey{}
		Expect(yaml.UnmarshalStrict([]byte(r.stdout), printed)).To(Succeed())
		key := fetchKey(ns, name)
		Expect(printed.Status.TokenHint).To(Equal(key.Status.TokenHint))
		Expect(printed.ManagedFields).To(BeEmpty())
		Expect(readyStatus(ns, name)()).To(Equal(metav1.ConditionTrue))
		Expect(r.stdout + r.stderr).NotTo(ContainSubstring(tokenOf(key)))

		r = kubectlApikey("create", keyName(), "-n", ns, "-o", "name", "--wait=false")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`^apikey\.apikeys\.dev/key-\w+\n$`))
	})

	DescribeTable("refuses bad flags before contacting the cluster",
		func(args []string, wantErr string) {
			r := kubectlApikeyWith(unreachableKubeconfig(), append([]string{"create", keyName()}, args...)...)
			Expect(r.code).To(Equal(1))
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(Equal("error: " + wantErr + "\n"))
		},
		Entry("a bare --dry-run", []string{"--dry-run"},
			`--dry-run needs a value: --dry-run=client or --dry-run=server ("none" creates the key)`),
		Entry("an unknown --dry-run", []string{"--dry-run=local"}, `unknown --dry-run value "local": use none, client or server`),
		Entry("an -o create does not print", []string{"--dry-run=client", "-o", "wide"},
			`unknown output format "wide": -o must be one of json, yaml, name`),
		Entry("a bad flag value in a dry run", []string{"--dry-run=client", "--ttl=-1h"},
			"--ttl must be positive, e.g. 720h for 30 days; got -1h0m0s"),
	)
})
