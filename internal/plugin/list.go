package plugin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

func newListCommand(r *root) *cobra.Command {
	var allNamespaces bool
	cmd := &cobra.Command{
		Use:     "list [-A]",
		Aliases: []string{"ls"},
		Short:   "List ApiKeys with their user, token hint, expiry and last use",
		Long: `List the ApiKeys in the namespace, or in every namespace with -A.

READY is the key's Ready condition; USER is whom the key authenticates as;
HINT tells tokens apart without showing them; EXPIRES and LAST-USED are
relative to now (LAST-USED is flushed by the auth server in batches).`,
		Example: `  # Keys in the current namespace
  kubectl apikey list

  # Keys in every namespace
  kubectl apikey list -A`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := r.connect()
			if err != nil {
				return err
			}
			return s.list(cmd.Context(), allNamespaces)
		},
	}
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "List keys in every namespace")
	return cmd
}

// list prints the keys as a kubectl-style table.
func (s *session) list(ctx context.Context, allNamespaces bool) error {
	var keys apikeysv1alpha1.ApiKeyList
	var opts []client.ListOption
	if !allNamespaces {
		opts = append(opts, client.InNamespace(s.namespace))
	}
	if err := s.client.List(ctx, &keys, opts...); err != nil {
		return explain(err)
	}
	if len(keys.Items) == 0 {
		// Like kubectl, an empty list is a notice on stderr, not a failure;
		// one that cannot be written has nowhere else to go.
		if allNamespaces {
			_, _ = fmt.Fprintln(s.streams.ErrOut, "No ApiKeys found.")
		} else {
			_, _ = fmt.Fprintf(s.streams.ErrOut, "No ApiKeys found in %s namespace.\n", s.namespace)
		}
		return nil
	}

	now := time.Now()
	w := printers.GetNewTabWriter(s.streams.Out)
	header := []string{"NAME", "READY", "IDENTITY", "USER", "HINT", "EXPIRES", "LAST-USED", "AGE"}
	if allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	// Every line has cells, so w buffers them all; a failed write to Out is
	// returned by w.Flush below.
	_, _ = fmt.Fprintln(w, strings.Join(header, "\t"))
	for i := range keys.Items {
		key := &keys.Items[i]
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
		if allNamespaces {
			row = append([]string{key.Namespace}, row...)
		}
		_, _ = fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

func orNone(s string) string {
	if s == "" {
		return noValue
	}
	return s
}
