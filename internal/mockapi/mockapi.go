// Package mockapi is an in-process simulator of an OpenAI-compatible API
// (xAI Grok flavoured) for tests, benchmarks and demos.
//
// It serves, at /v1/... and without the /v1 prefix, one file each:
//   - POST /v1/chat/completions (answer.go, stream.go): deterministic
//     completions derived from the request only, streamed as data-only
//     chat.completion.chunk events when asked to;
//   - POST /v1/responses (responses.go): the same text as a response
//     object, streamed as the Responses API's typed events
//     (response.created ... response.completed);
//   - POST /v1/embeddings (embeddings.go): deterministic unit vectors;
//   - POST /v1/completions (completions.go): legacy text_completion, plain
//     or streamed;
//   - POST /v1/moderations (moderations.go): deterministic results, a
//     category flagged when the input names it;
//   - the Batch APIs (batches.go): xAI's native one (/v1/batches,
//     /v1/batches/{id}/requests, .../results, ...:cancel) and OpenAI's
//     (/v1/files, /v1/batches, /v1/files/{id}/content, .../cancel), whose
//     requests end after Config.BatchDelay, fail or expire at the
//     configured rates, and are answered as the endpoints answer.
//
// Every route shares one path (handler.go): auth, per-second smoothed
// RPM/TPM token buckets with OpenAI-style 429 answers and x-ratelimit-*
// headers, injected faults (5xx, spurious 429, quota exhaustion, hangs,
// connection resets, malformed bodies, stalled streams) with configurable
// probabilities, and the simulated latency. GET /v1/models, GET /stats
// and GET /healthz complete the surface.
//
// Typical in-process use:
//
//	mock := mockapi.New(mockapi.Config{RPM: 600, Fail5xx: 0.05, Seed: 1})
//	srv := httptest.NewServer(mock)
//	defer srv.Close()
//	defer mock.Close() // runs first: releases hanging requests
//	// point the client at srv.URL + "/v1" ...
//	st := mock.Stats()
//
// Standalone, `sluice mockapi --addr 127.0.0.1:8000` serves the same handler,
// configured through SLUICE_MOCK_* environment variables (see Config).
package mockapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// EnvPrefix is the envconfig prefix under which Config is read.
const EnvPrefix = "SLUICE_MOCK"

// DefaultModels are the model names served by default.
var DefaultModels = []string{"grok-4", "grok-3-mini"}

