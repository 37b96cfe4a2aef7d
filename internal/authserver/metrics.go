package authserver

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Endpoint labels.
const (
	endpointTokenReview = "tokenreview"
	endpointForwardAuth = "auth"
	endpointVerify      = "verify"
)

// Result labels besides the Codes.
const (
	resultBadRequest = "BAD_REQUEST"
	resultNoToken    = "NO_TOKEN"
	resultNotSynced  = "NOT_SYNCED"
)

var (
	authentications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apikey_authentications_total",
		Help: "Requests to the auth server by endpoint and result (a verify code, BAD_REQUEST, NO_TOKEN or NOT_SYNCED).",
	}, []string{"endpoint", "result"})
	authDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "apikey_authentication_duration_seconds",
		Help:    "Time to answer an auth server request, by endpoint.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3},
	}, []string{"endpoint"})
)

// metrics holds the series of one process; labels never carry keys or users.
type metrics struct {
	counters  map[string]map[string]prometheus.Counter
	durations map[string]prometheus.Observer
}

var (
	registerOnce sync.Once
	registered   *metrics
	// current is the index the gauges report: the latest server's.
	current atomic.Pointer[Index]
)

// metricsFor registers the auth server's metrics once per process and
// resolves every label combination up front, so requests do no lookups.
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
			Name: "apikey_index_last_sync_age_seconds",
			Help: "Seconds since the index last changed or synced; -1 before the first sync.",
		}, func() float64 {
			if ix := current.Load(); ix.Synced() {
				return time.Since(ix.LastChange()).Seconds()
			}
			return -1
		}))
	m := &metrics{counters: map[string]map[string]prometheus.Counter{}, durations: map[string]prometheus.Observer{}}
	results := []string{resultBadRequest, resultNoToken, resultNotSynced}
	for c := Code(0); c < numCodes; c++ {
		results = append(results, c.String())
	}
	for _, ep := range []string{endpointTokenReview, endpointForwardAuth, endpointVerify} {
		m.counters[ep] = map[string]prometheus.Counter{}
		for _, res := range results {
			m.counters[ep][res] = authentications.WithLabelValues(ep, res)
		}
		m.durations[ep] = authDuration.WithLabelValues(ep)
	}
	registered = m
}

func (m *metrics) observe(endpoint, result string, d time.Duration) {
	if c, ok := m.counters[endpoint][result]; ok {
		c.Inc()
	}
	m.durations[endpoint].Observe(d.Seconds())
}
