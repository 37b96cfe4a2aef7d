package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/printers"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// The -o formats. table and wide are the plugin's own columns; json, yaml
// and name print objects as `kubectl get -o …` prints them.
const (
	outputTable = "table"
	outputWide  = "wide"
	outputJSON  = "json"
	outputYAML  = "yaml"
	outputName  = "name"
)

// checkOutput refuses a format the command does not print, naming those it
// does.
func checkOutput(format string, allowed ...string) error {
	if slices.Contains(allowed, format) {
		return nil
	}
	return fmt.Errorf("unknown output format %q: -o must be one of %s", format, strings.Join(allowed, ", "))
}

// objectPrinter is kubectl's printer for json, yaml or name, dropping
// metadata.managedFields as `kubectl get` does unless asked.
func objectPrinter(format string) printers.ResourcePrinter {
	var p printers.ResourcePrinter
	switch format {
	case outputJSON:
		p = &printers.JSONPrinter{}
	case outputYAML:
		p = &printers.YAMLPrinter{}
	default:
		p = &printers.NamePrinter{}
	}
	return &printers.OmitManagedFieldsPrinter{Delegate: p}
}

// printKeyList prints keys in format (json, yaml or name) the way
// `kubectl get -o …` prints several objects: json and yaml as one v1 List,
// an empty one included; name as one apikey.apikeys.dev/NAME line per key.
func printKeyList(out io.Writer, format string, keys []unstructured.Unstructured) error {
	list := &unstructured.UnstructuredList{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "List",
		"metadata":   map[string]any{"resourceVersion": ""},
	}}
	for _, key := range keys {
		// The server names each item's kind; a key from a typed list might not.
		key.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"))
		list.Items = append(list.Items, key)
	}
	return objectPrinter(format).PrintObj(list, out)
}

// printKey prints one ApiKey in format (json, yaml or name), as
// `kubectl create -o …` prints the object it created.
func printKey(out io.Writer, format string, key *apikeysv1alpha1.ApiKey) error {
	obj, err := unstructuredKey(key)
	if err != nil {
		return err
	}
	return objectPrinter(format).PrintObj(obj, out)
}

// unstructuredKey is key as its JSON says it, with apiVersion and kind, and
// without the empty objects a Go struct marshals (status: {} on a key that
// has none, spec.secret: {}), so a manifest holds only what was set.
func unstructuredKey(key *apikeysv1alpha1.ApiKey) (*unstructured.Unstructured, error) {
	key = key.DeepCopy()
	key.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"))
	data, err := json.Marshal(key)
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	dropEmptyObjects(obj.Object)
	return obj, nil
}

// dropEmptyObjects removes every field of m, at any depth, whose value is
// an empty JSON object.
func dropEmptyObjects(m map[string]any) {
	for k, v := range m {
		child, ok := v.(map[string]any)
		if !ok {
			continue
		}
		dropEmptyObjects(child)
		if len(child) == 0 {
			delete(m, k)
		}
	}
}
