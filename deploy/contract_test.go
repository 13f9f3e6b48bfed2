package deploy_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/internal/metrics"
	"github.com/sluice-dev/sluice/record"
)

// codeMetrics registers sluice's own metrics the way cmd/sluice's serve
// does (metrics.New, the limiter gauges, the two per-partition gauges),
// records a sample in each, and returns what the registry exposes:
// name -> type and labels, from the samples; described lists every name the
// collectors describe, sampled or not.
func codeMetrics(t *testing.T) (exposed map[string]metricSpec, described []string) {
	t.Helper()
	rec := &descRecorder{Registry: prometheus.NewRegistry(), specs: map[string]metricSpec{}}
	m := metrics.New(rec)
	metrics.RegisterLimiter(rec, func() metrics.LimiterState {
		return metrics.LimiterState{InFlight: 3, Concurrency: 8, CooldownUntil: time.Now().Add(time.Second), TokensAvailable: 100, Share: 0.5}
	})
	perPartition := func() map[string]map[int32]int64 { return map[string]map[int32]int64{"prompts": {0: 1}} }
	metrics.RegisterUncommitted(rec, perPartition)
	metrics.RegisterGroupLag(rec, perPartition)
	metrics.RegisterBufferedBytes(rec, func() int64 { return 1 << 20 })
	metrics.RegisterBatchJobs(rec, func() metrics.BatchJobs { return metrics.BatchJobs{Open: 1, Pending: 2, Oldest: time.Now()} })
	if rec.err != nil {
		t.Fatal(rec.err)
	}

	// One sample in every series family: vectors and histograms only
	// show up once they have a child.
	m.Consumed()
	m.Published(&record.Result{})
	m.Published(&record.Result{Error: &record.Error{Code: record.CodeAPIError}})
	m.APICall("grok-4", 200, time.Second)
	m.APICall("grok-4", 429, time.Second)
	m.Retry()
	m.Tokens("grok-4", 3, 2, 1)
	m.Stream("grok-4", time.Second, 50)
	m.DeltasLost(1)
	m.Redone(1)
	m.Skipped(1)
	m.BatchResult(&record.Result{Tier: record.TierBatch, CostUSDTicks: 5e7})
	m.BatchState("xai", "", "in_progress")
	m.ShareRecords("accepted", 1)

	families, err := rec.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exposed = map[string]metricSpec{}
	for _, f := range families {
		var typ metricType
		switch f.GetType().String() {
		case "COUNTER":
			typ = counter
		case "GAUGE":
			typ = gauge
		case "HISTOGRAM":
			typ = histogram
		default:
			t.Errorf("%s is a %s: the contract knows counters, gauges and histograms", f.GetName(), f.GetType())
			continue
		}
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		exposed[f.GetName()] = metricSpec{typ, labels}
	}
	for name := range rec.specs {
		described = append(described, name)
	}
	return exposed, described
}

func (t metricType) String() string {
	return [...]string{counter: "counter", gauge: "gauge", histogram: "histogram"}[t]
}

// The contract is what the code registers: every sluice_* metric
// (franz-go's sluice_kafka_* aside) with its type and labels, no more, no
// less.
func TestContractMatchesCode(t *testing.T) {
	t.Parallel()
	exposed, described := codeMetrics(t)
	for _, name := range described {
		if _, ok := exposed[name]; !ok {
			t.Errorf("%s is registered but has no sample here: record one in codeMetrics", name)
		}
	}
	sorted := func(l []string) []string { l = slices.Clone(l); slices.Sort(l); return l }
	for name, got := range exposed {
		if !strings.HasPrefix(name, "sluice_") || strings.HasPrefix(name, kpromNamespace+"_") {
			t.Errorf("%s: sluice's own metrics start with sluice_ and not %s_", name, kpromNamespace)
			continue
		}
		want, ok := contract[name]
		if !ok {
			t.Errorf("the code registers %s (%s %v), which the contract in metrics_test.go lacks", name, got.typ, got.labels)
			continue
		}
		if got.typ != want.typ || !slices.Equal(sorted(got.labels), sorted(want.labels)) {
			t.Errorf("%s: the code registers a %s with labels %v, the contract says a %s with %v", name, got.typ, got.labels, want.typ, want.labels)
		}
	}
	for name := range contract {
		if _, ok := exposed[name]; !ok {
			t.Errorf("the contract lists %s, which the code does not register", name)
		}
	}
}
