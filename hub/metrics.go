package hub

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// MetricsPath is where the hub serves Prometheus metrics (text exposition format, no authentication: it shows
// only counts, IDs of bridges and appservices, and timings; restrict it at the reverse proxy if needed).
const MetricsPath = "/metrics"

// scrapeTimeout bounds the database reads one scrape makes (queue scans, login and portal counts).
const scrapeTimeout = 5 * time.Second

// txnBuckets are the transaction latency buckets in seconds: in-process bridges answer in milliseconds,
// external appservices over a network in tens to hundreds, and the sender gives up after 90 s.
var txnBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 90}

// metrics holds the hub's own registry (one per hub, so several hubs in one test binary do not collide).
type metrics struct {
	reg          *prometheus.Registry
	txnDuration  *prometheus.HistogramVec
	txnFailures  *prometheus.CounterVec
	remoteEvents *prometheus.CounterVec
	bridgeErrors *prometheus.CounterVec
}

func newMetrics(h *Hub) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		txnDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "passerelle_appservice_transaction_duration_seconds",
			Help:    "Time from sending an appservice transaction to its answer (successful or not).",
			Buckets: txnBuckets,
		}, []string{"appservice"}),
		txnFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "passerelle_appservice_transaction_failures_total",
			Help: "Appservice transactions that failed (network error or non-2xx answer) and will be retried.",
		}, []string{"appservice"}),
		remoteEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "passerelle_bridge_remote_events_total",
			Help: "Room events a bridge's ghost users sent into Matrix (messages and other events from the remote network).",
		}, []string{"bridge"}),
		bridgeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "passerelle_bridge_errors_total",
			Help: "Error-level log entries written by a bridge.",
		}, []string{"bridge"}),
	}
	m.reg.MustRegister(m.txnDuration, m.txnFailures, m.remoteEvents, m.bridgeErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{h: h})
	// Series exist from the start (at zero) so that rate() and alerts work before the first failure.
	for _, r := range h.regs {
		m.txnFailures.WithLabelValues(r.ID)
	}
	return m
}

// handler serves the registry; scrape errors are logged, not shown.
func (m *metrics) handler(log zerolog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: promLogger{log}, ErrorHandling: promhttp.ContinueOnError})
}

// observeTxn records one transaction attempt.
func (m *metrics) observeTxn(asID string, d time.Duration, ok bool) {
	m.txnDuration.WithLabelValues(asID).Observe(d.Seconds())
	if !ok {
		m.txnFailures.WithLabelValues(asID).Inc()
	}
}

// errorHook counts error-level log entries of one bridge.
func (m *metrics) errorHook(bridgeID string) zerolog.Hook {
	c := m.bridgeErrors.WithLabelValues(bridgeID)
	m.remoteEvents.WithLabelValues(bridgeID)
	return zerolog.HookFunc(func(_ *zerolog.Event, level zerolog.Level, _ string) {
		if level >= zerolog.ErrorLevel && level <= zerolog.PanicLevel {
			c.Inc()
		}
	})
}

type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn().Interface("details", v).Msg("Prometheus scrape error")
}

var (
	descQueueLength = prometheus.NewDesc("passerelle_appservice_queue_length",
		"Events waiting for delivery to an appservice (counted up to 10000).", []string{"appservice"}, nil)
	descQueueAge = prometheus.NewDesc("passerelle_appservice_queue_oldest_age_seconds",
		"Age of the oldest event waiting for delivery to an appservice (0 when none).", []string{"appservice"}, nil)
	descStreamPos = prometheus.NewDesc("passerelle_appservice_stream_position",
		"Last stream position the appservice acknowledged.", []string{"appservice"}, nil)
	descDelivered = prometheus.NewDesc("passerelle_appservice_transactions_delivered",
		"Transactions the appservice acknowledged since the hub started.", []string{"appservice"}, nil)
	descEnabled = prometheus.NewDesc("passerelle_bridge_enabled",
		"1 when the bridge is switched on, 0 when an administrator switched it off.", []string{"bridge"}, nil)
	descRunning = prometheus.NewDesc("passerelle_bridge_running",
		"1 when the bridge started and runs, 0 when stopped or failed.", []string{"bridge"}, nil)
	descLogins = prometheus.NewDesc("passerelle_bridge_logins",
		"Remote-network logins stored by the bridge.", []string{"bridge"}, nil)
	descPortals = prometheus.NewDesc("passerelle_bridge_portals",
		"Portal rooms (remote chats with a Matrix room) of the bridge.", []string{"bridge"}, nil)
)

// stateCollector reads queue and bridge state at scrape time.
type stateCollector struct{ h *Hub }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueLength, descQueueAge, descStreamPos, descDelivered, descEnabled,
		descRunning, descLogins, descPortals} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	h := c.h
	for _, st := range h.sender.Status() {
		ch <- prometheus.MustNewConstMetric(descStreamPos, prometheus.GaugeValue, float64(st.StreamPos), st.ID)
		ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(st.Delivered), st.ID)
		q, err := h.queueOf(ctx, st.ID, st.StreamPos)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descQueueLength, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descQueueLength, prometheus.GaugeValue, float64(q.Length), st.ID)
		ch <- prometheus.MustNewConstMetric(descQueueAge, prometheus.GaugeValue, q.OldestAge().Seconds(), st.ID)
	}
	for _, st := range h.host.Status() {
		ch <- prometheus.MustNewConstMetric(descEnabled, prometheus.GaugeValue, boolFloat(st.Enabled), st.ID)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue,
			boolFloat(st.State == "running"), st.ID)
		logins, portals, err := h.host.Counts(ctx, st.ID)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descLogins, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descLogins, prometheus.GaugeValue, float64(logins), st.ID)
		ch <- prometheus.MustNewConstMetric(descPortals, prometheus.GaugeValue, float64(portals), st.ID)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
