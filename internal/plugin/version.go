package plugin

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/apikey-operator/apikey-operator/internal/version"
)

func newVersionCommand(r *root) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version [-o json|yaml]",
		Short: "Print the plugin's version, commit and build date",
		Long: `Print the plugin's version, the Git commit it was built from, that
commit's date, and the Go toolchain and platform. 'kubectl apikey --version'
prints the same. It does not contact the cluster: the operator's own version
is 'manager --version' in its pod.`,
		Example: `  # For a bug report
  kubectl apikey version

  # For a script
  kubectl apikey version -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if output != "" {
				if err := checkOutput(output, outputJSON, outputYAML); err != nil {
					return err
				}
			}
			return printVersion(r, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json or yaml; empty prints text")
	return cmd
}

// printVersion prints the build info as text, JSON or YAML.
func printVersion(r *root, output string) error {
	info := version.Get()
	var data []byte
	var err error
	switch output {
	case outputJSON:
		data, err = json.MarshalIndent(info, "", "    ")
		data = append(data, '\n')
	case outputYAML:
		data, err = yaml.Marshal(info)
	default:
		data = []byte(info.Text(pluginName))
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(r.streams.Out, string(data))
	return err
}
