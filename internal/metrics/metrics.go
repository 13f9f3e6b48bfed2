// Package metrics defines sluice's Prometheus metrics: every name starts
// with sluice_, values are in base units (seconds, tokens, records), and no
// label carries a per-record value (no custom_id, no prompt); the model
// label is capped at MaxModels distinct values, the rest count as "other".
//
//	m := metrics.New(reg)
//	proc := processor.New(client, lim, processor.Config{..., Observer: m})
//	m.Result(res) // once per published result
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/record"
)

// MaxModels caps the distinct values of the model label; models come from
// the records, so an unbounded label would let input blow up the series.
const MaxModels = 32

// Metrics holds the collectors. Its methods are safe for concurrent use;
// a nil *Metrics records nothing.
type Metrics struct {
	consumed     prometheus.Counter
	succeeded    prometheus.Counter
	failed       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	apiRequests  *prometheus.CounterVec
	retries      prometheus.Counter
	rateLimited  prometheus.Counter
	latency      *prometheus.HistogramVec
	ttft         *prometheus.HistogramVec
	tokenRate    *prometheus.HistogramVec
	tokens       *prometheus.CounterVec
	deltasLost   prometheus.Counter
	redone       prometheus.Counter
	skipped      prometheus.Counter
	reused       prometheus.Counter
	batch        batchCollectors
	share        *prometheus.CounterVec

	mu     sync.Mutex
	models map[string]struct{}
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	latencyBuckets := []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320}
	m := &Metrics{
		consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_records_consumed_total", Help: "Prompt records taken from the input topic for processing.",
		}),
		succeeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_records_succeeded_total", Help: "Records whose successful result was published.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_records_failed_total", Help: "Records whose error result was published, by error code.",
		}, []string{"code"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_records_dead_lettered_total", Help: "Records copied to the dead-letter topic, by error code.",
		}, []string{"code"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_api_requests_total", Help: "API calls by model and status class (2xx, 4xx, 429, 5xx, error = no answer).",
		}, []string{"model", "status_class"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_api_retries_total", Help: "API calls that were retries of an earlier attempt.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_api_rate_limited_total", Help: "429 answers about the rate (not the quota).",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_api_request_duration_seconds", Help: "Duration of one API call, by model.", Buckets: latencyBuckets,
		}, []string{"model"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_api_time_to_first_token_seconds", Help: "Time to the first streamed token, by model.", Buckets: latencyBuckets,
		}, []string{"model"}),
		tokenRate: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_api_stream_tokens_per_second", Help: "Generation speed of streamed answers, by model.",
			Buckets: []float64{5, 10, 20, 40, 80, 160, 320, 640, 1280},
		}, []string{"model"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_api_tokens_total", Help: "Tokens used, by model and kind (prompt, completion, reasoning).",
		}, []string{"model", "kind"}),
		deltasLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_stream_deltas_lost_total", Help: "Delta records that could not be written to the stream topic (best effort).",
		}),
		redone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_records_redone_total",
			Help: "Records this member processed again after processing them once: their transaction aborted (exactly-once) or their outputs could not be written.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_records_skipped_total",
			Help: "Records not processed again because the committed offset map listed them as finished (work a previous owner did).",
		}),
		reused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_results_reused_total",
			Help: "Records processed again whose result was published again from memory, without a second API call (of sluice_records_redone_total).",
		}),
		share: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_share_records_total",
			Help: "Share-group mode: records by event (acquired, accepted, released, renewed, redelivered, delivery_limit).",
		}, []string{"event"}),
		models: make(map[string]struct{}),
		batch:  newBatchCollectors(),
	}
	reg.MustRegister(m.consumed, m.succeeded, m.failed, m.deadLettered, m.apiRequests, m.retries,
		m.rateLimited, m.latency, m.ttft, m.tokenRate, m.tokens, m.deltasLost, m.redone, m.skipped, m.reused, m.share)
	reg.MustRegister(m.batch.collectors()...)
	return m
}

// model bounds the model label.
func (m *Metrics) model(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.models[name]; ok {
		return name
	}
	if len(m.models) >= MaxModels || name == "" {
		return "other"
	}
	m.models[name] = struct{}{}
	return name
}

// Redone counts records processed again after being processed once.
func (m *Metrics) Redone(n int) {
	if m != nil {
		m.redone.Add(float64(n))
	}
}

// Reused counts records processed again whose result was published again
// without a second API call.
func (m *Metrics) Reused() {
	if m != nil {
		m.reused.Inc()
	}
}

// Skipped counts records skipped thanks to the committed offset map.
func (m *Metrics) Skipped(n int) {
	if m != nil {
		m.skipped.Add(float64(n))
	}
}

// ShareRecords counts n records of a share group by event (the event
// names of consumer.ShareObserver: a fixed set).
func (m *Metrics) ShareRecords(event string, n int) {
	if m != nil {
		m.share.WithLabelValues(event).Add(float64(n))
	}
}

// Consumed counts a record handed to processing.
func (m *Metrics) Consumed() {
	if m != nil {
		m.consumed.Inc()
	}
}

// Published counts a result once it is in Kafka; a failed result was also
// dead-lettered.
func (m *Metrics) Published(res *record.Result) {
	if m == nil {
		return
	}
	if res.Error == nil {
		m.succeeded.Inc()
		return
	}
	m.failed.WithLabelValues(res.Error.Code).Inc()
	m.deadLettered.WithLabelValues(res.Error.Code).Inc()
}

// APICall counts one call: status is the HTTP status, 0 when no answer
// came (timeout, connection failure).
func (m *Metrics) APICall(model string, status int, d time.Duration) {
	if m == nil {
		return
	}
	model = m.model(model)
	m.apiRequests.WithLabelValues(model, StatusClass(status)).Inc()
	m.latency.WithLabelValues(model).Observe(d.Seconds())
	if status == 429 {
		m.rateLimited.Inc()
	}
}

// Retry counts a call that retries an earlier attempt.
func (m *Metrics) Retry() {
	if m != nil {
		m.retries.Inc()
	}
}

// Tokens counts the usage of one answer.
func (m *Metrics) Tokens(model string, prompt, completion, reasoning int) {
	if m == nil {
		return
	}
	model = m.model(model)
	m.tokens.WithLabelValues(model, "prompt").Add(float64(prompt))
	m.tokens.WithLabelValues(model, "completion").Add(float64(completion))
	m.tokens.WithLabelValues(model, "reasoning").Add(float64(reasoning))
}

// Stream records the time to first token and the generation speed of a
// streamed answer (tokensPerSecond <= 0 is not recorded).
func (m *Metrics) Stream(model string, ttft time.Duration, tokensPerSecond float64) {
	if m == nil {
		return
	}
	model = m.model(model)
	if ttft > 0 {
		m.ttft.WithLabelValues(model).Observe(ttft.Seconds())
	}
	if tokensPerSecond > 0 {
		m.tokenRate.WithLabelValues(model).Observe(tokensPerSecond)
	}
}

// DeltasLost counts delta records the stream topic did not get.
func (m *Metrics) DeltasLost(n int) {
	if m != nil && n > 0 {
		m.deltasLost.Add(float64(n))
	}
}

// StatusClass is the status_class label of an HTTP status.
func StatusClass(status int) string {
	switch {
	case status == 0:
		return "error"
	case status == 429:
		return "429"
	case status >= 200 && status < 600:
		return strconv.Itoa(status/100) + "xx"
	default:
		return "error"
	}
}
