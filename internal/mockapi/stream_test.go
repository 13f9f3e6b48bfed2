package mockapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// streamResult is a parsed stream: per-choice content and reasoning, finish
// reasons, the usage chunk and keep-alive comments.
type streamResult struct {
	content, reasoning map[int]string
	finish             map[int]string
	usage              *testUsage
	comments           int
	done               bool
}

func parseStream(t *testing.T, evs []sseEvent) streamResult {
	t.Helper()
	res := streamResult{content: map[int]string{}, reasoning: map[int]string{}, finish: map[int]string{}}
	roles := map[int]bool{}
	var id string
	for i, ev := range evs {
		if ev.comment {
			res.comments++
			continue
		}
		if res.done {
			t.Fatalf("event %d after [DONE]: %q", i, ev.data)
		}
		if ev.data == "[DONE]" {
			res.done = true
			continue
		}
		var c testChunk
		if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
			t.Fatalf("event %d: %v: %q", i, err, ev.data)
		}
		if c.Object != "chat.completion.chunk" || !strings.HasPrefix(c.ID, "chatcmpl-") || (id != "" && c.ID != id) {
			t.Fatalf("event %d: bad envelope %+v", i, c)
		}
		id = c.ID
		if c.Usage != nil {
			if len(c.Choices) != 0 {
				t.Fatalf("usage chunk with choices: %q", ev.data)
			}
			res.usage = c.Usage
			continue
		}
		for _, ch := range c.Choices {
			if ch.Delta.Role != "" {
				if roles[ch.Index] || ch.Delta.Role != "assistant" {
					t.Fatalf("event %d: unexpected role delta %q", i, ch.Delta.Role)
				}
				roles[ch.Index] = true
			} else if !roles[ch.Index] {
				t.Fatalf("event %d: delta before the role chunk of choice %d", i, ch.Index)
			}
			if ch.Delta.ReasoningContent != nil {
				if res.content[ch.Index] != "" {
					t.Fatalf("event %d: reasoning after content", i)
				}
				res.reasoning[ch.Index] += *ch.Delta.ReasoningContent
			}
			if ch.Delta.Content != nil {
				res.content[ch.Index] += *ch.Delta.Content
			}
			if ch.FinishReason != nil {
				res.finish[ch.Index] = *ch.FinishReason
			}
		}
	}
	return res
}

func TestStreaming(t *testing.T) {
	for _, mode := range []struct {
		name string
		cfg  Config
	}{
		{"latency spread", Config{Latency: 20 * time.Millisecond}},
		{"ttft with keep-alive", Config{TTFT: 20 * time.Millisecond, KeepAlive: 2 * time.Millisecond}},
	} {
		t.Run(mode.name, func(t *testing.T) { testStreaming(t, mode.cfg) })
	}
}

func testStreaming(t *testing.T, cfg Config) {
	_, srv := startServer(t, cfg)
	tests := []struct {
		name  string
		model string
		extra map[string]any
	}{
		{"plain", "grok-3-mini", nil},
		{"reasoning", "grok-4", nil},
		{"include usage", "grok-4", map[string]any{"stream_options": map[string]any{"include_usage": true}}},
		{"usage off explicitly", "grok-3-mini", map[string]any{"stream_options": map[string]any{"include_usage": false}}},
		{"max_tokens", "grok-3-mini", map[string]any{"max_tokens": 7}},
		{"n=2 with usage", "grok-4", map[string]any{"n": 2, "stream_options": map[string]any{"include_usage": true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plainBody := reqBody(t, tt.model, "Stream me something", tt.extra)
			resp, b := post(context.Background(), t, srv.URL+"/v1/chat/completions", streamVariant(t, plainBody, false), nil)
			if resp.StatusCode != 200 {
				t.Fatalf("non-streamed: %d %s", resp.StatusCode, b)
			}
			want := decodeCompletion(t, b)

			resp, b = post(context.Background(), t, srv.URL+"/v1/chat/completions", streamVariant(t, plainBody, true), nil)
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("streamed: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			evs, err := readSSE(strings.NewReader(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 || evs[len(evs)-1].data != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %v", evs)
			}
			got := parseStream(t, evs)
			if (got.comments > 0) != (cfg.KeepAlive > 0) {
				t.Errorf("%d keep-alive comments with KeepAlive %v and TTFT %v", got.comments, cfg.KeepAlive, cfg.TTFT)
			}
			for i, ch := range want.Choices {
				if got.content[i] != ch.Message.Content {
					t.Errorf("choice %d streamed content %q\nwant %q", i, got.content[i], ch.Message.Content)
				}
				if got.reasoning[i] != ch.Message.ReasoningContent {
					t.Errorf("choice %d streamed reasoning %q, want %q", i, got.reasoning[i], ch.Message.ReasoningContent)
				}
				if got.finish[i] != ch.FinishReason {
					t.Errorf("choice %d finish %q, want %q", i, got.finish[i], ch.FinishReason)
				}
			}
			if len(got.content) != len(want.Choices) {
				t.Errorf("%d streamed choices, want %d", len(got.content), len(want.Choices))
			}
			includeUsage := strings.Contains(plainBody, `"include_usage":true`)
			if includeUsage != (got.usage != nil) {
				t.Fatalf("usage chunk present=%v, want %v", got.usage != nil, includeUsage)
			}
			if got.usage != nil && *got.usage != want.Usage {
				t.Errorf("stream usage %+v, want %+v", *got.usage, want.Usage)
			}
		})
	}
}

