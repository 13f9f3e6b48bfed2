package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LimiterState is what the limiter gauges read.
type LimiterState struct {
	InFlight, Concurrency int
	CooldownUntil         time.Time
	Paused                bool
	TokensAvailable       float64 // -1 when there is no token budget
	Share                 float64
}

// RegisterLimiter adds gauges read from state at every scrape:
// sluice_in_flight_requests, sluice_limiter_concurrency,
// sluice_limiter_cooldown_seconds, sluice_limiter_paused,
// sluice_limiter_tokens_available and sluice_limiter_budget_share.
func RegisterLimiter(reg prometheus.Registerer, state func() LimiterState) {
	gauge := func(name, help string, v func(LimiterState) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return v(state()) })
	}
	reg.MustRegister(
		gauge("sluice_in_flight_requests", "API calls in flight now.",
			func(s LimiterState) float64 { return float64(s.InFlight) }),
		gauge("sluice_limiter_concurrency", "The adaptive concurrency limit (1 to SLUICE_MAX_IN_FLIGHT).",
			func(s LimiterState) float64 { return float64(s.Concurrency) }),
		gauge("sluice_limiter_cooldown_seconds", "Seconds left of the global cooldown after a 429 (0 = none).",
			func(s LimiterState) float64 { return max(0, time.Until(s.CooldownUntil).Seconds()) }),
		gauge("sluice_limiter_paused", "1 while calls are paused because the API account is unusable (quota, 401, 403).",
			func(s LimiterState) float64 {
				if s.Paused {
					return 1
				}
				return 0
			}),
		gauge("sluice_limiter_tokens_available", "Tokens in this replica's bucket (negative in debt; -1 without SLUICE_TPM).",
			func(s LimiterState) float64 { return s.TokensAvailable }),
		gauge("sluice_limiter_budget_share", "This replica's share of the group's RPM/TPM budgets.",
			func(s LimiterState) float64 { return s.Share }),
	)
}

// partitionCollector exports a per-partition value read at scrape time.
type partitionCollector struct {
	desc *prometheus.Desc
	read func() map[string]map[int32]int64
}

func (c partitionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c partitionCollector) Collect(ch chan<- prometheus.Metric) {
	for topic, parts := range c.read() {
		for p, v := range parts {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), topic, strconv.Itoa(int(p)))
		}
	}
}

// RegisterPartitionGauge adds a gauge with topic and partition labels
// whose values read returns at every scrape (partition counts are bounded
// by the topic, so the labels stay low-cardinality).
func RegisterPartitionGauge(reg prometheus.Registerer, name, help string, read func() map[string]map[int32]int64) {
	reg.MustRegister(partitionCollector{
		desc: prometheus.NewDesc(name, help, []string{"topic", "partition"}, nil),
		read: read,
	})
}
