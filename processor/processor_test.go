package processor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/caller"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/processor"
	"github.com/sluice-dev/sluice/record"
)

const okBody = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi <there> & co"}}],"usage":{"total_tokens":7}}`

// fakeAPI is an httptest chat-completions server whose i-th answer (from 0)
// is produced by answer(i, w, r). It records what it received.
type fakeAPI struct {
	srv    *httptest.Server
	calls  atomic.Int64
	mu     sync.Mutex
	bodies [][]byte
	times  []time.Time
	paths  []string
	// release is closed before the server shuts down so hanging handlers
	// return.
	release chan struct{}
}

func newFakeAPI(t *testing.T, answer func(i int, w http.ResponseWriter, r *http.Request)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{release: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		b, _ := io.ReadAll(r.Body)
		i := int(f.calls.Add(1)) - 1
		f.mu.Lock()
		f.bodies = append(f.bodies, b)
		f.times = append(f.times, now)
		f.paths = append(f.paths, r.URL.Path)
		f.mu.Unlock()
		answer(i, w, r)
	}))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(f.release) }) // LIFO: before srv.Close
	return f
}

// hang blocks until the client gives up or the test ends.
func (f *fakeAPI) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-f.release:
	}
}

func (f *fakeAPI) body(i int) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[i]
}

func ok(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-request-id", "req-ok")
	_, _ = io.WriteString(w, okBody)
}

func status(w http.ResponseWriter, code int, body string) {
	w.Header().Set("x-request-id", "req-err")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

func baseConfig() processor.Config {
	return processor.Config{
		DefaultModel:   "grok-4",
		RequestTimeout: 10 * time.Second,
		MaxAttempts:    3,
		RetryBase:      time.Millisecond,
		RetryMax:       5 * time.Millisecond,
	}
}

func newProcessor(t *testing.T, f *fakeAPI, cfg processor.Config) *processor.Processor {
	t.Helper()
	c, err := api.New(api.Config{BaseURL: f.srv.URL + "/v1", Key: func() string { return "test-key" }})
	if err != nil {
		t.Fatal(err)
	}
	return wire(c, limiter.New(limiter.Config{MaxInFlight: 4}), cfg)
}

func input(value string, headers ...kgo.RecordHeader) *kgo.Record {
	return &kgo.Record{Topic: "prompts", Partition: 3, Offset: 1234, Value: []byte(value), Headers: headers}
}

func process(t *testing.T, p *processor.Processor, rec *kgo.Record) *record.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := p.Process(ctx, rec)
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	if res == nil {
		t.Fatal("Process: nil result and nil error")
	}
	if !strings.HasPrefix(res.ID, "res_") {
		t.Errorf("ID = %q, want a res_ id", res.ID)
	}
	if want := (record.Source{Topic: "prompts", Partition: 3, Offset: 1234}); res.Source != want {
		t.Errorf("Source = %+v, want %+v", res.Source, want)
	}
	if res.LatencyMS < 0 {
		t.Errorf("LatencyMS = %d", res.LatencyMS)
	}
	return res
}

func wantSuccess(t *testing.T, res *record.Result, attempts int) {
	t.Helper()
	if res.Error != nil {
		t.Fatalf("Error = %+v, want success", res.Error)
	}
	if res.Attempts != attempts {
		t.Errorf("Attempts = %d, want %d", res.Attempts, attempts)
	}
	if res.Response == nil {
		t.Fatal("Response = nil")
	}
	if res.Response.StatusCode != 200 {
		t.Errorf("Response.StatusCode = %d, want 200", res.Response.StatusCode)
	}
	if string(res.Response.Body) != okBody {
		t.Errorf("Response.Body = %s, want the server's body verbatim %s", res.Response.Body, okBody)
	}
	if res.Response.RequestID == nil || *res.Response.RequestID != "req-ok" {
		t.Errorf("Response.RequestID = %v, want req-ok", res.Response.RequestID)
	}
}

