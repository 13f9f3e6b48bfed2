package processor_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/internal/mockapi"
	"github.com/sluice-dev/sluice/processor"
	"github.com/sluice-dev/sluice/record"
)

// serveMock serves h over HTTP until the test ends and returns a client
// of it; the mocks are closed first, releasing stalled streams.
func serveMock(t *testing.T, h http.Handler, mocks ...*mockapi.Server) *api.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for _, m := range mocks {
		t.Cleanup(m.Close) // LIFO: before srv.Close
	}
	c, err := api.New(api.Config{BaseURL: srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deltaEvent is one call of a DeltaWriter, as recSink saw it.
type deltaEvent struct {
	customID string
	attempt  int
	typ      string
	index    int
	delta    json.RawMessage
	finish   string
	end      bool
	cause    error
}

// recSink is a processor.DeltaSink recording every delta in call order.
type recSink struct {
	mu     sync.Mutex
	events []deltaEvent
}

func (s *recSink) Begin(_ *kgo.Record, customID string, attempt int) processor.DeltaWriter {
	return &recWriter{s: s, customID: customID, attempt: attempt}
}

func (s *recSink) all() []deltaEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]deltaEvent(nil), s.events...)
}

type recWriter struct {
	s        *recSink
	customID string
	attempt  int
	ended    bool
}

func (w *recWriter) add(e deltaEvent) {
	e.customID, e.attempt = w.customID, w.attempt
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.events = append(w.s.events, e)
}

func (w *recWriter) Delta(_ context.Context, d processor.Delta) {
	if w.ended {
		panic("Delta after End")
	}
	w.add(deltaEvent{typ: d.Type, index: d.Index, delta: append(json.RawMessage(nil), d.Data...), finish: d.FinishReason})
}

func (w *recWriter) End(_ context.Context, finish string, cause error) {
	if w.ended {
		panic("End twice")
	}
	w.ended = true
	w.add(deltaEvent{end: true, finish: finish, cause: cause})
}

// streamObs is one Observer.Stream call.
type streamObs struct {
	model string
	ttft  time.Duration
	tps   float64
}

// recObserver is a processor.Observer recording tokens and stream stats.
type recObserver struct {
	mu      sync.Mutex
	tokens  [][3]int
	streams []streamObs
}

func (o *recObserver) APICall(string, int, time.Duration) {}
func (o *recObserver) Retry()                             {}
func (o *recObserver) Tokens(_ string, prompt, completion, reasoning int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tokens = append(o.tokens, [3]int{prompt, completion, reasoning})
}
func (o *recObserver) Stream(model string, ttft time.Duration, tps float64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.streams = append(o.streams, streamObs{model, ttft, tps})
}

// answer is what a chat.completion says, without the per-call id and
// created time: what must not differ between a streamed and a plain call.
type answer struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role             string `json:"role"`
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage map[string]any `json:"usage"`
}

func answerOf(t *testing.T, res *record.Result) answer {
	t.Helper()
	if res.Error != nil || res.Response == nil || res.Response.StatusCode != 200 {
		t.Fatalf("result = %+v (error %+v), want a 200", res, res.Error)
	}
	var a answer
	if err := json.Unmarshal(res.Response.Body, &a); err != nil {
		t.Fatalf("response body %s: %v", res.Response.Body, err)
	}
	if a.Object != "chat.completion" || len(a.Choices) == 0 || a.Usage == nil {
		t.Fatalf("response body %s is not a chat.completion with choices and usage", res.Response.Body)
	}
	return a
}

// fromDeltas rebuilds each choice's content and reasoning from the delta
// objects of one attempt.
func fromDeltas(t *testing.T, events []deltaEvent, attempt int) (content, reasoning map[int]string, finish map[int]string) {
	t.Helper()
	content, reasoning, finish = map[int]string{}, map[int]string{}, map[int]string{}
	for _, e := range events {
		if e.attempt != attempt || e.end {
			continue
		}
		var d struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		}
		if err := json.Unmarshal(e.delta, &d); err != nil {
			t.Fatalf("delta %s: %v", e.delta, err)
		}
		content[e.index] += d.Content
		reasoning[e.index] += d.ReasoningContent
		if e.finish != "" {
			finish[e.index] = e.finish
		}
	}
	return content, reasoning, finish
}

