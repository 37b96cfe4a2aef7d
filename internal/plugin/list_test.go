package plugin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// listMarker labels the keys of the list specs, so that -A -l listMarkerLabel
// lists them and no other spec's.
var listMarker = "list-" + rand.String(6)

const listMarkerLabel = "plugin.test/list"

var _ = Describe("kubectl apikey list", Ordered, func() {
	// The keys the specs print: alpha and beta in ns, gamma in other.
	var ns, other string
	BeforeAll(func() {
		ns, other = newNamespace(), newNamespace()
		for _, k := range []struct {
			ns, name, team string
			flags          []string
		}{
			{ns, "alpha", "a", []string{"--scopes", "deployments:write,images:read", "--audiences", "registry"}},
			{ns, "beta", "b", nil},
			{other, "gamma", "a", nil},
		} {
			key := created(k.ns, k.name, k.flags...)
			patch := client.MergeFrom(key.DeepCopy())
			key.Labels = map[string]string{"team": k.team, listMarkerLabel: listMarker}
			Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
		}
	})

	// inNamespace runs list in ns unless args ask for -A.
	inNamespace := func(args []string) result {
		GinkgoHelper()
		if !strings.Contains(strings.Join(args, " "), "-A") {
			args = append(args, "-n", ns)
		}
		r := kubectlApikey(append([]string{"list"}, args...)...)
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stderr).To(BeEmpty())
		return r
	}

	DescribeTable("prints each format",
		func(args []string, check func(stdout string)) { check(inNamespace(args).stdout) },
		Entry("table: the default columns, the namespace's keys", []string{}, func(stdout string) {
			lines := tableLines(stdout)
			Expect(strings.Fields(lines[0])).To(Equal(tableColumns))
			Expect(firstColumn(lines[1:])).To(Equal([]string{"alpha", "beta"}))
			alpha := fetchKey(ns, "alpha")
			Expect(rowOf(lines, "alpha")[:5]).To(Equal([]string{"alpha", "True", "Key", alpha.Status.Username, alpha.Status.TokenHint}))
		}),
		Entry("-o table is the default", []string{"-o", "table"}, func(stdout string) {
			Expect(strings.Fields(tableLines(stdout)[0])).To(Equal(tableColumns))
		}),
		Entry("-o wide: scopes, audiences, Secret and the Ready message after them", []string{"-o", "wide"}, func(stdout string) {
			lines := tableLines(stdout)
			Expect(strings.Fields(lines[0])).To(Equal(append(append([]string{}, tableColumns...), wideColumns...)))
			// EXPIRES is two fields ("in 23h"), so SCOPES is the tenth.
			Expect(rowOf(lines, "alpha")[9:12]).To(Equal([]string{"deployments:write,images:read", "registry", "alpha-token"}))
			Expect(rowOf(lines, "beta")[9:12]).To(Equal([]string{"<none>", "<none>", "beta-token"}))
			alpha := fetchKey(ns, "alpha")
			Expect(lineOf(lines, "alpha")).To(HaveSuffix(readyMessage(alpha)))
		}),
		Entry("--no-headers: rows only", []string{"--no-headers"}, func(stdout string) {
			Expect(firstColumn(tableLines(stdout))).To(Equal([]string{"alpha", "beta"}))
		}),
		Entry("-o wide --no-headers", []string{"-o", "wide", "--no-headers"}, func(stdout string) {
			lines := tableLines(stdout)
			Expect(firstColumn(lines)).To(Equal([]string{"alpha", "beta"}))
			Expect(strings.Fields(lines[0])[11]).To(Equal("alpha-token"))
		}),
		Entry("-o json: a v1 List of ApiKeys, as kubectl get -o json", []string{"-o", "json"}, func(stdout string) {
			Expect(stdout).To(HavePrefix("{\n    \"apiVersion\": \"v1\",\n    \"items\": ["))
			list := map[string]any{}
			Expect(json.Unmarshal([]byte(stdout), &list)).To(Succeed())
			expectKeyList(list, ns+"/alpha", ns+"/beta")
		}),
		Entry("-o yaml: the same List", []string{"-o", "yaml"}, func(stdout string) {
			Expect(stdout).To(HavePrefix("apiVersion: v1\nitems:\n- apiVersion: apikeys.dev/v1alpha1\n  kind: ApiKey\n"))
			list := map[string]any{}
			Expect(yaml.Unmarshal([]byte(stdout), &list)).To(Succeed())
			expectKeyList(list, ns+"/alpha", ns+"/beta")
		}),
		Entry("-o name: resource/name lines", []string{"-o", "name"}, func(stdout string) {
			Expect(stdout).To(Equal("apikey.apikeys.dev/alpha\napikey.apikeys.dev/beta\n"))
		}),
		Entry("-l selects on the API server", []string{"-l", "team=a"}, func(stdout string) {
			Expect(firstColumn(tableLines(stdout)[1:])).To(Equal([]string{"alpha"}))
		}),
		Entry("--selector with a set", []string{"--selector", "team in (a,b)", "-o", "name"}, func(stdout string) {
			Expect(stdout).To(Equal("apikey.apikeys.dev/alpha\napikey.apikeys.dev/beta\n"))
		}),
		Entry("-A: a NAMESPACE column and every namespace's keys", []string{"-A", "-l", listMarkerLabel + "=" + listMarker}, func(stdout string) {
			lines := tableLines(stdout)
			Expect(strings.Fields(lines[0])).To(Equal(append([]string{"NAMESPACE"}, tableColumns...)))
			Expect(rowOf(lines, "alpha")[0]).To(Equal(ns))
			Expect(rowOf(lines, "gamma")[0]).To(Equal(other))
			Expect(lines).To(HaveLen(4))
		}),
		Entry("-A -o wide --no-headers", []string{"-A", "-o", "wide", "--no-headers", "-l", listMarkerLabel + "=" + listMarker}, func(stdout string) {
			lines := tableLines(stdout)
			Expect(lines).To(HaveLen(3))
			Expect(rowOf(append([]string{""}, lines...), "gamma")[:2]).To(Equal([]string{other, "gamma"}))
			Expect(rowOf(append([]string{""}, lines...), "gamma")[12]).To(Equal("gamma-token"))
		}),
		Entry("-A -o json", []string{"-A", "-o", "json", "-l", listMarkerLabel + "=" + listMarker}, func(stdout string) {
			list := map[string]any{}
			Expect(json.Unmarshal([]byte(stdout), &list)).To(Succeed())
			expectKeyList(list, ns+"/alpha", ns+"/beta", other+"/gamma")
		}),
		Entry("-A -l with two terms -o name", []string{"-A", "-l", listMarkerLabel + "=" + listMarker + ",team=a", "-o", "name"}, func(stdout string) {
			Expect(strings.SplitAfter(stdout, "\n")).To(ConsistOf("apikey.apikeys.dev/alpha\n", "apikey.apikeys.dev/gamma\n", ""))
		}),
	)

	DescribeTable("prints what kubectl get prints",
		func(format string) {
			kubectl := filepath.Join(testEnv.BinaryAssetsDirectory, "kubectl")
			selector := listMarkerLabel + "=" + listMarker
			// Both read the server; retried in case the operator writes a
			// status between the two reads.
			Eventually(func(g Gomega) {
				want, err := exec.Command(kubectl, "--kubeconfig", adminKubeconfig,
					"get", "apikeys", "-A", "-l", selector, "-o", format).Output()
				g.Expect(err).NotTo(HaveOccurred())
				got := kubectlApikey("list", "-A", "-l", selector, "-o", format)
				g.Expect(got.code).To(Equal(0), got.stderr)
				g.Expect(got.stdout).To(Equal(string(want)))
			}, timeout, interval).Should(Succeed())
		},
		Entry("-o json", outputJSON),
		Entry("-o yaml", outputYAML),
		Entry("-o name", outputName),
	)

	It("prints an empty List, no names, or a notice when nothing matches", func() {
		for format, want := range map[string]string{
			outputJSON: "{\n    \"apiVersion\": \"v1\",\n    \"items\": [],\n    \"kind\": \"List\",\n" +
				"    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n",
			outputYAML: "apiVersion: v1\nitems: []\nkind: List\nmetadata:\n  resourceVersion: \"\"\n",
			outputName: "",
		} {
			r := kubectlApikey("list", "-n", ns, "-l", "team=nobody", "-o", format)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(Equal(want), format)
			Expect(r.stderr).To(BeEmpty(), format)
		}
		for _, format := range []string{outputTable, outputWide} {
			r := kubectlApikey("list", "-n", ns, "-l", "team=nobody", "-o", format, "--no-headers")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(Equal("No ApiKeys found in " + ns + " namespace.\n"))
		}
	})

	DescribeTable("refuses bad flags before asking the server, exiting non-zero",
		func(args []string, wantErr string) {
			// A kubeconfig for a server that fails the spec if asked anything.
			r := kubectlApikeyWith(unreachableKubeconfig(), append([]string{"list"}, args...)...)
			Expect(r.code).To(Equal(1))
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(HavePrefix("error: " + wantErr))
		},
		Entry("an unknown -o", []string{"-o", "xml"}, `unknown output format "xml": -o must be one of table, wide, json, yaml, name`),
		Entry("an -o create takes but list does not", []string{"-o", "jsonpath"},
			`unknown output format "jsonpath": -o must be one of table, wide, json, yaml, name`),
		Entry("a selector that does not parse", []string{"-l", "team in a"},
			`-l/--selector "team in a" is not a label selector: `),
	)
})

