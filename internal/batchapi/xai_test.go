package batchapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
)

// stub is an HTTP peer that records every request and answers with the
// handler of its method and path.
type stub struct {
	t        *testing.T
	mu       sync.Mutex
	seen     []seenRequest
	handlers map[string]func(w http.ResponseWriter, r *http.Request, body []byte)
}

type seenRequest struct {
	method, path, query, auth, contentType string
	body                                   []byte
}

func newStub(t *testing.T) (*stub, *api.Client) {
	t.Helper()
	s := &stub{t: t, handlers: map[string]func(http.ResponseWriter, *http.Request, []byte){}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	c, err := api.New(api.Config{BaseURL: srv.URL + "/v1", Key: func() string { return "sk-secret" }})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func (s *stub) handle(pattern string, h func(w http.ResponseWriter, r *http.Request, body []byte)) {
	s.handlers[pattern] = h
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, seenRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body})
	s.mu.Unlock()
	h, ok := s.handlers[r.Method+" "+r.URL.Path]
	if !ok {
		http.Error(w, `{"error":{"message":"no route"}}`, http.StatusNotFound)
		return
	}
	h(w, r, body)
}

func (s *stub) requests() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.seen...)
}

func answer(body string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

func TestXAICreateGetCancelShapes(t *testing.T) {
	s, c := newStub(t)
	s.handle("POST /v1/batches", answer(`{"batch_id":"b-1","name":"n","create_time":"2026-01-02T03:04:05Z","expire_time":"2026-01-03T03:04:05Z","state":{"num_requests":0,"num_pending":0}}`))
	s.handle("GET /v1/batches/b-1", answer(`{"batch_id":"b-1","state":{"num_requests":"3","num_pending":1,"num_success":1,"num_error":1,"num_cancelled":0},"cost_breakdown":{"total_cost_usd_ticks":"123456"}}`))
	s.handle("POST /v1/batches/b-1:cancel", answer(`{"batch_id":"b-1","cancel_time":"2026-01-02T04:00:00Z","state":{"num_requests":3,"num_pending":0,"num_success":1,"num_error":1,"num_cancelled":1}}`))
	x := NewXAI(c)
	ctx := context.Background()

	b, err := x.Create(ctx, "sluice-prompts-0")
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != "b-1" || !b.CreatedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) || b.ExpiresAt.IsZero() {
		t.Fatalf("create = %+v", b)
	}
	b, err = x.Get(ctx, "b-1")
	if err != nil {
		t.Fatal(err)
	}
	want := Batch{ID: "b-1", State: StateInProgress, Total: 3, Pending: 1, Succeeded: 1, Failed: 1, CostUSDTicks: 123456}
	if b.ID != want.ID || b.State != want.State || b.Total != 3 || b.Pending != 1 || b.Succeeded != 1 || b.Failed != 1 || b.CostUSDTicks != 123456 {
		t.Fatalf("get = %+v, want %+v", b, want)
	}
	b, err = x.Cancel(ctx, "b-1")
	if err != nil {
		t.Fatal(err)
	}
	if b.State != StateCancelled || b.Cancelled != 1 {
		t.Fatalf("cancel = %+v", b)
	}

	reqs := s.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	var created map[string]string
	if err := json.Unmarshal(reqs[0].body, &created); err != nil || created["name"] != "sluice-prompts-0" {
		t.Fatalf("create body %s (%v)", reqs[0].body, err)
	}
	for _, r := range reqs {
		if r.auth != "Bearer sk-secret" {
			t.Fatalf("%s %s: Authorization %q", r.method, r.path, r.auth)
		}
	}
}