func wantError(t *testing.T, res *record.Result, code string, attempts int) {
	t.Helper()
	if res.Error == nil {
		t.Fatalf("Error = nil, want code %s (result %+v)", code, res)
	}
	if res.Error.Code != code {
		t.Errorf("Error.Code = %q, want %q (message %q)", res.Error.Code, code, res.Error.Message)
	}
	if res.Error.Message == "" {
		t.Error("Error.Message is empty")
	}
	if !res.Failed() {
		t.Error("Failed() = false for an error result")
	}
	if res.Attempts != attempts {
		t.Errorf("Attempts = %d, want %d", res.Attempts, attempts)
	}
}

func TestProcessShapes(t *testing.T) {
	t.Parallel()
	// The vendor members use odd spacing, number spelling and escapes:
	// they must reach the API byte for byte.
	const vendor = `{"a" : [1, 2.50, 1e400, 12345678901234567890], "s":"caf\u00e9 <b>"}`
	tests := []struct {
		name     string
		value    string
		customID string
		model    string // expected "model" member the server sees
	}{
		{"batch", `{"custom_id":"b-1","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}],"x_vendor":` + vendor + `}}`, "b-1", "grok-4"},
		{"batch short url", `{"custom_id":"b-2","url":"/chat/completions","body":{"model":"grok-3-mini","messages":[{"role":"user","content":"hi"}],"x_vendor":` + vendor + `}}`, "b-2", "grok-3-mini"},
		{"chat", `{"custom_id":"c-1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"temperature":0.70,"x_vendor":` + vendor + `}`, "c-1", "grok-4"},
		{"chat with model", `{"model":"m-explicit","custom_id":"c-2","messages":[{"role":"user","content":"hi"}],"x_vendor":` + vendor + `}`, "c-2", "m-explicit"},
		{"simple", `{"custom_id":"s-1","prompt":"hi","system":"be brief","max_tokens":16,"x_vendor":` + vendor + `}`, "s-1", "grok-4"},
		{"simple without custom_id", `{"prompt":"hi","x_vendor":` + vendor + `}`, "prompts-3-1234", "grok-4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) { ok(w) })
			res := process(t, newProcessor(t, f, baseConfig()), input(tc.value))
			wantSuccess(t, res, 1)
			if res.CustomID != tc.customID {
				t.Errorf("CustomID = %q, want %q", res.CustomID, tc.customID)
			}
			if n := f.calls.Load(); n != 1 {
				t.Fatalf("server calls = %d, want 1", n)
			}
			if got := f.paths[0]; got != "/v1/chat/completions" {
				t.Errorf("path = %q", got)
			}
			sent := f.body(0)
			var members map[string]json.RawMessage
			if err := json.Unmarshal(sent, &members); err != nil {
				t.Fatalf("server got a body that is not a JSON object: %v: %s", err, sent)
			}
			if _, has := members["custom_id"]; has {
				t.Errorf("custom_id was sent to the API: %s", sent)
			}
			var model string
			if err := json.Unmarshal(members["model"], &model); err != nil || model != tc.model {
				t.Errorf("model sent = %s, want %q", members["model"], tc.model)
			}
			if _, has := members["messages"]; !has {
				t.Errorf("no messages sent: %s", sent)
			}
			if got := string(members["x_vendor"]); got != vendor {
				t.Errorf("x_vendor sent = %s, want byte-identical %s", got, vendor)
			}
			for _, gone := range []string{"prompt", "system", "url", "method", "body"} {
				if _, has := members[gone]; has {
					t.Errorf("%q was sent to the API: %s", gone, sent)
				}
			}
		})
	}
}

