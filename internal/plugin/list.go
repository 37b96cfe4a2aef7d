package plugin

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// listOptions are the flags of `kubectl apikey list`.
type listOptions struct {
	allNamespaces bool
	output        string
	noHeaders     bool
	selector      string
}

// The table's columns, and those -o wide adds after them.
var (
	tableColumns = []string{"NAME", "READY", "IDENTITY", "USER", "HINT", "EXPIRES", "LAST-USED", "AGE"}
	wideColumns  = []string{"SCOPES", "AUDIENCES", "SECRET", "MESSAGE"}
)

func newListCommand(r *root) *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:     "list [-A] [-l SELECTOR] [-o table|wide|json|yaml|name]",
		Aliases: []string{"ls"},
		Short:   "List ApiKeys with their user, token hint, expiry and last use",
		Long: `List the ApiKeys in the namespace, or in every namespace with -A.

READY is the key's Ready condition; USER is whom the key authenticates as;
HINT tells tokens apart without showing them; EXPIRES and LAST-USED are
relative to now (LAST-USED is flushed by the auth server in batches).
-o wide adds SCOPES, AUDIENCES, SECRET (status.secretName; <deleted> once
the Secret is gone) and MESSAGE (the Ready condition's message).

-o json and -o yaml print the ApiKeys as a v1 List and -o name prints
apikey.apikeys.dev/NAME lines, as 'kubectl get apikeys -o …' would.
-l selects keys by label on the API server, as kubectl's -l does.`,
		Example: `  # Keys in the current namespace
  kubectl apikey list

  # Keys in every namespace, with their scopes, Secret and status message
  kubectl apikey list -A -o wide

  # Names of team-a's keys, for a script
  kubectl apikey list -l team=a -o name`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			selector, err := o.validate()
			if err != nil {
				return err
			}
			s, err := r.connect()
			if err != nil {
				return err
			}
			return s.list(cmd.Context(), o, selector)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List keys in every namespace")
	f.StringVarP(&o.output, "output", "o", outputTable, "Output format: table, wide, json, yaml or name")
	f.BoolVar(&o.noHeaders, "no-headers", false, "Print the table (-o table or wide) without its header line")
	f.StringVarP(&o.selector, "selector", "l", "",
		"Label selector, e.g. -l team=a or -l 'env in (prod,staging)'; only keys that match are listed")
	return cmd
}

// validate checks the flags before anything is sent and returns the parsed
// label selector.
func (o *listOptions) validate() (labels.Selector, error) {
	if err := checkOutput(o.output, outputTable, outputWide, outputJSON, outputYAML, outputName); err != nil {
		return nil, err
	}
	selector, err := labels.Parse(o.selector)
	if err != nil {
		return nil, fmt.Errorf("-l/--selector %q is not a label selector: %w", o.selector, err)
	}
	return selector, nil
}

// list prints the keys the options select in the chosen format. The API
// server applies the namespace and label selector.
func (s *session) list(ctx context.Context, o *listOptions, selector labels.Selector) error {
	opts := []client.ListOption{client.MatchingLabelsSelector{Selector: selector}}
	if !o.allNamespaces {
		opts = append(opts, client.InNamespace(s.namespace))
	}

	if o.output != outputTable && o.output != outputWide {
		// Listed as the server has them, so fields this plugin's types do
		// not know (a newer operator's) are printed too.
		keys := &unstructured.UnstructuredList{}
		keys.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKeyList"))
		if err := s.client.List(ctx, keys, opts...); err != nil {
			return explain(err)
		}
		return printKeyList(s.streams.Out, o.output, keys.Items)
	}

	var keys apikeysv1alpha1.ApiKeyList
	if err := s.client.List(ctx, &keys, opts...); err != nil {
		return explain(err)
	}
	if len(keys.Items) == 0 {
		// Like kubectl, an empty list is a notice on stderr, not a failure;
		// one that cannot be written has nowhere else to go.
		if o.allNamespaces {
			_, _ = fmt.Fprintln(s.streams.ErrOut, "No ApiKeys found.")
		} else {
			_, _ = fmt.Fprintf(s.streams.ErrOut, "No ApiKeys found in %s namespace.\n", s.namespace)
		}
		return nil
	}
	return printTable(s.streams.Out, keys.Items, o, time.Now())
}

// printTable prints keys as a kubectl-style table: the table columns, the
// wide ones with -o wide, NAMESPACE first with -A.
func printTable(out io.Writer, keys []apikeysv1alpha1.ApiKey, o *listOptions, now time.Time) error {
	wide := o.output == outputWide
	w := printers.GetNewTabWriter(out)
	// Every line has cells, so w buffers them all; a failed write to out is
	// returned by w.Flush below.
	printRow := func(namespace string, cells []string) {
		if o.allNamespaces {
			cells = append([]string{namespace}, cells...)
		}
		_, _ = fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	if !o.noHeaders {
		header := tableColumns
		if wide {
			header = append(header[:len(header):len(header)], wideColumns...)
		}
		printRow("NAMESPACE", header)
	}
	for i := range keys {
		key := &keys[i]
		row := []string{
			key.Name,
			readyColumn(key),
			string(identityOf(key)),
			orNone(key.Status.Username),
			orNone(key.Status.TokenHint),
			expiresIn(key, now),
			ago(key.Status.LastUsedAt, now),
			age(key.CreationTimestamp, now),
		}
		if wide {
			row = append(row,
				orNone(strings.Join(key.Spec.Scopes, ",")),
				orNone(strings.Join(key.Spec.Audiences, ",")),
				secretColumn(key),
				readyMessage(key),
			)
		}
		printRow(key.Namespace, row)
	}
	return w.Flush()
}

func orNone(s string) string {
	if s == "" {
		return noValue
	}
	return s
}

// secretColumn is the SECRET cell: the Secret the token was delivered to,
// or <deleted> once it is gone.
func secretColumn(key *apikeysv1alpha1.ApiKey) string {
	if key.Status.SecretDeletedAt != nil {
		return "<deleted>"
	}
	return orNone(key.Status.SecretName)
}

// readyMessage is the MESSAGE cell: the Ready condition's message on one
// line.
func readyMessage(key *apikeysv1alpha1.ApiKey) string {
	c := meta.FindStatusCondition(key.Status.Conditions, apikeysv1alpha1.ConditionReady)
	if c == nil {
		return noValue
	}
	return orNone(strings.Join(strings.Fields(c.Message), " "))
}