// TestStreamEqualsPlain: for the same request to the same simulator, the
// streamed call's result carries the answer the plain call's does
// (content, reasoning_content, finish_reason, usage), its deltas add up to
// it and end with one End, and the Observer learns TTFT and tokens/s.
func TestStreamEqualsPlain(t *testing.T) {
	t.Parallel()
	const ttft = 40 * time.Millisecond
	tests := []struct {
		name   string
		mock   mockapi.Config
		fields string // extra request members, plain and streamed
		stream string // extra members of the streamed record only
		byCfg  bool   // streamed by Config.Stream rather than the body
	}{
		{name: "chunk gaps", mock: mockapi.Config{TTFT: ttft, TokensPerSecond: 400}, fields: `"model":"grok-3-mini"`, stream: `"stream":true`},
		{name: "keep-alive comments", mock: mockapi.Config{TTFT: ttft, TokensPerSecond: 400, KeepAlive: 5 * time.Millisecond}, fields: `"model":"grok-3-mini"`, stream: `"stream":true`},
		{name: "reasoning", mock: mockapi.Config{TTFT: ttft, TokensPerSecond: 400}, fields: `"model":"grok-4"`, stream: `"stream":true`},
		{name: "include_usage forced", mock: mockapi.Config{TTFT: ttft, TokensPerSecond: 400}, fields: `"model":"grok-4"`, stream: `"stream":true,"stream_options":{"include_usage":false}`},
		{name: "by SLUICE_STREAM", mock: mockapi.Config{TTFT: ttft, TokensPerSecond: 400}, fields: `"model":"grok-4"`, byCfg: true},
		{name: "length", mock: mockapi.Config{TTFT: ttft, TokensPerSecond: 400}, fields: `"model":"grok-4","max_tokens":5`, stream: `"stream":true`},
		{name: "two choices", mock: mockapi.Config{TTFT: ttft, TokensPerSecond: 400}, fields: `"model":"grok-4","n":2`, stream: `"stream":true`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mock := mockapi.New(tc.mock)
			c := serveMock(t, mock, mock)
			messages := `"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"stream test ` + tc.name + `"}]`

			plainObs := &recObserver{}
			plainCfg := baseConfig()
			plainCfg.Observer = plainObs
			plainCfg.Deltas = &recSink{}
			plain := process(t, wire(c, limiter.New(limiter.Config{MaxInFlight: 4}), plainCfg),
				input(`{"custom_id":"q-1",`+tc.fields+`,`+messages+`}`))

			sink, obs := &recSink{}, &recObserver{}
			cfg := baseConfig()
			cfg.Observer, cfg.Deltas, cfg.StreamIdleTimeout, cfg.Stream = obs, sink, 5*time.Second, tc.byCfg
			value := `{"custom_id":"q-1",` + tc.fields + `,` + messages + `}`
			if tc.stream != "" {
				value = `{"custom_id":"q-1",` + tc.fields + `,` + tc.stream + `,` + messages + `}`
			}
			streamed := process(t, wire(c, limiter.New(limiter.Config{MaxInFlight: 4}), cfg), input(value))

			if got := plainCfg.Deltas.(*recSink).all(); len(got) != 0 {
				t.Errorf("plain call wrote %d deltas", len(got))
			}
			want, got := answerOf(t, plain), answerOf(t, streamed)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("streamed answer differs:\n got %+v\nwant %+v", got, want)
			}
			if streamed.Attempts != 1 || streamed.CustomID != "q-1" {
				t.Errorf("streamed result attempts %d custom_id %q", streamed.Attempts, streamed.CustomID)
			}
			if !reflect.DeepEqual(obs.tokens, plainObs.tokens) || len(obs.tokens) != 1 {
				t.Errorf("streamed tokens %v, plain %v: want the same usage reconciled once", obs.tokens, plainObs.tokens)
			}
			if strings.Contains(tc.fields, "grok-4") && got.Choices[0].Message.ReasoningContent == "" {
				t.Error("grok-4 answer without reasoning_content")
			}

			events := sink.all()
			if len(events) < 2 || !events[len(events)-1].end {
				t.Fatalf("deltas %+v: want some, then End", events)
			}
			for i, e := range events {
				if e.attempt != 1 || e.customID != "q-1" || (e.end && i != len(events)-1) {
					t.Errorf("delta %d = %+v: want attempt 1 of q-1, End last", i, e)
				}
			}
			if end := events[len(events)-1]; end.cause != nil || end.finish != want.Choices[0].FinishReason {
				t.Errorf("End(finish %q, cause %v), want (%q, nil)", end.finish, end.cause, want.Choices[0].FinishReason)
			}
			content, reasoning, finish := fromDeltas(t, events, 1)
			for _, ch := range want.Choices {
				if content[ch.Index] != ch.Message.Content || reasoning[ch.Index] != ch.Message.ReasoningContent || finish[ch.Index] != ch.FinishReason {
					t.Errorf("choice %d from deltas = (%q, %q, %q), want (%q, %q, %q)", ch.Index,
						content[ch.Index], reasoning[ch.Index], finish[ch.Index],
						ch.Message.Content, ch.Message.ReasoningContent, ch.FinishReason)
				}
			}

			if len(obs.streams) != 1 {
				t.Fatalf("Observer.Stream calls = %+v, want 1", obs.streams)
			}
			s := obs.streams[0]
			// Lower bounds only: a loaded machine may stretch any timing.
			if s.ttft < ttft || s.tps <= 0 {
				t.Errorf("Stream(%q, ttft %s, %.0f tokens/s): want ttft >= %s and a speed", s.model, s.ttft, s.tps, ttft)
			}
			t.Logf("ttft %s (simulator %s), %.0f tokens/s (simulator %.0f)", s.ttft.Round(time.Millisecond), ttft, s.tps, tc.mock.TokensPerSecond)
		})
	}
}

