// Command kubectl-apikey is the `kubectl apikey` plugin: it creates ApiKeys,
// prints a key's one-time token, and lists, suspends, resumes, revokes and
// rotates keys, with kubectl's own connection flags. Put it on your PATH and
// run `kubectl apikey --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/apikey-operator/apikey-operator/internal/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := plugin.Run(ctx, os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}
