// Package logs builds the manager's logger so that no verbosity can make it
// print what client-go sent to or received from the API server.
//
// client-go logs through the logger it finds in the request's context
// (klog.FromContext), and controller-runtime puts the controller's or
// webhook's logger into every context it hands to our code. So at
// --zap-log-level=8 and above every client call dumps its request and
// response bodies ("Request Body"/"Response Body" with key "body",
// k8s.io/client-go/rest/request.go logBody): the Secret that carries a new
// token, the Secret that carries the webhook CA's private key, and every
// Secret the API server answers with. client-go's debugging round tripper,
// enabled by klog's own -v of 6 or more, adds the request and response headers
// and a curl command (keys "headers" and "curlCommand",
// k8s.io/client-go/transport/round_trippers.go), which mask Authorization
// but nothing else. These messages are dropped here, whatever the level,
// rather than capping the level: everything else stays visible for debugging.
package logs

import (
	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

// wireDumpMessages are the messages client-go logs a body under.
var wireDumpMessages = map[string]bool{
	"Request Body":  true,
	"Response Body": true,
}

// wireDumpKeys are the keys client-go puts a body, headers or a curl command
// under. A message carrying one is dropped even if client-go renames it.
var wireDumpKeys = map[string]bool{
	"body":        true,
	"headers":     true,
	"curlCommand": true,
}

// SetLogger installs WithoutWireDumps(l) as controller-runtime's logger and
// as klog's, so that client-go drops its dumps both through the logger a
// context carries and through the global one it falls back to.
func SetLogger(l logr.Logger) {
	l = WithoutWireDumps(l)
	ctrl.SetLogger(l)
	klog.SetLogger(l)
}

// WithoutWireDumps returns l minus the entries in which client-go dumps a
// request's or a response's body, headers or curl command; every other entry
// goes to l unchanged, at the level and with the caller it had.
func WithoutWireDumps(l logr.Logger) logr.Logger {
	sink := l.GetSink()
	if sink == nil {
		return l
	}
	// Account for the frame wireDumpFilter adds between logr and sink.
	if withDepth, ok := sink.(logr.CallDepthLogSink); ok {
		sink = withDepth.WithCallDepth(1)
	}
	return logr.New(&wireDumpFilter{sink: sink})
}

// wireDumpFilter is a logr.LogSink that passes to sink every entry but
// client-go's wire dumps.
type wireDumpFilter struct {
	sink logr.LogSink
	// carriesDump is set once WithValues attached a dump key: every entry
	// logged from then on would carry it.
	carriesDump bool
}

var (
	_ logr.LogSink          = &wireDumpFilter{}
	_ logr.CallDepthLogSink = &wireDumpFilter{}
)

// Init does nothing: WithoutWireDumps received sink already initialized, and
// accounts for the extra frame itself.
func (f *wireDumpFilter) Init(logr.RuntimeInfo) {}

// Enabled reports sink's answer, so client-go still logs everything else at
// high verbosity.
func (f *wireDumpFilter) Enabled(level int) bool {
	return f.sink.Enabled(level)
}

func (f *wireDumpFilter) Info(level int, msg string, keysAndValues ...any) {
	if f.isWireDump(msg, keysAndValues) {
		return
	}
	f.sink.Info(level, msg, keysAndValues...)
}

func (f *wireDumpFilter) Error(err error, msg string, keysAndValues ...any) {
	if f.isWireDump(msg, keysAndValues) {
		return
	}
	f.sink.Error(err, msg, keysAndValues...)
}

func (f *wireDumpFilter) WithValues(keysAndValues ...any) logr.LogSink {
	return &wireDumpFilter{
		sink:        f.sink.WithValues(keysAndValues...),
		carriesDump: f.carriesDump || hasWireDumpKey(keysAndValues),
	}
}

func (f *wireDumpFilter) WithName(name string) logr.LogSink {
	return &wireDumpFilter{sink: f.sink.WithName(name), carriesDump: f.carriesDump}
}

// WithCallDepth passes the depth on, so client-go's call sites (which skip
// their own helpers) are reported as the caller.
func (f *wireDumpFilter) WithCallDepth(depth int) logr.LogSink {
	withDepth, ok := f.sink.(logr.CallDepthLogSink)
	if !ok {
		return f
	}
	return &wireDumpFilter{sink: withDepth.WithCallDepth(depth), carriesDump: f.carriesDump}
}

func (f *wireDumpFilter) isWireDump(msg string, keysAndValues []any) bool {
	return f.carriesDump || wireDumpMessages[msg] || hasWireDumpKey(keysAndValues)
}

// hasWireDumpKey reports whether any key of keysAndValues is a wireDumpKey.
func hasWireDumpKey(keysAndValues []any) bool {
	for i := 0; i < len(keysAndValues); i += 2 {
		if key, ok := keysAndValues[i].(string); ok && wireDumpKeys[key] {
			return true
		}
	}
	return false
}