// TestStreamStallRetried: a stream that stalls mid-answer fails with the
// idle timeout (long before RequestTimeout), is retried as a timeout, and
// the next attempt succeeds. Its deltas restart under attempt 2.
func TestStreamStallRetried(t *testing.T) {
	t.Parallel()
	stalling := mockapi.New(mockapi.Config{StreamStallProb: 1, TTFT: 10 * time.Millisecond})
	healthy := mockapi.New(mockapi.Config{TTFT: 10 * time.Millisecond, TokensPerSecond: 1000})
	var calls atomic.Int64
	c := serveMock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			stalling.ServeHTTP(w, r)
			return
		}
		healthy.ServeHTTP(w, r)
	}), stalling, healthy)

	const idle = 200 * time.Millisecond
	sink := &recSink{}
	cfg := baseConfig()
	// Only the idle timeout can end the stall: without it the first
	// attempt would outlast process's deadline and no second attempt
	// would be made, so the check below needs no bound on the time.
	cfg.RequestTimeout = time.Hour
	cfg.StreamIdleTimeout, cfg.Stream, cfg.Deltas = idle, true, sink
	res := process(t, wire(c, limiter.New(limiter.Config{MaxInFlight: 4}), cfg),
		input(`{"custom_id":"stall","model":"grok-4","messages":[{"role":"user","content":"stall once"}]}`))
	if res.Attempts != 2 || calls.Load() != 2 {
		t.Fatalf("attempts %d, calls %d, want 2 and 2 (error %+v)", res.Attempts, calls.Load(), res.Error)
	}
	got := answerOf(t, res)

	events := sink.all()
	var ends []deltaEvent
	seenAttempt := 0
	for i, e := range events {
		if e.customID != "stall" || e.attempt < seenAttempt {
			t.Fatalf("delta %d = %+v out of order", i, e)
		}
		if e.attempt > seenAttempt && seenAttempt > 0 && !events[i-1].end {
			t.Errorf("attempt %d began before attempt %d ended", e.attempt, seenAttempt)
		}
		seenAttempt = e.attempt
		if e.end {
			ends = append(ends, e)
		}
	}
	if len(ends) != 2 || ends[0].attempt != 1 || ends[1].attempt != 2 || !events[len(events)-1].end {
		t.Fatalf("ends = %+v, want one per attempt (1, 2), last", ends)
	}
	if !errors.Is(ends[0].cause, api.ErrStreamIdle) || ends[0].finish != "" {
		t.Errorf("attempt 1 End(%q, %v), want the idle timeout", ends[0].finish, ends[0].cause)
	}
	if ends[1].cause != nil || ends[1].finish != "stop" {
		t.Errorf("attempt 2 End(%q, %v), want (stop, nil)", ends[1].finish, ends[1].cause)
	}
	partial, partialReasoning, _ := fromDeltas(t, events, 1)
	n1 := 0
	for _, e := range events {
		if e.attempt == 1 && !e.end {
			n1++
		}
	}
	if n1 == 0 {
		t.Error("attempt 1 wrote no delta before it stalled")
	}
	content, reasoning, _ := fromDeltas(t, events, 2)
	if content[0] != got.Choices[0].Message.Content || reasoning[0] != got.Choices[0].Message.ReasoningContent {
		t.Errorf("attempt 2 deltas = %q/%q, want the answer %q/%q", content[0], reasoning[0],
			got.Choices[0].Message.Content, got.Choices[0].Message.ReasoningContent)
	}
	t.Logf("attempt 1: %d deltas (%q%q) before the stall; attempt 2: the whole answer", n1, partialReasoning[0], partial[0])
}