// Config configures a Server. The zero value is usable: no latency, no
// limits, no faults, and any model name is accepted. Read it from the
// environment with envconfig.Process(EnvPrefix, &cfg).
type Config struct {
	// Latency is the fixed part of the answer time.
	Latency time.Duration `envconfig:"LATENCY" default:"50ms" desc:"fixed answer latency"`
	// Jitter adds a uniform random offset in [-Jitter, +Jitter] to the answer time.
	Jitter time.Duration `envconfig:"JITTER" default:"0s" desc:"uniform +- jitter added to the latency"`
	// TTFT is the time to first token. When TTFT or TokensPerSecond is set,
	// the answer time is TTFT + tokens/TokensPerSecond instead of Latency.
	TTFT time.Duration `envconfig:"TTFT" default:"0s" desc:"time to first token (0 = off)"`
	// TokensPerSecond is the generation speed (0 = off, instant generation).
	TokensPerSecond float64 `envconfig:"TOKENS_PER_SECOND" default:"0" desc:"generation speed in tokens per second (0 = off)"`
	// CompletionTokens fixes the natural answer length; 0 derives 16..63
	// tokens from the request hash. max_tokens still truncates it.
	CompletionTokens int `envconfig:"COMPLETION_TOKENS" default:"0" desc:"natural answer length in tokens (0 = 16..63 derived from the request)"`

	// RPM is the requests-per-minute limit (0 = unlimited), enforced per
	// second with a token bucket holding one second's worth of requests.
	RPM int `envconfig:"RPM" default:"0" desc:"requests per minute limit, smoothed per second (0 = off)"`
	// TPM is the tokens-per-minute limit (0 = unlimited), enforced like RPM
	// on prompt tokens + max_tokens (or the answer length, reasoning
	// included) per request.
	TPM int `envconfig:"TPM" default:"0" desc:"tokens per minute limit, smoothed per second (0 = off)"`

	// APIKey, when non-empty, is the only accepted bearer token.
	APIKey string `envconfig:"API_KEY" default:"" desc:"required bearer token (empty = no auth)"`

	// Fail5xx is the probability of a random 500, 502 or 503 answer.
	Fail5xx float64 `envconfig:"FAIL_5XX" default:"0" desc:"probability of a random 500/502/503"`
	// Overload429 is the probability of a spurious 429 "overloaded" answer.
	Overload429 float64 `envconfig:"OVERLOAD_429" default:"0" desc:"probability of a spurious 429 overloaded"`
	// Hang is the probability of never answering until the client gives up.
	Hang float64 `envconfig:"HANG" default:"0" desc:"probability of hanging until the client cancels"`
	// Reset is the probability of closing the connection without an answer.
	Reset float64 `envconfig:"RESET" default:"0" desc:"probability of resetting the connection"`
	// Malformed is the probability of a 200 with a truncated JSON body.
	Malformed float64 `envconfig:"MALFORMED" default:"0" desc:"probability of a 200 with truncated JSON"`
	// Quota is the probability of a non-retryable 429 insufficient_quota.
	Quota float64 `envconfig:"QUOTA" default:"0" desc:"probability of a 429 insufficient_quota"`
	// StreamStallProb is the probability that a streamed answer sends a few
	// chunks and then stalls until the client gives up (streams only).
	StreamStallProb float64 `envconfig:"STREAM_STALL" default:"0" desc:"probability that a stream stalls after a few chunks"`
	// KeepAlive, when positive, sends stream headers at once and an SSE
	// comment ": keep-alive" every KeepAlive while a stream waits.
	KeepAlive time.Duration `envconfig:"KEEPALIVE" default:"0s" desc:"SSE keep-alive comment interval while streaming (0 = off)"`

	// BatchDelay is how long a batch request takes to end after it
	// arrived (added to an xAI batch, or its OpenAI batch created).
	BatchDelay time.Duration `envconfig:"BATCH_DELAY" default:"2s" desc:"time from a batch request's arrival to its result"`
	// BatchFail is the probability that a batch request fails (its
	// result a 500 server_error).
	BatchFail float64 `envconfig:"BATCH_FAIL" default:"0" desc:"probability that a batch request fails"`
	// BatchExpire is the probability that a batch request expires
	// without running (OpenAI's batch_expired).
	BatchExpire float64 `envconfig:"BATCH_EXPIRE" default:"0" desc:"probability that a batch request expires"`

	// Seed seeds the math/rand/v2 source for faults and jitter (0 = random).
	Seed int64 `envconfig:"SEED" default:"0" desc:"random seed for faults and jitter (0 = random)"`
	// Models lists the accepted model names; empty accepts any model.
	Models []string `envconfig:"MODELS" default:"grok-4,grok-3-mini" desc:"comma-separated accepted models (empty = any)"`
}

// DefaultConfig returns the configuration envconfig yields from an empty
// environment.
func DefaultConfig() Config {
	return Config{Latency: 50 * time.Millisecond, BatchDelay: 2 * time.Second, Models: append([]string(nil), DefaultModels...)}
}

// faultProb is one configured fault probability.
type faultProb struct {
	field string // Config field name, for Validate
	kind  Fault
	p     float64
}

// faultProbs lists the fault probabilities in draw order.
func (c Config) faultProbs() []faultProb {
	return []faultProb{
		{"Fail5xx", FaultFail5xx, c.Fail5xx},
		{"Overload429", FaultOverload429, c.Overload429},
		{"Hang", FaultHang, c.Hang},
		{"Reset", FaultReset, c.Reset},
		{"Malformed", FaultMalformed, c.Malformed},
		{"Quota", FaultQuota, c.Quota},
		{"StreamStallProb", FaultStreamStall, c.StreamStallProb},
	}
}