func TestProcessInvalidInput(t *testing.T) {
	t.Parallel()
	hdr := func(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
	tests := []struct {
		name     string
		value    string
		headers  []kgo.RecordHeader
		code     string
		customID string
	}{
		{"not json", `{"prompt": hi}`, nil, record.CodeInvalidInput, "prompts-3-1234"},
		{"empty", ``, nil, record.CodeInvalidInput, "prompts-3-1234"},
		{"array", `[{"role":"user","content":"hi"}]`, nil, record.CodeInvalidInput, "prompts-3-1234"},
		{"array with header id", `[]`, []kgo.RecordHeader{hdr("trace", "t"), hdr("custom_id", "h-1")}, record.CodeInvalidInput, "h-1"},
		{"no messages", `{"custom_id":"v-1","model":"m"}`, nil, record.CodeInvalidInput, "v-1"},
		{"empty messages", `{"custom_id":"v-2","messages":[]}`, []kgo.RecordHeader{hdr("custom_id", "h-2")}, record.CodeInvalidInput, "v-2"},
		{"bad role", `{"messages":[{"role":"wizard","content":"hi"}]}`, []kgo.RecordHeader{hdr("custom_id", "h-3")}, record.CodeInvalidInput, "h-3"},
		{"role not a string", `{"custom_id":"v-4","messages":[{"role":7,"content":"hi"}]}`, nil, record.CodeInvalidInput, "v-4"},
		{"non-string custom_id", `{"custom_id":17,"messages":[]}`, []kgo.RecordHeader{hdr("custom_id", "h-5")}, record.CodeInvalidInput, "h-5"},
		{"empty header id", `{"messages":[]}`, []kgo.RecordHeader{hdr("custom_id", "")}, record.CodeInvalidInput, "prompts-3-1234"},
		{"images url", `{"custom_id":"e-1","method":"POST","url":"/v1/images/generations","body":{"prompt":"hi","model":"m"}}`, nil, record.CodeUnsupportedURL, "e-1"},
		{"images url, header id", `{"method":"POST","url":"/v1/images/generations","body":{"prompt":"hi"}}`, []kgo.RecordHeader{hdr("custom_id", "h-6")}, record.CodeUnsupportedURL, "h-6"},
		{"too large", `{"custom_id":"big","prompt":"` + strings.Repeat("x", 300) + `"}`, nil, record.CodeInvalidInput, "big"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) { ok(w) })
			cfg := baseConfig()
			cfg.MaxValueBytes = 256
			res := process(t, newProcessor(t, f, cfg), input(tc.value, tc.headers...))
			wantError(t, res, tc.code, 0)
			if res.CustomID != tc.customID {
				t.Errorf("CustomID = %q, want %q", res.CustomID, tc.customID)
			}
			if res.Response != nil {
				t.Errorf("Response = %+v, want nil", res.Response)
			}
			if n := f.calls.Load(); n != 0 {
				t.Errorf("server calls = %d, want 0", n)
			}
		})
	}
}

const chatValue = `{"custom_id":"r-1","messages":[{"role":"user","content":"hi"}]}`

