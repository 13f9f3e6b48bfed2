package processor_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/processor"
	"github.com/sluice-dev/sluice/record"
)

// newProcessorWith is newProcessor with a limiter of the test's own.
func newProcessorWith(t *testing.T, f *fakeAPI, lim *limiter.Limiter, cfg processor.Config) *processor.Processor {
	t.Helper()
	c, err := api.New(api.Config{BaseURL: f.srv.URL + "/v1", Key: func() string { return "test-key" }})
	if err != nil {
		t.Fatal(err)
	}
	return wire(c, lim, cfg)
}

// One odd record or answer is that record's outcome; it never holds the
// account or the records after it.
func TestOneRecordOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		value    string
		answer   func(i int, w http.ResponseWriter, r *http.Request)
		tpm      int
		stream   bool
		code     string // "" = success
		attempts int
		calls    int64
	}{
		{
			name:  "429 asking for an hour is asked again after RetryMax",
			value: chatValue,
			answer: func(i int, w http.ResponseWriter, _ *http.Request) {
				if i == 0 {
					w.Header().Set("Retry-After", "3600")
					status(w, 429, `{"error":{"message":"slow down","code":"rate_limit_exceeded"}}`)
					return
				}
				ok(w)
			},
			attempts: 2, calls: 2,
		},
		{
			name:  "2xx with an error object and no choices is retried, then fails",
			value: chatValue,
			answer: func(_ int, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"error":{"message":"upstream timed out","type":"server_error"}}`)
			},
			code: record.CodeRetriesExhausted, attempts: 3, calls: 3,
		},
		{
			name:  "403 model_not_found is the record's error, not the account's",
			value: chatValue,
			answer: func(_ int, w http.ResponseWriter, _ *http.Request) {
				status(w, 403, `{"error":{"message":"The model grok-secret does not exist or your team does not have access to it","type":"invalid_request_error","code":"model_not_found"}}`)
			},
			code: record.CodeAPIError, attempts: 1, calls: 1,
		},
		{
			name:     "n=128 x max_tokens=1M under TPM 2M fails at once without a call",
			value:    `{"custom_id":"r-1","messages":[{"role":"user","content":"hi"}],"n":128,"max_tokens":1000000}`,
			answer:   func(_ int, w http.ResponseWriter, _ *http.Request) { ok(w) },
			tpm:      2_000_000,
			code:     record.CodeExceedsTPM,
			attempts: 0, calls: 0,
		},
		{
			name:  "rate limit inside a stream is retried",
			value: chatValue, stream: true,
			answer: func(i int, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				if i == 0 {
					_, _ = io.WriteString(w, "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}\n\n")
					return
				}
				_, _ = io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
			},
			attempts: 2, calls: 2,
		},
		{
			name:  "streamed tool call whose arguments do not parse is never a success",
			value: chatValue, stream: true,
			answer: func(_ int, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n")
			},
			code: record.CodeRetriesExhausted, attempts: 3, calls: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI(t, tc.answer)
			cfg := baseConfig()
			cfg.RetryMax = 20 * time.Millisecond
			cfg.Stream = tc.stream
			lim := limiter.New(limiter.Config{MaxInFlight: 4, TPM: tc.tpm, MaxCooldown: cfg.RetryMax})
			p := newProcessorWith(t, f, lim, cfg)
			res := process(t, p, input(tc.value))
			switch {
			case tc.code == "" && !tc.stream:
				wantSuccess(t, res, tc.attempts)
			case tc.code == "":
				if res.Error != nil || res.Attempts != tc.attempts || res.Response == nil || res.Response.StatusCode != 200 {
					t.Fatalf("result %+v (error %+v), want a success after %d attempts", res, res.Error, tc.attempts)
				}
			case res.Error == nil || res.Error.Code != tc.code:
				t.Fatalf("error = %+v, want code %s", res.Error, tc.code)
			case res.Attempts != tc.attempts:
				t.Errorf("attempts = %d, want %d", res.Attempts, tc.attempts)
			}
			if got := f.calls.Load(); got != tc.calls {
				t.Errorf("API calls = %d, want %d", got, tc.calls)
			}
			if lim.Paused() {
				t.Errorf("the account is paused after one record's outcome")
			}
			// The next record goes through, with no debt or pause left
			// behind (a blocked one would run into the deadline).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := lim.Acquire(ctx, limiter.Request{Tokens: 10}); err != nil {
				t.Fatalf("the next call cannot start: %v", err)
			}
		})
	}
}

// A rate limit inside a stream goes through the cooldown and the AIMD
// limit, as the same 429 answer would.
func TestStreamRateLimitPushesBack(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}\n\n")
	})
	cfg := baseConfig()
	cfg.Stream, cfg.MaxAttempts = true, 1
	lim := limiter.New(limiter.Config{MaxInFlight: 8, MaxCooldown: time.Minute})
	res := process(t, newProcessorWith(t, f, lim, cfg), input(chatValue))
	if res.Error == nil || res.Error.Code != record.CodeRetriesExhausted {
		t.Fatalf("error = %+v, want retries_exhausted", res.Error)
	}
	s := lim.State()
	if s.CooldownUntil.IsZero() || s.Concurrency != 6 {
		t.Errorf("after a rate limit in a stream: cooldown until %v, concurrency %d; want a cooldown and 6 (8 x 0.75)", s.CooldownUntil, s.Concurrency)
	}
	if !strings.Contains(res.Error.Message, "rate_limit_exceeded") {
		t.Errorf("message %q does not name the code", res.Error.Message)
	}
}

// A 401 for one record's model while another record's call succeeds is
// that record's error: the account is not paused, and the record is not
// sent again and again.
func TestAccountWideRefusalOfOneRecordWhileOthersSucceed(t *testing.T) {
	t.Parallel()
	arrived, answer := make(chan struct{}), make(chan struct{})
	var f *fakeAPI
	f = newFakeAPI(t, func(i int, w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		body := string(f.bodies[i])
		f.mu.Unlock()
		if strings.Contains(body, "only-one-401") {
			close(arrived)
			<-answer
			status(w, 401, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`)
			return
		}
		ok(w)
	})
	lim := limiter.New(limiter.Config{MaxInFlight: 4, ProbeInterval: time.Hour})
	p := newProcessorWith(t, f, lim, baseConfig())
	odd := make(chan *record.Result, 1)
	go func() {
		odd <- process(t, p, input(`{"custom_id":"odd","model":"only-one-401","messages":[{"role":"user","content":"hi"}]}`))
	}()
	<-arrived
	wantSuccess(t, process(t, p, input(chatValue)), 1) // succeeds while the odd call is under way
	close(answer)
	res := <-odd
	if res.Error == nil || res.Error.Code != record.CodeAPIError || res.Attempts != 1 {
		t.Fatalf("odd record: error %+v after %d attempts, want api_error after 1", res.Error, res.Attempts)
	}
	if lim.Paused() {
		t.Error("the account is paused for one record's refusal")
	}
	if got := f.calls.Load(); got != 2 {
		t.Errorf("API calls = %d, want 2", got)
	}
}