// streamVariant sets "stream" in body; stream_options only go with streams.
func streamVariant(t *testing.T, body string, stream bool) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	m["stream"] = stream
	if !stream {
		delete(m, "stream_options")
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// TestStreamTiming runs in a synctest bubble: the simulator's sleeps use
// the bubble's fake clock, so the pacing is checked exactly, with no
// dependence on how loaded the machine is.
func TestStreamTiming(t *testing.T) {
	// 40 tokens at 400 tok/s after a 50 ms TTFT: 150 ms.
	for _, stream := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			mock := New(Config{TTFT: 50 * time.Millisecond, TokensPerSecond: 400, CompletionTokens: 40})
			defer mock.Close()
			start := time.Now()
			rec := recordChat(mock, reqBody(t, "grok-3-mini", "x", map[string]any{"stream": stream}))
			el := time.Since(start)
			if rec.Code != 200 {
				t.Fatalf("stream=%v: %d %s", stream, rec.Code, rec.Body)
			}
			if el != 150*time.Millisecond {
				t.Errorf("stream=%v took %v, want 150ms", stream, el)
			}
		})
	}
}

func TestStreamStallEndsWhenClientGivesUp(t *testing.T) {
	mock, srv := startServer(t, Config{StreamStallProb: 1})
	// The client gives up once it has the chunks sent before the stall:
	// a signal, not a deadline, so a slow machine cannot end the request
	// before the server reached its stall.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(reqBody(t, "grok-3-mini", "x", map[string]any{"stream": true})))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	evs, err := readSSE(&cancelAfterEvents{r: resp.Body, n: 1 + stallAfterPieces, cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read error %v after %d events, want the client's cancellation (the stream ended by itself)", err, len(evs))
	}
	got := parseStream(t, evs)
	if got.done || len(got.finish) != 0 || len(evs) != 1+stallAfterPieces {
		t.Fatalf("stalled stream sent %d events (done=%v finish=%v), want role + %d deltas", len(evs), got.done, got.finish, stallAfterPieces)
	}
	srv.Close() // waits for the handler
	if st := mock.Stats(); st.InFlight != 0 || st.Faults[FaultStreamStall] != 1 || st.CompletionTokens != 0 {
		t.Fatalf("stats after stall %+v", st)
	}
}

// cancelAfterEvents reads r and calls cancel once n complete server-sent
// events have been read: the client giving up after what it waited for.
type cancelAfterEvents struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
	seen   int
	tail   []byte
}

func (c *cancelAfterEvents) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.tail = append(c.tail, p[:n]...)
	for {
		i := bytes.Index(c.tail, []byte("\n\n"))
		if i < 0 {
			break
		}
		c.seen++
		c.tail = c.tail[i+2:]
	}
	if c.seen >= c.n {
		c.cancel()
	}
	return n, err
}

// A malformed stream, chat's or a response's, has exactly one data event
// that does not parse.
func TestStreamMalformed(t *testing.T) {
	_, srv := startServer(t, Config{Malformed: 1})
	for path, body := range map[string]string{
		"/v1/chat/completions": reqBody(t, "grok-3-mini", "x", map[string]any{"stream": true}),
		"/v1/responses":        `{"model":"grok-4","input":"x","stream":true}`,
		"/v1/completions":      `{"model":"grok-4","prompt":"x","stream":true}`,
	} {
		resp, b := post(context.Background(), t, srv.URL+path, body, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		evs, _ := readSSE(strings.NewReader(string(b)))
		bad := 0
		for _, ev := range evs {
			if ev.data != "[DONE]" && !json.Valid([]byte(ev.data)) {
				bad++
			}
		}
		if bad != 1 {
			t.Errorf("%s: %d invalid data events in %q, want 1", path, bad, b)
		}
	}
}
