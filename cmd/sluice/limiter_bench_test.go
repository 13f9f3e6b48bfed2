package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/mockapi"
)

// admissionLog wraps the simulator and records when each request it
// admitted (anything but a 429) arrived.
type admissionLog struct {
	mock *mockapi.Server
	mu   sync.Mutex
	at   []time.Time
	n429 int
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (a *admissionLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	a.mock.ServeHTTP(sw, r)
	if !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if sw.status == http.StatusTooManyRequests {
		a.n429++
		return
	}
	a.at = append(a.at, arrived)
}

// maxWindow returns the most admissions in any window of length w.
func (a *admissionLog) maxWindow(w time.Duration) int {
	a.mu.Lock()
	at := slices.Clone(a.at)
	a.mu.Unlock()
	slices.SortFunc(at, func(x, y time.Time) int { return x.Compare(y) })
	best, lo := 0, 0
	for hi := range at {
		for at[hi].Sub(at[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

type limiterBench struct {
	prompts  int
	members  int
	rpm, tpm int
	mock     mockapi.Config
	prompt   func(i int) string
}

// run pushes the prompts through the members against the simulator and
// returns the admissions and the simulator's stats.
func (lb limiterBench) run(b *testing.B) (*admissionLog, mockapi.Stats, time.Duration) {
	s := newTestStack(b, 8)
	mock := mockapi.New(lb.mock)
	b.Cleanup(mock.Close)
	adm := &admissionLog{mock: mock}
	srv := httptest.NewServer(adm)
	b.Cleanup(srv.Close)
	s.cfg.BaseURL = srv.URL + "/v1"
	s.cfg.Model = "grok-3-mini"
	s.cfg.MaxInFlight = 64
	s.cfg.RPM, s.cfg.TPM = lb.rpm, lb.tpm
	s.cfg.MaxAttempts = 10
	s.cfg.RetryBase, s.cfg.RetryMax = 100*time.Millisecond, 2*time.Second
	s.cfg.CommitInterval = time.Second
	// Spread evenly, as keyed or randomly partitioned input is: the
	// members' budget shares follow their partition counts.
	recs := make([]*kgo.Record, lb.prompts)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "prompts", Partition: int32(i % 8), Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":%q}`, i, lb.prompt(i))}
	}
	producer := s.client(b, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	reader := s.client(b, kgo.ConsumeTopics("completions"))
	b.StartTimer()
	start := time.Now()
	for range lb.members {
		s.member(b)
	}
	got := 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for got < lb.prompts && ctx.Err() == nil {
		got += len(reader.PollFetches(ctx).Records())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if got < lb.prompts {
		b.Fatalf("%d of %d results", got, lb.prompts)
	}
	return adm, mock.Stats(), elapsed
}

func (a *admissionLog) span() (int, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.at) < 2 {
		return len(a.at), 0
	}
	first, last := slices.MinFunc(a.at, time.Time.Compare), slices.MaxFunc(a.at, time.Time.Compare)
	return len(a.at), last.Sub(first)
}

// BenchmarkLimiterRPM: RPM is the binding limit (6000 = 100/s), latency
// 50ms, 2000 prompts, one replica. Reports the achieved rate over the limit
// and the share of 429 answers.
//
//	go test -run '^$' -bench 'Limiter' -benchtime 1x ./cmd/sluice
func BenchmarkLimiterRPM(b *testing.B) {
	for range b.N {
		b.StopTimer()
		mc := mockapi.DefaultConfig()
		mc.Latency, mc.RPM, mc.Seed = 50*time.Millisecond, 6000, 1
		adm, st, _ := limiterBench{prompts: 2000, members: 1, rpm: 6000, mock: mc,
			prompt: func(i int) string { return fmt.Sprintf("short prompt %d", i) }}.run(b)
		n, span := adm.span()
		rate := float64(n-1) / span.Seconds()
		ratio := rate / 100
		share429 := float64(adm.n429) / float64(st.Requests)
		b.ReportMetric(ratio, "ratio_to_RPM")
		b.ReportMetric(share429, "share_429")
		fmt.Printf("limiter RPM: %d calls in %s = %.1f/s against 100/s: ratio %.3f; 429s %d of %d (%.2f%%)\n",
			n, span.Round(time.Millisecond), rate, ratio, adm.n429, st.Requests, 100*share429)
	}
}

// BenchmarkLimiterTPM: TPM is the binding limit (1.2M = 20k tokens/s)
// with ~2000-character prompts; reports tokens used over the budget.
func BenchmarkLimiterTPM(b *testing.B) {
	const tpm = 1_200_000
	long := strings.Repeat("a long prompt to make tokens the binding limit ", 45)
	for range b.N {
		b.StopTimer()
		mc := mockapi.DefaultConfig()
		mc.Latency, mc.TPM, mc.Seed = 50*time.Millisecond, tpm, 1
		adm, st, _ := limiterBench{prompts: 2000, members: 1, tpm: tpm, mock: mc,
			prompt: func(i int) string { return fmt.Sprintf("%d %s", i, long) }}.run(b)
		tokens := st.PromptTokens + st.CompletionTokens + st.ReasoningTokens
		span := st.LastResponse.Sub(st.FirstRequest)
		rate := float64(tokens) / span.Seconds()
		ratio := rate / (tpm / 60)
		share429 := float64(adm.n429) / float64(st.Requests)
		b.ReportMetric(ratio, "ratio_to_TPM")
		b.ReportMetric(share429, "share_429")
		fmt.Printf("limiter TPM: %d tokens in %s = %.0f/s against %d/s: ratio %.3f; 429s %d of %d (%.2f%%)\n",
			tokens, span.Round(time.Millisecond), rate, tpm/60, ratio, adm.n429, st.Requests, 100*share429)
	}
}

// BenchmarkLimiterFleet: three replicas in one group share RPM 6000; the
// combined rate over the limit, and the busiest 10s window over the limit.
func BenchmarkLimiterFleet(b *testing.B) {
	for range b.N {
		b.StopTimer()
		mc := mockapi.DefaultConfig()
		mc.Latency, mc.RPM, mc.Seed = 50*time.Millisecond, 6000, 1
		adm, st, _ := limiterBench{prompts: 3000, members: 3, rpm: 6000, mock: mc,
			prompt: func(i int) string { return fmt.Sprintf("short prompt %d", i) }}.run(b)
		n, span := adm.span()
		rate := float64(n-1) / span.Seconds()
		peak := adm.maxWindow(10 * time.Second)
		b.ReportMetric(rate/100, "ratio_to_RPM")
		b.ReportMetric(float64(peak)/1000, "peak_10s_ratio")
		fmt.Printf("limiter fleet of 3: %d calls in %s = %.1f/s against 100/s: ratio %.3f; busiest 10s window %d calls = %.3f of the limit; 429s %d of %d\n",
			n, span.Round(time.Millisecond), rate, rate/100, peak, float64(peak)/1000, adm.n429, st.Requests)
	}
}