func TestProcessRetries(t *testing.T) {
	t.Parallel()
	const err500 = `{"error":{"message":"internal","type":"server_error"}}`
	tests := []struct {
		name        string
		answer      func(f *fakeAPI) func(i int, w http.ResponseWriter, r *http.Request)
		cfg         func(*processor.Config)
		code        string // "" for success
		attempts    int
		status      int    // expected Response.StatusCode; 0 for no Response
		body        string // expected Response.Body, when status != 0
		checkResult func(t *testing.T, f *fakeAPI, res *record.Result)
	}{
		{
			name: "503 twice then 200",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(i int, w http.ResponseWriter, _ *http.Request) {
					if i < 2 {
						status(w, 503, `{"error":{"message":"overloaded"}}`)
						return
					}
					ok(w)
				}
			},
			attempts: 3, status: 200, body: okBody,
		},
		{
			name: "429 retry-after-ms is honoured",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(i int, w http.ResponseWriter, _ *http.Request) {
					if i == 0 {
						w.Header().Set("retry-after-ms", "50")
						status(w, 429, `{"error":{"message":"slow down","code":"rate_limit_exceeded"}}`)
						return
					}
					ok(w)
				}
			},
			attempts: 2, status: 200, body: okBody,
			checkResult: func(t *testing.T, f *fakeAPI, _ *record.Result) {
				f.mu.Lock()
				defer f.mu.Unlock()
				// The second request arrives after the client read the
				// first answer and waited: the gap is a strict lower bound.
				if gap := f.times[1].Sub(f.times[0]); gap < 50*time.Millisecond {
					t.Errorf("gap between attempts = %v, want >= 50ms (RetryBase is 1ms)", gap)
				}
			},
		},
		{
			name: "400 is not retried",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, w http.ResponseWriter, _ *http.Request) {
					status(w, 400, `{"error":{"message":"bad request","type":"invalid_request_error"}}`)
				}
			},
			code: record.CodeAPIError, attempts: 1, status: 400,
			body: `{"error":{"message":"bad request","type":"invalid_request_error"}}`,
		},
		{
			name: "persistent 500",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, w http.ResponseWriter, _ *http.Request) { status(w, 500, err500) }
			},
			code: record.CodeRetriesExhausted, attempts: 3, status: 500, body: err500,
		},
		{
			name: "persistent 500, one attempt allowed",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, w http.ResponseWriter, _ *http.Request) { status(w, 500, err500) }
			},
			cfg:  func(c *processor.Config) { c.MaxAttempts = 1 },
			code: record.CodeRetriesExhausted, attempts: 1, status: 500, body: err500,
		},
		{
			name: "hangs past the request timeout",
			answer: func(f *fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, _ http.ResponseWriter, r *http.Request) { f.hang(r) }
			},
			cfg:  func(c *processor.Config) { c.RequestTimeout = 50 * time.Millisecond },
			code: record.CodeTimeout, attempts: 3,
		},
		{
			name: "500 then timeout",
			answer: func(f *fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(i int, w http.ResponseWriter, r *http.Request) {
					if i == 0 {
						status(w, 500, err500)
						return
					}
					f.hang(r)
				}
			},
			// Long enough that the first attempt reaches the server
			// (and gets the 500) on a loaded machine too.
			cfg:  func(c *processor.Config) { c.RequestTimeout = time.Second; c.MaxAttempts = 2 },
			code: record.CodeTimeout, attempts: 2,
		},
		{
			name: "malformed 200 then good",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(i int, w http.ResponseWriter, _ *http.Request) {
					if i == 0 {
						_, _ = io.WriteString(w, `{"choices":[`)
						return
					}
					ok(w)
				}
			},
			attempts: 2, status: 200, body: okBody,
		},
		{
			name: "malformed every time",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("x-request-id", "req-m")
					_, _ = io.WriteString(w, `<html>`)
				}
			},
			code: record.CodeRetriesExhausted, attempts: 3, status: 200, body: "",
			checkResult: func(t *testing.T, _ *fakeAPI, res *record.Result) {
				if res.Response.Body != nil {
					t.Errorf("Response.Body = %q, want nil for a non-JSON body", res.Response.Body)
				}
			},
		},
		{
			name: "connection dropped then good",
			answer: func(*fakeAPI) func(int, http.ResponseWriter, *http.Request) {
				return func(i int, w http.ResponseWriter, _ *http.Request) {
					if i == 0 {
						conn, _, err := w.(http.Hijacker).Hijack()
						if err == nil {
							_ = conn.Close()
						}
						return
					}
					ok(w)
				}
			},
			attempts: 2, status: 200, body: okBody,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var f *fakeAPI
			f = newFakeAPI(t, func(i int, w http.ResponseWriter, r *http.Request) { tc.answer(f)(i, w, r) })
			cfg := baseConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			res := process(t, newProcessor(t, f, cfg), input(chatValue))
			if res.CustomID != "r-1" {
				t.Errorf("CustomID = %q, want r-1", res.CustomID)
			}
			if tc.code == "" {
				wantSuccess(t, res, tc.attempts)
			} else {
				wantError(t, res, tc.code, tc.attempts)
			}
			// An attempt that timed out may have ended before its request
			// reached the server (a loaded machine, a 50 ms timeout): the
			// server saw at most the attempts, and every one that was not
			// a timeout.
			switch n := int(f.calls.Load()); {
			case tc.code == record.CodeTimeout && (n > tc.attempts || n < 1):
				t.Errorf("server calls = %d, want 1 to %d", n, tc.attempts)
			case tc.code != record.CodeTimeout && n != tc.attempts:
				t.Errorf("server calls = %d, want %d", n, tc.attempts)
			}
			switch {
			case tc.status == 0 && res.Response != nil:
				t.Errorf("Response = %+v, want nil", res.Response)
			case tc.status != 0 && res.Response == nil:
				t.Errorf("Response = nil, want status %d", tc.status)
			case tc.status != 0:
				if res.Response.StatusCode != tc.status {
					t.Errorf("Response.StatusCode = %d, want %d", res.Response.StatusCode, tc.status)
				}
				if tc.body != "" && !bytes.Equal(res.Response.Body, []byte(tc.body)) {
					t.Errorf("Response.Body = %s, want %s", res.Response.Body, tc.body)
				}
				if res.Response.RequestID == nil {
					t.Error("Response.RequestID = nil")
				}
			}
			// Every attempt sends the same body.
			for i := 1; i < int(f.calls.Load()); i++ {
				if !bytes.Equal(f.body(i), f.body(0)) {
					t.Errorf("attempt %d sent %s, attempt 1 sent %s", i+1, f.body(i), f.body(0))
				}
			}
			if tc.checkResult != nil {
				tc.checkResult(t, f, res)
			}
		})
	}
}

