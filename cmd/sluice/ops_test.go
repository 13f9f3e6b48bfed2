package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// scrape returns the samples of /metrics as "name{labels}" -> value.
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	m, err := tryScrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tryScrape is scrape for an endpoint that may not be up yet.
func tryScrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

func readyz(addr string) int {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond until it holds or the deadline passes; it observes
// state in another process-like component (an HTTP endpoint) that offers
// no signal to wait on.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The metrics agree with the results topic, and carry neither the key
// nor a prompt.
func TestMetricsMatchResults(t *testing.T) {
	s := newTestStack(t, 2)
	s.cfg.HTTPAddr = freeAddr(t)
	s.cfg.Key, s.cfg.Keyless = "sk-metrics-test-secret", false
	var recs []*kgo.Record
	for i := range 17 {
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"ok-%d","prompt":"secret prompt text %d"}`, i, i)})
	}
	recs = append(recs,
		&kgo.Record{Value: []byte(`{"custom_id":"bad-1","prompt":"status-400"}`)},
		&kgo.Record{Value: []byte(`{"custom_id":"bad-2","prompt":"status-404"}`)},
		&kgo.Record{Value: []byte(`{"custom_id":"bad-3","nothing":true}`)},
	)
	s.produce(t, recs...)
	s.member(t)
	results := decodeResults(t, s.collect(t, "completions", len(recs)))
	failed := map[string]int{}
	for _, r := range results {
		if r.Error != nil {
			failed[r.Error.Code]++
		}
	}
	// A result is readable a moment before the member's ack callback
	// counts it.
	var m map[string]float64
	waitFor(t, 10*time.Second, "every published record counted", func() bool {
		m = scrape(t, s.cfg.HTTPAddr)
		return m["sluice_records_succeeded_total"]+m[`sluice_records_failed_total{code="api_error"}`]+
			m[`sluice_records_failed_total{code="invalid_input"}`] == float64(len(recs))
	})
	want := map[string]float64{
		"sluice_records_consumed_total":                                20,
		"sluice_records_succeeded_total":                               17,
		`sluice_records_failed_total{code="api_error"}`:                float64(failed["api_error"]),
		`sluice_records_failed_total{code="invalid_input"}`:            float64(failed["invalid_input"]),
		`sluice_records_dead_lettered_total{code="api_error"}`:         2,
		`sluice_records_dead_lettered_total{code="invalid_input"}`:     1,
		`sluice_api_requests_total{model="grok-4",status_class="2xx"}`: 17,
		`sluice_api_requests_total{model="grok-4",status_class="4xx"}`: 2,
		`sluice_api_tokens_total{kind="prompt",model="grok-4"}`:        17 * 3,
		`sluice_api_request_duration_seconds_count{model="grok-4"}`:    19,
		"sluice_limiter_paused":                                        0,
		"sluice_limiter_concurrency":                                   float64(s.cfg.MaxInFlight),
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if failed["api_error"] != 2 || failed["invalid_input"] != 1 {
		t.Errorf("results by code %v, want 2 api_error and 1 invalid_input", failed)
	}
	if _, ok := m[`sluice_partition_uncommitted_records{partition="0",topic="prompts"}`]; !ok {
		t.Error("no sluice_partition_uncommitted_records for partition 0")
	}
	if !strings.Contains(strings.Join(keys(m), "\n"), "sluice_kafka_") {
		t.Error("franz-go's kprom metrics are not on the registry")
	}
	resp, err := http.Get("http://" + s.cfg.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{"sk-metrics-test-secret", "secret prompt", "ok-1"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
}

func keys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// An exhausted quota pauses the member: not ready, nothing dead-lettered,
// nothing committed past the stuck records; when the account works again
// it resumes by itself.
func TestQuotaExhaustedPausesAndResumes(t *testing.T) {
	var exhausted atomic.Bool
	exhausted.Store(true)
	var refused atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if exhausted.Load() {
			refused.Add(1)
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`)
			return
		}
		fmt.Fprint(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	t.Cleanup(api.Close)
	s := newTestStack(t, 1)
	s.cfg.BaseURL = api.URL
	s.cfg.HTTPAddr = freeAddr(t)
	s.cfg.QuotaProbeInterval = 300 * time.Millisecond
	s.member(t)
	waitFor(t, 10*time.Second, "ready", func() bool { return readyz(s.cfg.HTTPAddr) == 200 })

	const n = 10
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"q-%d","prompt":"p%d"}`, i, i)})
	}
	s.produce(t, recs...)
	waitFor(t, 10*time.Second, "readiness to turn false", func() bool { return readyz(s.cfg.HTTPAddr) == 503 })
	if m := scrape(t, s.cfg.HTTPAddr); m["sluice_limiter_paused"] != 1 {
		t.Errorf("sluice_limiter_paused = %v while paused, want 1", m["sluice_limiter_paused"])
	}
	// Several probes are refused while paused, yet nothing moves.
	before := refused.Load()
	waitFor(t, 10*time.Second, "two more probes", func() bool { return refused.Load() >= before+2 })
	if refused.Load() > before+n { // one probe per interval, not one call per record
		t.Errorf("%d calls while paused; want probes only", refused.Load()-before)
	}
	if c := s.committed(t); c[0] > 0 {
		t.Errorf("committed offset %d while every record is stuck", c[0])
	}
	exhausted.Store(false)
	start := time.Now()
	results := decodeResults(t, s.collect(t, "completions", n))
	took := time.Since(start)
	for id, r := range results {
		if r.Error != nil {
			t.Errorf("%s: error %+v after recovery", id, r.Error)
		}
	}
	t.Logf("resumed: all results %v after the account recovered", took.Round(time.Millisecond))
	waitFor(t, 10*time.Second, "ready again", func() bool { return readyz(s.cfg.HTTPAddr) == 200 })
	// Nothing was dead-lettered: the DLQ is empty.
	dlq := s.client(t, kgo.ConsumeTopics("prompts.dlq"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if recs := dlq.PollFetches(ctx).Records(); len(recs) > 0 {
		t.Errorf("%d dead letters for a quota outage, want 0", len(recs))
	}
}