// Validate reports every out-of-range field, naming it.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("mockapi: config %s: "+format, append([]any{field}, args...)...))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"Latency", c.Latency}, {"Jitter", c.Jitter}, {"TTFT", c.TTFT}, {"KeepAlive", c.KeepAlive}, {"BatchDelay", c.BatchDelay}} {
		if d.d < 0 {
			bad(d.name, "must be >= 0, got %s", d.d)
		}
	}
	if c.TokensPerSecond < 0 || math.IsNaN(c.TokensPerSecond) || math.IsInf(c.TokensPerSecond, 0) {
		bad("TokensPerSecond", "must be a finite number >= 0, got %v", c.TokensPerSecond)
	}
	if c.CompletionTokens < 0 {
		bad("CompletionTokens", "must be >= 0, got %d", c.CompletionTokens)
	}
	if c.RPM < 0 {
		bad("RPM", "must be >= 0, got %d", c.RPM)
	}
	if c.TPM < 0 {
		bad("TPM", "must be >= 0, got %d", c.TPM)
	}
	sum := 0.0
	for _, f := range c.faultProbs() {
		if !(f.p >= 0 && f.p <= 1) { // also catches NaN
			bad(f.field, "probability must be in [0,1], got %v", f.p)
			continue
		}
		sum += f.p
	}
	if sum > 1+1e-9 {
		bad("Fail5xx+Overload429+Hang+Reset+Malformed+Quota+StreamStallProb", "probabilities must sum to <= 1, got %v", sum)
	}
	for _, f := range []struct {
		name string
		p    float64
	}{{"BatchFail", c.BatchFail}, {"BatchExpire", c.BatchExpire}} {
		if !(f.p >= 0 && f.p <= 1) {
			bad(f.name, "probability must be in [0,1], got %v", f.p)
		}
	}
	if c.BatchFail+c.BatchExpire > 1+1e-9 {
		bad("BatchFail+BatchExpire", "probabilities must sum to <= 1, got %v", c.BatchFail+c.BatchExpire)
	}
	for i, m := range c.Models {
		if m == "" {
			bad(fmt.Sprintf("Models[%d]", i), "must not be empty")
		}
	}
	return errors.Join(errs...)
}

// Server is the simulator; it implements http.Handler and is safe for
// concurrent use. Create it with New.
type Server struct {
	cfg    Config
	models map[string]bool // nil accepts any model
	mux    *http.ServeMux
	limits *limiter
	stats  statsCollector
	now    func() time.Time

	batches batchStore // the batch routes' (batches.go)

	rngMu sync.Mutex
	rng   *rand.Rand

	idPrefix string
	seq      atomic.Uint64

	closed context.Context
	close  context.CancelFunc
}

// New returns a Server for cfg. It panics if cfg.Validate fails: a bad
// configuration is a programming error in tests; commands validate first.
func New(cfg Config) *Server {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	seed := uint64(cfg.Seed)
	if seed == 0 {
		seed = rand.Uint64()
	}
	s := &Server{
		cfg:      cfg,
		mux:      http.NewServeMux(),
		now:      time.Now,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		idPrefix: fmt.Sprintf("%08x", rand.Uint32()),
	}
	s.limits = newLimiter(cfg.RPM, cfg.TPM, func() time.Time { return s.now() })
	if len(cfg.Models) > 0 {
		s.models = make(map[string]bool, len(cfg.Models))
		for _, m := range cfg.Models {
			s.models[m] = true
		}
	}
	s.closed, s.close = context.WithCancel(context.Background())
	s.stats.reset(0)

	for path, rt := range routes {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(rt, w, r) })
		s.mux.Handle("POST /v1"+path, h)
		s.mux.Handle("POST "+path, h)
	}
	s.registerBatchRoutes()
	s.mux.HandleFunc("GET /v1/models", s.handleModels)
	s.mux.HandleFunc("GET /models", s.handleModels)
	s.mux.HandleFunc("GET /stats", s.handleStats)
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("/", s.handleNotFound)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Close aborts every request that is waiting (hang, stall, latency), so an
// enclosing httptest.Server.Close or http.Server.Shutdown does not block on
// them; aborted requests see a dropped connection, never a fake answer.
// Afterwards any request that would wait aborts at once. Close is idempotent.
func (s *Server) Close() {
	s.close()
}

// Config returns the configuration the server was created with.
func (s *Server) Config() Config { return s.cfg }

// nextID returns a process-unique identifier suffix.
func (s *Server) nextID() string {
	return fmt.Sprintf("%s%012x", s.idPrefix, s.seq.Add(1))
}

// randFloat returns a uniform float in [0,1) from the seeded source.
func (s *Server) randFloat() float64 {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64()
}

// randIntN returns a uniform int in [0,n) from the seeded source.
func (s *Server) randIntN(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}