func TestXAIDerivedState(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	x := &XAI{now: func() time.Time { return now }}
	past, future := now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)
	for _, tc := range []struct {
		name               string
		pending, cancelled int
		expire, cancel     string
		byXAI              string
		want               State
	}{
		{"pending", 2, 0, future, "", "", StateInProgress},
		{"nothing pending", 0, 0, future, "", "", StateCompleted},
		{"expired with pending", 2, 0, past, "", "", StateExpired},
		{"expired, unrun moved to cancelled", 0, 2, past, "", "", StateExpired},
		{"expired, all done", 0, 0, past, "", "", StateCompleted},
		{"cancelling", 2, 0, future, past, "", StateCancelling},
		{"cancelled", 0, 2, future, past, "", StateCancelled},
		{"cancelled by xAI", 0, 2, future, "", "capacity", StateCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var xb xaiBatch
			xb.BatchID, xb.ExpireTime, xb.CancelTime, xb.CancelByXAIMessage = "b", tc.expire, tc.cancel, tc.byXAI
			xb.State.NumPending, xb.State.NumCancelled = flexInt(tc.pending), flexInt(tc.cancelled)
			if got := x.batch(xb).State; got != tc.want {
				t.Fatalf("state = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestXAIAddShapeAndChunks(t *testing.T) {
	s, c := newStub(t)
	s.handle("POST /v1/batches/b 1/requests", answer(`{}`))
	x := NewXAI(c)
	reqs := []Request{
		{ID: "prompts-0-5", URL: "/v1/chat/completions", Body: json.RawMessage(`{"model":"grok-4","messages":[{"role":"user","content":"hi"}]}`)},
		{ID: "prompts-1-7", URL: "/v1/chat/completions", Body: json.RawMessage(`{"model":"grok-4","messages":[]}`)},
	}
	if err := x.Add(context.Background(), "b 1", reqs); err != nil {
		t.Fatal(err)
	}
	got := s.requests()
	if len(got) != 1 || got[0].path != "/v1/batches/b 1/requests" || got[0].contentType != "application/json" {
		t.Fatalf("requests %+v", got)
	}
	var body struct {
		BatchRequests []struct {
			BatchRequestID string                     `json:"batch_request_id"`
			BatchRequest   map[string]json.RawMessage `json:"batch_request"`
		} `json:"batch_requests"`
	}
	if err := json.Unmarshal(got[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if len(body.BatchRequests) != 2 || body.BatchRequests[0].BatchRequestID != "prompts-0-5" ||
		string(body.BatchRequests[0].BatchRequest["chat_get_completion"]) != string(reqs[0].Body) {
		t.Fatalf("add body %s", got[0].body)
	}

	// An endpoint the native API does not take fails without a call.
	err := x.Add(context.Background(), "b 1", []Request{{ID: "e", URL: "/v1/embeddings", Body: json.RawMessage(`{}`)}})
	if !errors.Is(err, ErrUnsupportedURL) || len(s.requests()) != 1 {
		t.Fatalf("embeddings add: %v after %d calls", err, len(s.requests()))
	}

	// Chunks stay within the add limit and keep the order; a request
	// that alone does not fit is refused.
	big := json.RawMessage(`"` + strings.Repeat("a", XAIMaxAddBytes/3) + `"`)
	many := []Request{{ID: "1", Body: big}, {ID: "2", Body: big}, {ID: "3", Body: big}, {ID: "4", Body: json.RawMessage(`{}`)}}
	chunks, err := XAIChunks(many)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 2 || len(chunks[0]) != 2 || chunks[1][0].ID != "3" || chunks[1][1].ID != "4" {
		t.Fatalf("chunks: %d", len(chunks))
	}
	if _, err := XAIChunks([]Request{{ID: "x", Body: json.RawMessage(`"` + strings.Repeat("a", XAIMaxAddBytes) + `"`)}}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized request: %v", err)
	}
}

func TestXAIResultsPaging(t *testing.T) {
	s, c := newStub(t)
	s.handle("GET /v1/batches/b-1/results", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		switch r.URL.Query().Get("pagination_token") {
		case "":
			_, _ = io.WriteString(w, `{"results":[
				{"batch_request_id":"r1","batch_result":{"response":{"chat_get_completion":{"id":"c1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"cost_in_usd_ticks":"5000"}}}}},
				{"batch_request_id":"r2","batch_result":{"error":{"code":"invalid_argument","message":"bad model"}}}
			],"pagination_token":"p2"}`)
		case "p2":
			_, _ = io.WriteString(w, `{"results":[{"batch_request_id":"r3","error_message":"Request cancelled by user"}]}`)
		}
	})
	x := NewXAI(c)
	var all []Result
	for page := ""; ; {
		rs, next, err := x.Results(context.Background(), "b-1", page)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rs...)
		if page = next; page == "" {
			break
		}
	}
	if len(all) != 3 {
		t.Fatalf("%d results", len(all))
	}
	if r := all[0]; r.Outcome != Succeeded || r.StatusCode != 200 || r.RequestID != "c1" || r.CostUSDTicks != 5000 || !json.Valid(r.Body) {
		t.Fatalf("r1 = %+v", r)
	}
	if r := all[1]; r.Outcome != Failed || r.Error.Code != "invalid_argument" || r.Error.Message != "bad model" {
		t.Fatalf("r2 = %+v", r)
	}
	if r := all[2]; r.Outcome != Cancelled {
		t.Fatalf("r3 = %+v", r)
	}
	if q := s.requests()[0].query; !strings.Contains(q, "limit=100") {
		t.Fatalf("first page query %q", q)
	}
}

func TestXAIErrorsAreClassifiedAndBounded(t *testing.T) {
	s, c := newStub(t)
	s.handle("GET /v1/batches/slow", func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"code":"rate_limited","error":"too many requests for sk-secret"}`)
	})
	s.handle("GET /v1/batches/huge", func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		_, _ = io.WriteString(w, `{"batch_id":"huge","name":"`)
		chunk := strings.Repeat("a", 1<<10)
		for range 1<<10 + 1 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	s.handle("GET /v1/batches/noid", answer(`{"name":"x"}`))
	x := NewXAI(c)
	x.limit = 1 << 20
	_, err := x.Get(context.Background(), "slow")
	if !api.Retryable(err) || api.RetryAfter(err) != 2*time.Second || strings.Contains(err.Error(), "sk-secret") {
		t.Fatalf("429: %v", err)
	}
	if _, err := x.Get(context.Background(), "huge"); !errors.Is(err, api.ErrMalformed) {
		t.Fatalf("huge answer: %v", err)
	}
	if _, err := x.Get(context.Background(), "noid"); !errors.Is(err, api.ErrMalformed) {
		t.Fatalf("no batch_id: %v", err)
	}
}