// expectKeyList checks that list is a v1 List of exactly the ApiKeys want
// (namespace/name), each with apiVersion, kind and status, none with
// managedFields.
func expectKeyList(list map[string]any, want ...string) {
	GinkgoHelper()
	Expect(list).To(HaveKeyWithValue("apiVersion", "v1"))
	Expect(list).To(HaveKeyWithValue("kind", "List"))
	items, ok := list["items"].([]any)
	Expect(ok).To(BeTrue(), "items is %T", list["items"])
	got := make([]string, 0, len(items))
	for _, item := range items {
		data, err := json.Marshal(item)
		Expect(err).NotTo(HaveOccurred())
		key := &apikeysv1alpha1.ApiKey{}
		Expect(json.Unmarshal(data, key)).To(Succeed())
		Expect(key.APIVersion).To(Equal("apikeys.dev/v1alpha1"))
		Expect(key.Kind).To(Equal("ApiKey"))
		Expect(key.ManagedFields).To(BeEmpty())
		Expect(key.Status.TokenHint).To(Equal(fetchKey(key.Namespace, key.Name).Status.TokenHint))
		got = append(got, key.Namespace+"/"+key.Name)
	}
	// -A lists by namespace, and namespaces have random names.
	Expect(got).To(ConsistOf(want))
}