// TestStreamSlowButAliveNotKilled: a stream whose whole answer takes
// several idle timeouts, with every gap shorter than one, is not cut.
func TestStreamSlowButAliveNotKilled(t *testing.T) {
	t.Parallel()
	// 16 tokens of content at 40 tokens/s: 3-token deltas every 75ms,
	// the answer about 400ms; reasoning makes it longer still.
	mock := mockapi.New(mockapi.Config{TokensPerSecond: 40, CompletionTokens: 16})
	c := serveMock(t, mock, mock)
	cfg := baseConfig()
	cfg.Stream, cfg.StreamIdleTimeout = true, 250*time.Millisecond
	obs := &recObserver{}
	cfg.Observer = obs
	res := process(t, wire(c, limiter.New(limiter.Config{MaxInFlight: 4}), cfg),
		input(`{"custom_id":"slow","model":"grok-3-mini","messages":[{"role":"user","content":"slow"}]}`))
	answerOf(t, res)
	if res.Attempts != 1 {
		t.Errorf("attempts = %d, want 1", res.Attempts)
	}
	if len(obs.streams) != 1 || obs.streams[0].tps <= 0 {
		t.Errorf("Observer.Stream calls = %+v, want one with a speed", obs.streams)
	}
	if res.LatencyMS < 250 {
		t.Errorf("latency %dms: the answer was not slower than the idle timeout", res.LatencyMS)
	}
}

// TestStreamIdleTimeoutExhausted: a stream that always stalls ends as a
// timeout after MaxAttempts, each attempt's deltas ending with its error.
func TestStreamIdleTimeoutExhausted(t *testing.T) {
	t.Parallel()
	mock := mockapi.New(mockapi.Config{StreamStallProb: 1})
	c := serveMock(t, mock, mock)
	sink := &recSink{}
	cfg := baseConfig()
	cfg.Stream, cfg.StreamIdleTimeout, cfg.Deltas = true, 50*time.Millisecond, sink
	res := process(t, wire(c, limiter.New(limiter.Config{MaxInFlight: 4}), cfg),
		input(`{"custom_id":"stuck","messages":[{"role":"user","content":"stuck"}]}`))
	wantError(t, res, record.CodeTimeout, cfg.MaxAttempts)
	n := 0
	for _, e := range sink.all() {
		if e.end {
			n++
			if e.attempt != n || !errors.Is(e.cause, api.ErrStreamIdle) {
				t.Errorf("End %d = %+v, want attempt %d with the idle timeout", n, e, n)
			}
		}
	}
	if n != cfg.MaxAttempts {
		t.Errorf("%d ends, want %d", n, cfg.MaxAttempts)
	}
}
