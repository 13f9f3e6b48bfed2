package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/record"
)

// usdTicks is xAI's ticks per US dollar (cost_in_usd_ticks).
const usdTicks = 1e10

// batchCollectors are the batch tier's counters, created by New.
type batchCollectors struct {
	results *prometheus.CounterVec
	cost    prometheus.Counter
	changes *prometheus.CounterVec
}

func newBatchCollectors() batchCollectors {
	return batchCollectors{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_batch_results_published_total", Help: "Batch-tier results published, by error code (ok for a success).",
		}, []string{"code"}),
		cost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_batch_cost_usd_total", Help: "What the published batch-tier requests cost, in US dollars, where the provider reports it (xAI).",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_batch_state_changes_total", Help: "Provider batch state changes seen, by the state entered.",
		}, []string{"state"}),
	}
}

func (b batchCollectors) collectors() []prometheus.Collector {
	return []prometheus.Collector{b.results, b.cost, b.changes}
}

// BatchResult counts a published batch-tier result: as every result
// (Published), by code, and its cost.
func (m *Metrics) BatchResult(res *record.Result) {
	if m == nil {
		return
	}
	m.Published(res)
	code := "ok"
	if res.Error != nil {
		code = res.Error.Code
	}
	m.batch.results.WithLabelValues(code).Inc()
	if res.CostUSDTicks > 0 {
		m.batch.cost.Add(float64(res.CostUSDTicks) / usdTicks)
	}
}

// BatchState counts a provider batch's change to state to (the
// provider's state names: in_progress, completed, expired, ...).
func (m *Metrics) BatchState(_, _, to string) {
	if m == nil {
		return
	}
	m.batch.changes.WithLabelValues(to).Inc()
}

// BatchJobs is what a replica's batch runner holds now.
type BatchJobs struct {
	// Open is the provider batches (jobs) it owns that are not done;
	// Pending their requests without a result.
	Open, Pending int
	// Oldest is when the oldest pending request was gathered; zero when
	// none is pending.
	Oldest time.Time
}

// RegisterBatchJobs exports the batch runner's jobs, read at every
// scrape. Each replica reports the jobs it owns: sum over replicas.
func RegisterBatchJobs(reg prometheus.Registerer, read func() BatchJobs) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_batch_open_batches", Help: "Provider batches this replica owns that are not done.",
		}, func() float64 { return float64(read().Open) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_batch_requests_pending", Help: "Requests of this replica's provider batches without a result yet.",
		}, func() float64 { return float64(read().Pending) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_batch_oldest_pending_request_age_seconds", Help: "Age of the oldest batch-tier request of this replica's batches without a result (0 when none).",
		}, func() float64 {
			if o := read().Oldest; !o.IsZero() {
				return time.Since(o).Seconds()
			}
			return 0
		}),
	)
}