func TestProcessAbandonedMidCall(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	var f *fakeAPI
	f = newFakeAPI(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		f.hang(r)
	})
	p := newProcessor(t, f, baseConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type out struct {
		res *record.Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := p.Process(ctx, input(chatValue))
		done <- out{res, err}
	}()
	<-started
	cancel()
	got := <-done
	if !errors.Is(got.err, processor.ErrAbandoned) {
		t.Fatalf("err = %v, want processor.ErrAbandoned", got.err)
	}
	if !errors.Is(got.err, context.Canceled) {
		t.Errorf("err = %v, want it to wrap context.Canceled", got.err)
	}
	if got.res != nil {
		t.Errorf("result = %+v, want nil", got.res)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("server calls = %d, want 1 (no retry after cancel)", n)
	}
}

func TestProcessAbandonedDuringBackoff(t *testing.T) {
	t.Parallel()
	answered := make(chan struct{}, 1)
	f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "3600") // the backoff would take an hour
		status(w, 503, `{"error":{"message":"later"}}`)
		answered <- struct{}{}
	})
	p := newProcessor(t, f, baseConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		res, err := p.Process(ctx, input(chatValue))
		if res != nil {
			t.Errorf("result = %+v, want nil", res)
		}
		errc <- err
	}()
	<-answered
	cancel()
	if err := <-errc; !errors.Is(err, processor.ErrAbandoned) {
		t.Fatalf("err = %v, want processor.ErrAbandoned", err)
	}
}

func TestProcessConcurrentUnderLimiter(t *testing.T) {
	t.Parallel()
	const limit = 2
	lim := limiter.New(limiter.Config{MaxInFlight: limit})
	var cur, peak, unpermitted atomic.Int64
	f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		// Between entry and the first byte of the answer, the caller
		// holds its permit, so cur never exceeds the limit.
		n := cur.Add(1)
		for {
			m := peak.Load()
			if n <= m || peak.CompareAndSwap(m, n) {
				break
			}
		}
		if lim.InFlight() < 1 {
			unpermitted.Add(1)
		}
		cur.Add(-1)
		ok(w)
	})
	c, err := api.New(api.Config{BaseURL: f.srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	p := wire(c, lim, baseConfig())
	var wg sync.WaitGroup
	for range 24 {
		wg.Go(func() {
			res, err := p.Process(context.Background(), input(chatValue))
			if err != nil || res.Error != nil {
				t.Errorf("Process = %+v, %v", res, err)
			}
		})
	}
	wg.Wait()
	if got := peak.Load(); got > limit {
		t.Errorf("server saw %d concurrent calls, limiter allows %d", got, limit)
	}
	if n := unpermitted.Load(); n > 0 {
		t.Errorf("%d calls were made without a limiter permit", n)
	}
	if lim.InFlight() != 0 {
		t.Errorf("limiter InFlight = %d after all calls, want 0", lim.InFlight())
	}
	if n := f.calls.Load(); n != 24 {
		t.Errorf("server calls = %d, want 24", n)
	}
}

// wire is a Processor calling c under lim, as sluice consume wires
// it.
func wire(c *api.Client, lim *limiter.Limiter, cfg processor.Config) *processor.Processor {
	cfg.Middleware = append(cfg.Middleware, caller.Limit(lim))
	cfg.TokenBudget = lim.TokenBudget
	return processor.New(caller.NewAPI(c), cfg)
}
