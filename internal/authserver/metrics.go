package authserver

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// endpoint is one of the auth server's endpoints, as metrics label it.
type endpoint uint8

const (
	endpointTokenReview endpoint = iota
	endpointForwardAuth
	endpointVerify
	numEndpoints
)

var endpointNames = [numEndpoints]string{"tokenreview", "auth", "verify"}

func (e endpoint) String() string { return endpointNames[e] }

// result is how a request ended, as metrics label it: a Code, or one of the
// results below for a request that got no code.
type result uint8

const (
	resultBadRequest = result(numCodes) + iota
	resultNoToken
	resultNotSynced
	numResults
)

var resultNames = [numResults - result(numCodes)]string{"BAD_REQUEST", "NO_TOKEN", "NOT_SYNCED"}

func (r result) String() string {
	if r < result(numCodes) {
		return Code(r).String()
	}
	return resultNames[r-result(numCodes)]
}

var (
	authentications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apikey_authentications_total",
		Help: "Requests to the auth server by endpoint and result (a verify code, BAD_REQUEST, NO_TOKEN or NOT_SYNCED).",
	}, []string{"endpoint", "result"})
	authDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "apikey_authentication_duration_seconds",
		Help:    "Time to answer an auth server request, by endpoint.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5},
	}, []string{"endpoint"})
)

// metrics holds the series of one process, every label combination
// resolved up front, so a request indexes two arrays and looks nothing up.
// Labels never carry keys or users.
type metrics struct {
	counters  [numEndpoints][numResults]prometheus.Counter
	durations [numEndpoints]prometheus.Observer
}

var (
	registerOnce sync.Once
	registered   *metrics
	// current is the index the gauges report: the latest server's.
	current atomic.Pointer[Index]
)

// metricsFor registers the auth server's metrics once per process.
func metricsFor(index *Index) *metrics {
	current.Store(index)
	registerOnce.Do(register)
	return registered
}

func register() {
	ctrlmetrics.Registry.MustRegister(authentications, authDuration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apikey_index_tokens",
			Help: "Tokens in the auth server's index.",
		}, func() float64 { return float64(current.Load().Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apikey_index_last_change_timestamp_seconds",
			Help: "Unix time in seconds of the index's last change (its first sync counts as one); 0 until the first sync.",
		}, func() float64 {
			if ix := current.Load(); ix.Synced() {
				return float64(ix.LastChange().UnixNano()) / 1e9
			}
			return 0
		}))
	m := &metrics{}
	for ep := range numEndpoints {
		for res := range numResults {
			m.counters[ep][res] = authentications.WithLabelValues(ep.String(), res.String())
		}
		m.durations[ep] = authDuration.WithLabelValues(ep.String())
	}
	registered = m
}

func (m *metrics) observe(ep endpoint, res result, d time.Duration) {
	m.counters[ep][res].Inc()
	m.durations[ep].Observe(d.Seconds())
}
