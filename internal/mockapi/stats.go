package mockapi

import (
	"maps"
	"net/http"
	"sync"
	"time"
)

// Stats are the counters of API requests (every POST route) since New or
// the last ResetStats; /v1/models, /stats and /healthz are not counted.
type Stats struct {
	// Requests counts API requests received.
	Requests int64 `json:"requests"`
	// ByStatus counts answers by HTTP status; aborted requests (hang,
	// reset, client gone) have no status and are not counted here.
	ByStatus map[int]int64 `json:"by_status"`
	// Faults counts injected faults by kind.
	Faults map[Fault]int64 `json:"faults"`
	// RateLimited counts 429 answers of the RPM/TPM buckets (not faults).
	RateLimited int64 `json:"rate_limited"`
	// InFlight is the number of requests being handled now.
	InFlight int64 `json:"in_flight"`
	// MaxConcurrency is the largest InFlight seen.
	MaxConcurrency int64 `json:"max_concurrency"`
	// PromptTokens, CompletionTokens and ReasoningTokens sum the usage of
	// fully delivered answers (an embedding's or a moderation's input is
	// prompt tokens).
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	ReasoningTokens  int64 `json:"reasoning_tokens"`
	// FirstRequest is when the first request arrived; LastResponse is when
	// the latest request ended.
	FirstRequest time.Time `json:"first_request"`
	LastResponse time.Time `json:"last_response"`
	// RequestsPerSecond is Requests over LastResponse - FirstRequest.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// Batch counts the batch routes' work (not reset by ResetStats).
	Batch BatchStats `json:"batch"`
}

// statsCollector accumulates Stats under a mutex.
type statsCollector struct {
	mu sync.Mutex
	s  Stats
}

// reset zeroes the counters, keeping inFlight requests in flight.
func (c *statsCollector) reset(inFlight int64) {
	c.s = Stats{
		ByStatus:       map[int]int64{},
		Faults:         map[Fault]int64{},
		InFlight:       inFlight,
		MaxConcurrency: inFlight,
	}
}

func (c *statsCollector) begin(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.Requests++
	c.s.InFlight++
	c.s.MaxConcurrency = max(c.s.MaxConcurrency, c.s.InFlight)
	if c.s.FirstRequest.IsZero() {
		c.s.FirstRequest = now
	}
}

func (c *statsCollector) end(now time.Time, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.InFlight--
	if status != 0 {
		c.s.ByStatus[status]++
	}
	c.s.LastResponse = now
}

func (c *statsCollector) fault(f Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.Faults[f]++
}

func (c *statsCollector) rateLimited() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.RateLimited++
}

func (c *statsCollector) usage(u *usage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.PromptTokens += int64(u.PromptTokens)
	c.s.CompletionTokens += int64(u.CompletionTokens)
	c.s.ReasoningTokens += int64(u.CompletionTokensDetails.ReasoningTokens)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	st := s.stats.s
	st.ByStatus = maps.Clone(st.ByStatus)
	st.Faults = maps.Clone(st.Faults)
	s.batches.mu.Lock()
	st.Batch = s.batches.stats
	st.Batch.Files = len(s.batches.files)
	s.batches.mu.Unlock()
	if el := st.LastResponse.Sub(st.FirstRequest).Seconds(); el > 0 && !st.FirstRequest.IsZero() {
		st.RequestsPerSecond = float64(st.Requests) / el
	}
	return st
}

// ResetStats zeroes the counters; requests in flight stay counted in InFlight.
func (s *Server) ResetStats() {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	s.stats.reset(s.stats.s.InFlight)
}

// statusWriter records the status of an answer; Unwrap keeps
// http.ResponseController (Flush, Hijack) working.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the wrapped writer for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