// tableLines are the non-empty lines of a table.
func tableLines(stdout string) []string {
	return strings.Split(strings.TrimRight(stdout, "\n"), "\n")
}

// firstColumn is the first field of each line.
func firstColumn(lines []string) []string {
	names := make([]string, 0, len(lines))
	for _, line := range lines {
		names = append(names, strings.Fields(line)[0])
	}
	return names
}

// lineOf is the table line of the key called name.
func lineOf(lines []string, name string) string {
	for _, line := range lines {
		if strings.Fields(line)[0] == name {
			return line
		}
	}
	return ""
}

// unreachableKubeconfig writes a kubeconfig whose server fails the running
// spec on any request, for commands that must not contact the cluster.
func unreachableKubeconfig() string {
	GinkgoHelper()
	var asked atomic.Int32
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Error(w, "this spec's plugin command must not contact the cluster", http.StatusInternalServerError)
	}))
	DeferCleanup(func() {
		server.Close()
		Expect(asked.Load()).To(BeZero(), "the plugin sent %d requests to the cluster", asked.Load())
	})
	kc := clientcmdapi.NewConfig()
	kc.Clusters["nowhere"] = &clientcmdapi.Cluster{Server: server.URL}
	kc.AuthInfos["nobody"] = &clientcmdapi.AuthInfo{Token: "not-a-token"}
	kc.Contexts["nowhere"] = &clientcmdapi.Context{Cluster: "nowhere", AuthInfo: "nobody", Namespace: "from-context"}
	kc.CurrentContext = "nowhere"
	path := filepath.Join(GinkgoT().TempDir(), "nowhere.kubeconfig")
	Expect(clientcmd.WriteToFile(*kc, path)).To(Succeed())
	return path
}

var _ = Describe("What the plugin prints", func() {
	It("escapes characters that drive a terminal, wherever they come from", func() {
		// ESC and CR, as kubectl escapes them, and C1's one-character CSI
		// and OSC, which some terminals act on as they do on ESC [ and ESC ].
		const title = "\x1b]0;owned\x07\x1b[2J\r\u009b2J\u009d0;owned\u009c"

		By("an error, as Run prints it")
		var errOut bytes.Buffer
		code := Run(ctx, []string{"list", "--kubeconfig", "/nonexistent/" + title},
			genericiooptions.IOStreams{In: strings.NewReader(""), Out: &errOut, ErrOut: &errOut})
		Expect(code).To(Equal(1))
		Expect(errOut.String()).To(ContainSubstring("^[]0;owned"))
		Expect(errOut.String()).NotTo(ContainSubstring("\x1b"))
		Expect(errOut.String()).NotTo(ContainSubstring("\r"))
		Expect(errOut.String()).NotTo(ContainSubstring("\u009b"))

		By("a key's status, which anyone holding apikeys/status may write")
		forged := apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ci"}}
		forged.Status.Username = "alice" + title
		forged.Status.Conditions = []metav1.Condition{{Type: apikeysv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
			Reason: "Issued", Message: "Token ak_7Qz4… is live" + title}}
		var out bytes.Buffer
		streams := terminalSafeStreams(genericiooptions.IOStreams{Out: &out, ErrOut: &out})
		Expect(printTable(streams.Out, []apikeysv1alpha1.ApiKey{forged}, &listOptions{output: outputWide}, time.Now())).To(Succeed())
		Expect(out.String()).To(ContainSubstring("alice^[]0;owned"))
		Expect(out.String()).NotTo(ContainSubstring("\x1b"))
		Expect(out.String()).To(ContainSubstring(`\u009b2J`))
		Expect(out.String()).NotTo(ContainSubstring("\u009b"))
		Expect(out.String()).NotTo(ContainSubstring("\u009d"))
	})
})
