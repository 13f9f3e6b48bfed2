package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/mockapi"
)

// startMock serves a mockapi simulator and returns a client of it.
func startMock(t *testing.T, cfg mockapi.Config) *api.Client {
	t.Helper()
	mock := mockapi.New(cfg)
	srv := httptest.NewServer(mock)
	t.Cleanup(func() {
		mock.Close() // first: releases stalled streams
		srv.Close()
	})
	return newClient(t, srv.URL+"/v1")
}

// completion is the part of a chat.completion the tests compare.
type completion struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index   int `json:"index"`
		Message struct {
			Role             string     `json:"role"`
			Content          *string    `json:"content"`
			ReasoningContent string     `json:"reasoning_content"`
			ToolCalls        []toolCall `json:"tool_calls"`
			Refusal          *string    `json:"refusal"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage map[string]any `json:"usage"`
}

type toolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

func parseCompletion(t *testing.T, b []byte) completion {
	t.Helper()
	var c completion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("body is not a chat.completion: %v: %s", err, b)
	}
	return c
}

// chunkRecorder collects what OnDelta receives.
type chunkRecorder struct {
	mu     sync.Mutex
	deltas []api.Delta
}

func (r *chunkRecorder) on(d api.Delta) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deltas = append(r.deltas, d)
}

func (r *chunkRecorder) all() []api.Delta {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.Delta(nil), r.deltas...)
}

// deltaText is the content and reasoning a chat delta carries.
func deltaText(t *testing.T, d api.Delta) (content, reasoning string) {
	t.Helper()
	var v struct {
		Content          string `json:"content"`
		ReasoningContent string `json:"reasoning_content"`
	}
	if err := json.Unmarshal(d.Data, &v); err != nil {
		t.Errorf("delta %d: Data %q is not a JSON object: %v", d.Seq, d.Data, err)
	}
	return v.Content, v.ReasoningContent
}

// chatBody is a request body for the mock.
func chatBody(model, user string, extra string) []byte {
	return []byte(`{"model":"` + model + `","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"` + user + `"}]` + extra + `}`)
}

func TestDoStreamMatchesDo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       mockapi.Config
		body      []byte
		reasoning bool
	}{
		{"plain", mockapi.Config{}, chatBody("grok-3-mini", "What is Kafka?", ""), false},
		{"reasoning model", mockapi.Config{}, chatBody("grok-4", "Why is the sky blue?", ""), true},
		{"n=3", mockapi.Config{}, chatBody("grok-4", "Three answers please", `,"n":3`), true},
		{"max_tokens truncates", mockapi.Config{}, chatBody("grok-3-mini", "Say a lot", `,"max_tokens":5`), false},
		{"html in the prompt", mockapi.Config{}, chatBody("grok-3-mini", "<b>bold</b> & co", ""), false},
		{"paced with keep-alives", mockapi.Config{TTFT: 30 * time.Millisecond, TokensPerSecond: 2000, KeepAlive: 5 * time.Millisecond},
			chatBody("grok-4", "Slowly", ""), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Seed = 1
			c := startMock(t, tc.cfg)
			ctx := context.Background()

			plain, err := c.Do(ctx, chatReq(tc.body))
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			var rec chunkRecorder
			streamed, st, err := doStream(c, ctx, tc.body, api.StreamOptions{IdleTimeout: 5 * time.Second, OnDelta: rec.on})
			if err != nil {
				t.Fatalf("DoStream: %v", err)
			}
			if streamed.StatusCode != 200 || streamed.JSONBody() == nil || !strings.HasPrefix(streamed.RequestID, "req_") {
				t.Fatalf("DoStream answer: status %d, request id %q, body %s", streamed.StatusCode, streamed.RequestID, streamed.Body)
			}
			want, got := parseCompletion(t, plain.Body), parseCompletion(t, streamed.Body)
			if got.Object != "chat.completion" || !strings.HasPrefix(got.ID, "chatcmpl-") {
				t.Errorf("assembled envelope: object %q id %q", got.Object, got.ID)
			}
			if got.Model != want.Model || got.SystemFingerprint != want.SystemFingerprint {
				t.Errorf("model, fingerprint = %q, %q; Do said %q, %q", got.Model, got.SystemFingerprint, want.Model, want.SystemFingerprint)
			}
			// Message, finish reason and usage must be what Do returned.
			if !reflect.DeepEqual(got.Choices, want.Choices) {
				t.Errorf("choices differ:\nstreamed %s\nplain    %s", streamed.Body, plain.Body)
			}
			if !reflect.DeepEqual(got.Usage, want.Usage) {
				t.Errorf("usage = %v, Do said %v", got.Usage, want.Usage)
			}
			if tc.reasoning {
				if got.Choices[0].Message.ReasoningContent == "" {
					t.Error("no reasoning_content in the assembled answer")
				}
				d, _ := got.Usage["completion_tokens_details"].(map[string]any)
				if r, _ := d["reasoning_tokens"].(float64); r <= 0 {
					t.Errorf("usage.completion_tokens_details.reasoning_tokens = %v, want > 0", d["reasoning_tokens"])
				}
			}

			// OnDelta saw every delta in order: concatenating them gives
			// the answer back.
			deltas := rec.all()
			if len(deltas) != st.Deltas || st.Deltas < 3 {
				t.Fatalf("OnDelta called %d times, stats say %d deltas", len(deltas), st.Deltas)
			}
			content, reasoning := map[int]string{}, map[int]string{}
			for i, d := range deltas {
				if d.Seq != i {
					t.Errorf("delta %d has Seq %d", i, d.Seq)
				}
				c, r := deltaText(t, d)
				content[d.Index] += c
				reasoning[d.Index] += r
			}
			for _, ch := range want.Choices {
				if content[ch.Index] != *ch.Message.Content || reasoning[ch.Index] != ch.Message.ReasoningContent {
					t.Errorf("choice %d: deltas concatenate to %q / %q, want %q / %q", ch.Index,
						content[ch.Index], reasoning[ch.Index], *ch.Message.Content, ch.Message.ReasoningContent)
				}
			}
			if st.TTFT <= 0 || st.TTFT < tc.cfg.TTFT {
				t.Errorf("TTFT = %s, want > 0 and >= the mock's %s", st.TTFT, tc.cfg.TTFT)
			}
		})
	}
}

// sent is a request a test server received.
type sent struct {
	accept, auth string
	body         map[string]any
	raw          []byte // the body as received
}

// sseServer answers every request with the raw SSE text of events, each
// written and flushed on its own, and reports the requests it received.
func sseServer(t *testing.T, events ...string) (*httptest.Server, <-chan sent) {
	t.Helper()
	reqs := make(chan sent, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s sent
		s.accept, s.auth = r.Header.Get("Accept"), r.Header.Get("Authorization")
		s.raw, _ = io.ReadAll(r.Body)
		_ = json.Unmarshal(s.raw, &s.body)
		select {
		case reqs <- s:
		default:
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("x-request-id", "req-sse")
		rc := http.NewResponseController(w)
		for _, e := range events {
			_, _ = io.WriteString(w, e)
			_ = rc.Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

// chunk returns the data of a chat.completion.chunk event with choices.
func chunk(choices string) string {
	return `{"id":"chatcmpl-hand","object":"chat.completion.chunk","created":1700000000,"model":"grok-test","system_fingerprint":"fp_1","choices":[` + choices + `]}`
}

func event(data string) string { return "data: " + data + "\n\n" }

const (
	usageData = `{"id":"chatcmpl-hand","object":"chat.completion.chunk","created":1700000000,"model":"grok-test","choices":[],` +
		`"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"completion_tokens_details":{"reasoning_tokens":0,"accepted_prediction_tokens":0}}}`
	doneEvent = "data: [DONE]\n\n"
)

// helloStream is a well-formed stream answering "Hello world".
var helloStream = []string{
	event(chunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`)),
	event(chunk(`{"index":0,"delta":{"content":"Hello"},"finish_reason":null}`)),
	event(chunk(`{"index":0,"delta":{"content":" world"},"finish_reason":null}`)),
	event(chunk(`{"index":0,"delta":{},"finish_reason":"stop"}`)),
	event(usageData),
	doneEvent,
}

func TestDoStreamRequestBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want map[string]any // fields of the sent body besides model and messages
	}{
		{"plain", `{"model":"m","messages":[]}`,
			map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}},
		{"stream false and include_usage false are overridden", `{"model":"m","messages":[],"stream":false,"stream_options":{"include_usage":false}}`,
			map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}},
		{"other stream_options and fields are kept",
			`{"model":"m","messages":[],"temperature":0.2,"seed":12345678901234567890,"tools":[{"type":"function"}],"stream_options":{"include_obfuscation":false},"x":"<b>&"}`,
			map[string]any{"stream": true, "temperature": 0.2, "seed": 12345678901234567890.0, "tools": []any{map[string]any{"type": "function"}},
				"stream_options": map[string]any{"include_usage": true, "include_obfuscation": false}, "x": "<b>&"}},
		{"null stream_options", `{"model":"m","messages":[],"stream_options":null}`,
			map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, reqs := sseServer(t, helloStream...)
			if _, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(tc.body), api.StreamOptions{}); err != nil {
				t.Fatalf("DoStream: %v", err)
			}
			got := <-reqs
			if got.accept != "text/event-stream" || got.auth != "Bearer "+testKey {
				t.Errorf("Accept %q, Authorization %q", got.accept, got.auth)
			}
			delete(got.body, "model")
			delete(got.body, "messages")
			if !reflect.DeepEqual(got.body, tc.want) {
				t.Errorf("server got %v, want %v", got.body, tc.want)
			}
		})
	}
	t.Run("not an object", func(t *testing.T) {
		t.Parallel()
		srv, reqs := sseServer(t, helloStream...)
		for _, body := range []string{`[]`, `null`, `not json`, `{"stream_options":[1]}`} {
			resp, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(body), api.StreamOptions{})
			if err == nil || resp != nil || api.Retryable(err) {
				t.Errorf("DoStream(%s) = %v, %v; want a non-retryable error and no answer", body, resp, err)
			}
		}
		select {
		case r := <-reqs:
			t.Errorf("a request was sent: %v", r)
		default:
		}
	})
}

func TestDoStreamFraming(t *testing.T) {
	t.Parallel()
	hello := func(sep string) []string { // helloStream with other line ends
		var out []string
		for _, e := range helloStream {
			out = append(out, strings.ReplaceAll(e, "\n", sep))
		}
		return out
	}
	tests := []struct {
		name   string
		events []string
	}{
		{"LF", helloStream},
		{"CRLF", hello("\r\n")},
		{"CR", hello("\r")},
		{"comments, event, id and retry fields are ignored", []string{
			": connected\n\n",
			"retry: 1000\nevent: message\nid: 1\n" + event(chunk(`{"index":0,"delta":{"role":"assistant","content":"Hello"}}`)),
			": keep-alive\n\n",
			":\n\n",
			"event: ping\n\n",
			"id: 2\n" + event(chunk(`{"index":0,"delta":{"content":" world"},"finish_reason":"stop"}`)),
			event(usageData), doneEvent,
		}},
		{"data without a space, BOM", []string{
			"\uFEFFdata:" + chunk(`{"index":0,"delta":{"role":"assistant","content":"Hello"}}`) + "\n\n",
			"data:" + chunk(`{"index":0,"delta":{"content":" world"},"finish_reason":"stop"}`) + "\n\n",
			event(usageData), "data:[DONE]\n\n",
		}},
		{"multi-line data", []string{
			"data: {\"id\":\"chatcmpl-hand\",\"object\":\"chat.completion.chunk\",\ndata: \"created\":1700000000,\"model\":\"grok-test\",\"system_fingerprint\":\"fp_1\",\n" +
				"data: \"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"}}]}\n\n",
			event(chunk(`{"index":0,"delta":{"content":" world"},"finish_reason":"stop"}`)),
			event(usageData), doneEvent,
		}},
		{"empty keep-alive chunks", []string{
			event(`{"id":"chatcmpl-hand","object":"chat.completion.chunk","created":1700000000,"model":"grok-test","choices":[]}`),
			event(chunk(`{"index":0,"delta":{"role":"assistant","content":"Hello"}}`)),
			event(`{"choices":[],"usage":null}`),
			event(chunk(`{"index":0,"delta":{"content":" world"},"finish_reason":"stop"}`)),
			event(usageData), doneEvent,
		}},
		{"one write split mid-line", []string{
			strings.Join(helloStream, "")[:37], strings.Join(helloStream, "")[37:],
		}},
		{"no blank line after [DONE]", append(append([]string(nil), helloStream[:5]...), "data: [DONE]")},
		{"no [DONE] after every choice finished", helloStream[:5]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := sseServer(t, tc.events...)
			var rec chunkRecorder
			resp, st, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{OnDelta: rec.on})
			if err != nil {
				t.Fatalf("DoStream: %v", err)
			}
			c := parseCompletion(t, resp.Body)
			if len(c.Choices) != 1 || c.Choices[0].Message.Content == nil || *c.Choices[0].Message.Content != "Hello world" ||
				*c.Choices[0].FinishReason != "stop" || c.Choices[0].Message.Role != "assistant" {
				t.Errorf("assembled %s", resp.Body)
			}
			if c.ID != "chatcmpl-hand" || c.Model != "grok-test" || c.Usage["total_tokens"] != 11.0 {
				t.Errorf("assembled %s", resp.Body)
			}
			if len(rec.all()) != st.Deltas {
				t.Errorf("OnDelta called %d times, stats say %d", len(rec.all()), st.Deltas)
			}
		})
	}
}

func TestDoStreamAssemblesEverything(t *testing.T) {
	t.Parallel()
	srv, _ := sseServer(t,
		event(chunk(`{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}},`+
			`{"index":1,"delta":{"role":"assistant","content":""}}`)),
		event(chunk(`{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}`)),
		event(chunk(`{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]}}`)),
		event(chunk(`{"index":1,"delta":{"reasoning_content":"The user wants"}}`)),
		event(chunk(`{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}`)),
		event(chunk(`{"index":1,"delta":{"reasoning_content":" a refusal."}}`)),
		event(chunk(`{"index":1,"delta":{"refusal":"I can't"},"logprobs":{"content":null,"refusal":[{"token":"I","logprob":-0.1}]}}`)),
		event(chunk(`{"index":1,"delta":{"refusal":" help."},"logprobs":{"content":null,"refusal":[{"token":" help.","logprob":-0.2}]}}`)),
		event(chunk(`{"index":0,"delta":{},"finish_reason":"tool_calls"}`)),
		event(chunk(`{"index":1,"delta":{},"finish_reason":"stop"}`)),
		event(usageData),
		doneEvent,
	)
	var rec chunkRecorder
	resp, st, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{OnDelta: rec.on})
	if err != nil {
		t.Fatalf("DoStream: %v", err)
	}
	c := parseCompletion(t, resp.Body)
	if len(c.Choices) != 2 {
		t.Fatalf("assembled %s", resp.Body)
	}
	m0, m1 := c.Choices[0].Message, c.Choices[1].Message
	if m0.Content != nil || *c.Choices[0].FinishReason != "tool_calls" || m0.Refusal != nil {
		t.Errorf("choice 0: %s", resp.Body)
	}
	var want [2]toolCall
	want[0].ID, want[0].Type, want[0].Function.Name, want[0].Function.Arguments = "call_a", "function", "get_weather", `{"city":"Paris"}`
	want[1].ID, want[1].Type, want[1].Function.Name, want[1].Function.Arguments = "call_b", "function", "get_time", `{}`
	if !reflect.DeepEqual(m0.ToolCalls, want[:]) {
		t.Errorf("tool_calls = %+v, want %+v", m0.ToolCalls, want)
	}
	if m1.Content == nil || *m1.Content != "" || m1.ReasoningContent != "The user wants a refusal." ||
		m1.Refusal == nil || *m1.Refusal != "I can't help." || *c.Choices[1].FinishReason != "stop" || m1.ToolCalls != nil {
		t.Errorf("choice 1: %s", resp.Body)
	}
	var lp struct {
		Choices []struct {
			Logprobs *struct {
				Content []any `json:"content"`
				Refusal []struct {
					Token string `json:"token"`
				} `json:"refusal"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	_ = json.Unmarshal(resp.Body, &lp)
	if lp.Choices[0].Logprobs != nil || lp.Choices[1].Logprobs == nil || len(lp.Choices[1].Logprobs.Refusal) != 2 ||
		lp.Choices[1].Logprobs.Refusal[1].Token != " help." {
		t.Errorf("logprobs: %s", resp.Body)
	}

	// The fragments reached OnDelta as they came, with their raw delta:
	// one a choice of a chunk (the usage chunk has none).
	deltas := rec.all()
	if len(deltas) != 11 || st.Deltas != 11 {
		t.Fatalf("%d deltas, stats %d; want 11", len(deltas), st.Deltas)
	}
	if d := deltas[0]; d.Index != 0 || !d.Token || deltas[1].Index != 1 || deltas[1].Token ||
		!bytes.Contains(d.Data, []byte(`"name":"get_weather"`)) {
		t.Errorf("deltas 0, 1 = %+v, %+v", d, deltas[1])
	}
	if d := deltas[2]; string(d.Data) != `{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}` || !d.Token {
		t.Errorf("delta 2 = %+v (data %s)", d, d.Data)
	}
	if d := deltas[9]; d.FinishReason != "tool_calls" || string(d.Data) != `{}` || d.Token {
		t.Errorf("delta 9 = %+v", d)
	}
	if !bytes.Contains(resp.Body, []byte(`"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"completion_tokens_details":{"reasoning_tokens":0,"accepted_prediction_tokens":0}}`)) {
		t.Errorf("usage not verbatim: %s", resp.Body)
	}
}

func TestDoStreamAfterDone(t *testing.T) {
	t.Parallel()
	t.Run("the connection is reused", func(t *testing.T) {
		t.Parallel()
		srv, _ := sseServer(t, helloStream...)
		c := newClient(t, srv.URL)
		var reused []bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) },
		})
		for range 2 {
			if _, _, err := doStream(c, ctx, []byte(`{}`), api.StreamOptions{IdleTimeout: time.Second}); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(reused, []bool{false, true}) {
			t.Errorf("connections reused: %v, want [false true]", reused)
		}
	})
	t.Run("a server that keeps the body open", func(t *testing.T) {
		t.Parallel()
		rel := release(t)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, strings.Join(helloStream, ""))
			_ = http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-rel:
			}
		}))
		t.Cleanup(srv.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, _, err := doStream(newClient(t, srv.URL), ctx, []byte(`{}`), api.StreamOptions{IdleTimeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("DoStream: %v", err)
		}
		if c := parseCompletion(t, resp.Body); *c.Choices[0].Message.Content != "Hello world" {
			t.Errorf("assembled %s", resp.Body)
		}
	})
}

func TestDoStreamToolCallsWithoutIndex(t *testing.T) {
	t.Parallel()
	// Some OpenAI-compatible servers send whole tool calls without index.
	srv, _ := sseServer(t,
		event(chunk(`{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}}`)),
		event(chunk(`{"index":0,"delta":{"tool_calls":[{"id":"b","type":"function","function":{"name":"g","arguments":"{"}}]}}`)),
		event(chunk(`{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"}"}}]},"finish_reason":"tool_calls"}`)),
		doneEvent,
	)
	resp, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tc := parseCompletion(t, resp.Body).Choices[0].Message.ToolCalls
	if len(tc) != 2 || tc[0].ID != "a" || tc[0].Function.Arguments != `{"x":1}` || tc[1].ID != "b" || tc[1].Function.Arguments != `{}` {
		t.Errorf("tool_calls = %+v", tc)
	}
}

func TestDoStreamSlowButAlive(t *testing.T) {
	t.Parallel()
	// 200 tokens at 100 tokens/s in deltas of 3 tokens: a chunk every
	// ~30ms, 2s in all, three times the idle timeout, which is twenty
	// times the gap between chunks (a loaded CI machine can delay one).
	const idle = 600 * time.Millisecond
	c := startMock(t, mockapi.Config{TTFT: 50 * time.Millisecond, TokensPerSecond: 100, CompletionTokens: 200})
	start := time.Now()
	resp, st, err := doStream(c, context.Background(), chatBody("grok-3-mini", "Take your time", ""), api.StreamOptions{IdleTimeout: idle})
	if err != nil {
		t.Fatalf("DoStream: %v", err)
	}
	if took := time.Since(start); took < 3*idle {
		t.Errorf("the stream took %s; the test needs it to outlast the idle timeout %s several times", took, idle)
	}
	if got := parseCompletion(t, resp.Body); *got.Choices[0].FinishReason != "stop" {
		t.Errorf("assembled %s", resp.Body)
	}
	if st.TTFT < 50*time.Millisecond {
		t.Errorf("TTFT = %s, want >= the mock's 50ms", st.TTFT)
	}
}

func TestDoStreamOnChunkTimeIsNotIdle(t *testing.T) {
	t.Parallel()
	const idle = 50 * time.Millisecond
	proceed := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, helloStream[0])
		_ = rc.Flush()
		select { // the rest only once the client's OnChunk has returned
		case <-proceed:
		case <-r.Context().Done():
			return
		}
		for _, e := range helloStream[1:] {
			_, _ = io.WriteString(w, e)
		}
	}))
	t.Cleanup(srv.Close)
	first := true
	_, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{
		IdleTimeout: idle,
		OnDelta: func(api.Delta) {
			if first {
				first = false
				time.Sleep(4 * idle) // a slow consumer, not a stalled server
				close(proceed)
			}
		},
	})
	if err != nil {
		t.Fatalf("DoStream with a slow OnChunk: %v", err)
	}
}

func TestDoStreamStall(t *testing.T) {
	t.Parallel()
	const idle = 150 * time.Millisecond
	stallAfter := func(events ...string) func(t *testing.T) *api.Client {
		return func(t *testing.T) *api.Client {
			rel := release(t)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				rc := http.NewResponseController(w)
				_ = rc.Flush()
				for _, e := range events {
					_, _ = io.WriteString(w, e)
					_ = rc.Flush()
				}
				select {
				case <-r.Context().Done():
				case <-rel:
				}
			}))
			t.Cleanup(srv.Close)
			return newClient(t, srv.URL)
		}
	}
	tests := []struct {
		name       string
		client     func(t *testing.T) *api.Client
		wantChunks bool
	}{
		{"mock stream stall", func(t *testing.T) *api.Client {
			return startMock(t, mockapi.Config{StreamStallProb: 1})
		}, true},
		{"mid-stream", stallAfter(helloStream[:2]...), true},
		{"before the first chunk", stallAfter(), false},
		{"comments are not chunks", func(t *testing.T) *api.Client {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				rc := http.NewResponseController(w)
				_, _ = io.WriteString(w, helloStream[0])
				_ = rc.Flush()
				tick := time.NewTicker(idle / 5)
				defer tick.Stop()
				for {
					select {
					case <-r.Context().Done():
						return
					case <-tick.C:
						_, _ = io.WriteString(w, ": keep-alive\n\n")
						_ = rc.Flush()
					}
				}
			}))
			t.Cleanup(srv.Close)
			return newClient(t, srv.URL)
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.client(t)
			var rec chunkRecorder
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			resp, st, err := doStream(c, ctx, chatBody("grok-3-mini", "Stall please", ""), api.StreamOptions{IdleTimeout: idle, OnDelta: rec.on})
			took := time.Since(start)
			if !errors.Is(err, api.ErrStreamIdle) || !errors.Is(err, api.ErrTimeout) || !api.Retryable(err) {
				t.Fatalf("DoStream error = %v, want a retryable ErrStreamIdle", err)
			}
			if took < idle { // no upper bound: a loaded machine stretches it
				t.Errorf("the stall was detected after %s, before the idle timeout %s", took, idle)
			}
			if resp == nil || resp.StatusCode != 200 || resp.Body != nil {
				t.Errorf("answer = %+v, want status 200 without a body", resp)
			}
			if got := len(rec.all()) > 0; got != tc.wantChunks || st.Deltas != len(rec.all()) {
				t.Errorf("%d chunks before the stall (stats %d)", len(rec.all()), st.Deltas)
			}
		})
	}
}

func TestDoStreamTotalDeadline(t *testing.T) {
	t.Parallel()
	// Without an idle timeout the call's deadline ends a stall: ErrTimeout,
	// not ErrStreamIdle.
	c := startMock(t, mockapi.Config{StreamStallProb: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := doStream(c, ctx, chatBody("grok-3-mini", "Stall please", ""), api.StreamOptions{})
	if !errors.Is(err, api.ErrTimeout) || errors.Is(err, api.ErrStreamIdle) || !api.Retryable(err) {
		t.Fatalf("DoStream error = %v, want ErrTimeout", err)
	}
}

func TestDoStreamErrorEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		data      string
		retryable bool
		quota     bool
		msg       string
	}{
		{"server error", `{"error":{"message":"upstream failed for ` + testKey + `","type":"server_error","code":"internal_error"}}`, true, false,
			"api: error event in stream (internal_error): upstream failed for [redacted]"},
		{"quota", `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`, false, true,
			"api: error event in stream (insufficient_quota): You exceeded your current quota"},
		{"string error", `{"error":"overloaded"}`, true, false, "api: error event in stream: overloaded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := sseServer(t, helloStream[0], helloStream[1], "event: error\n"+event(tc.data), helloStream[2])
			resp, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{})
			var se *api.StreamError
			if !errors.As(err, &se) {
				t.Fatalf("DoStream error = %v, want a *StreamError", err)
			}
			if err.Error() != tc.msg || api.Retryable(err) != tc.retryable || errors.Is(err, api.ErrQuota) != tc.quota {
				t.Errorf("error %q retryable=%v quota=%v; want %q %v %v", err, api.Retryable(err), errors.Is(err, api.ErrQuota), tc.msg, tc.retryable, tc.quota)
			}
			if resp == nil || resp.RequestID != "req-sse" || se.Response != resp {
				t.Errorf("answer = %+v, StreamError.Response = %+v", resp, se.Response)
			}
		})
	}
}

func TestDoStreamBrokenStreams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		events []string
		want   error
	}{
		{"ends before finish_reason and [DONE]", helloStream[:3], api.ErrTransport},
		{"ends before one of two choices finished", []string{
			event(chunk(`{"index":0,"delta":{"content":"a"},"finish_reason":"stop"},{"index":1,"delta":{"content":"b"}}`)),
		}, api.ErrTransport},
		{"ends cut in the middle of an event", []string{helloStream[0], helloStream[1][:40]}, api.ErrTransport},
		{"nothing but [DONE]", []string{doneEvent}, api.ErrMalformed},
		{"empty body", nil, api.ErrTransport},
		{"chunk is not JSON", []string{helloStream[0], event(`{"choices":[{"index":0,"delta":{"content":"x"`), doneEvent}, api.ErrMalformed},
		{"delta is not an object", []string{event(chunk(`{"index":0,"delta":"x"}`)), doneEvent}, api.ErrMalformed},
		{"negative index", []string{event(chunk(`{"index":-1,"delta":{"content":"x"}}`)), doneEvent}, api.ErrMalformed},
		{"line over MaxEventBytes", []string{"data: " + strings.Repeat("x", api.MaxEventBytes+1) + "\n\n", doneEvent}, api.ErrMalformed},
		{"event over MaxEventBytes", []string{strings.Repeat("data: "+strings.Repeat("x", 1<<20)+"\n", 5) + "\n", doneEvent}, api.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := sseServer(t, tc.events...)
			resp, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{})
			if !errors.Is(err, tc.want) || !api.Retryable(err) {
				t.Fatalf("DoStream error = %v, want a retryable %v", err, tc.want)
			}
			if resp == nil || resp.StatusCode != 200 || resp.Body != nil {
				t.Errorf("answer = %+v, want status 200 without a body", resp)
			}
		})
	}
	t.Run("connection aborted", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, helloStream[0])
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}))
		t.Cleanup(srv.Close)
		_, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{})
		if !errors.Is(err, api.ErrTransport) || !api.Retryable(err) {
			t.Fatalf("DoStream error = %v, want ErrTransport", err)
		}
	})
}

func TestDoStreamNon2xxLikeDo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		header map[string]string
		body   string
	}{
		{"429 with Retry-After and the key echoed", 429, map[string]string{"Retry-After": "2"},
			`{"error":{"message":"Rate limit for key ` + testKey + `","type":"requests","code":"rate_limit_exceeded"}}`},
		{"429 quota", 429, nil, `{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}`},
		{"503 retry-after-ms", 503, map[string]string{"retry-after-ms": "750"}, `{"error":{"message":"busy","type":"server_error"}}`},
		{"400", 400, nil, `{"error":{"message":"bad","type":"invalid_request_error","code":null}}`},
		{"401 html", 401, nil, `<html>nope</html>`},
		{"200 JSON: a server that does not stream", 200, map[string]string{"Content-Type": "application/json; charset=utf-8"},
			`{"id":"chatcmpl-1", "object":"chat.completion","choices":[]}`},
		{"200 JSON that is not JSON", 200, map[string]string{"Content-Type": "application/json"}, `{"id":`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("x-request-id", "req-err")
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			c := newClient(t, srv.URL)
			want, wantErr := c.Do(context.Background(), chatReq([]byte(`{}`)))
			got, st, gotErr := doStream(c, context.Background(), []byte(`{}`), api.StreamOptions{IdleTimeout: time.Second})
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || reflect.TypeOf(gotErr) != reflect.TypeOf(wantErr) {
				t.Errorf("DoStream error = %v (%T), Do's = %v (%T)", gotErr, gotErr, wantErr, wantErr)
			}
			if strings.Contains(fmt.Sprint(gotErr), testKey) {
				t.Errorf("the error carries the key: %v", gotErr)
			}
			if api.Retryable(gotErr) != api.Retryable(wantErr) || api.RetryAfter(gotErr) != api.RetryAfter(wantErr) ||
				errors.Is(gotErr, api.ErrQuota) != errors.Is(wantErr, api.ErrQuota) {
				t.Errorf("DoStream: retryable %v after %s quota %v; Do: %v %s %v", api.Retryable(gotErr), api.RetryAfter(gotErr),
					errors.Is(gotErr, api.ErrQuota), api.Retryable(wantErr), api.RetryAfter(wantErr), errors.Is(wantErr, api.ErrQuota))
			}
			if got.StatusCode != want.StatusCode || string(got.Body) != string(want.Body) || got.RequestID != want.RequestID {
				t.Errorf("DoStream answer %d %q %q, Do's %d %q %q", got.StatusCode, got.RequestID, got.Body, want.StatusCode, want.RequestID, want.Body)
			}
			if st.Deltas != 0 || st.TTFT != 0 {
				t.Errorf("stats = %+v, want none", st)
			}
		})
	}
}

// memTransport answers every request with a fixed event stream, in memory.
type memTransport []byte

func (m memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	return &http.Response{
		StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"text/event-stream"}},
		Body:    io.NopCloser(bytes.NewReader(m)),
		Request: r,
	}, nil
}

// FuzzDoStream feeds arbitrary bytes as the event stream: DoStream must not
// panic, must fail only with a classified error, and must assemble a JSON
// chat.completion when it succeeds.
func FuzzDoStream(f *testing.F) {
	f.Add([]byte(strings.Join(helloStream, "")))
	f.Add([]byte(strings.ReplaceAll(strings.Join(helloStream, ""), "\n", "\r\n")))
	f.Add([]byte("data: " + chunk(`{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls","logprobs":{"content":[{"t":1}]}}`) + "\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"error\":{\"message\":\"x\"}}\n\n"))
	f.Add([]byte(": hi\r\rdata:{}\r\r"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		c, err := api.New(api.Config{BaseURL: "http://fuzz.invalid/v1", HTTPClient: &http.Client{Transport: memTransport(stream)}})
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := doStream(c, context.Background(), []byte(`{"model":"m"}`), api.StreamOptions{OnDelta: func(api.Delta) {}})
		if err != nil {
			if !api.Retryable(err) && !errors.Is(err, api.ErrQuota) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		var c2 struct {
			Object  string            `json:"object"`
			Choices []json.RawMessage `json:"choices"`
		}
		if err := json.Unmarshal(resp.Body, &c2); err != nil || c2.Object != "chat.completion" || len(c2.Choices) == 0 {
			t.Fatalf("assembled %q (%v)", resp.Body, err)
		}
	})
}

func ExampleClient_DoStream() {
	mock := mockapi.New(mockapi.Config{Seed: 1})
	srv := httptest.NewServer(mock)
	defer srv.Close()
	defer mock.Close()
	c, _ := api.New(api.Config{BaseURL: srv.URL + "/v1"})

	body := []byte(`{"model":"grok-3-mini","messages":[{"role":"user","content":"Hello, stream!"}],"max_tokens":6}`)
	resp, st, err := doStream(c, context.Background(), body, api.StreamOptions{
		IdleTimeout: 10 * time.Second,
		OnDelta: func(d api.Delta) {
			if d.FinishReason != "" {
				fmt.Printf("delta %d: %s finish_reason=%s\n", d.Seq, d.Data, d.FinishReason)
			} else {
				fmt.Printf("delta %d: %s\n", d.Seq, d.Data)
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var out struct {
		Choices []struct {
			Message      struct{ Content string }
			FinishReason string `json:"finish_reason"`
		}
	}
	_ = json.Unmarshal(resp.Body, &out)
	fmt.Println(resp.StatusCode, out.Choices[0].FinishReason, st.Deltas, "deltas")
	fmt.Println(out.Choices[0].Message.Content)
	// Output:
	// delta 0: {"role":"assistant","content":""}
	// delta 1: {"content":"mock answer #dbdab780:"}
	// delta 2: {"content":" Hello, stream! aute"}
	// delta 3: {} finish_reason=length
	// 200 length 4 deltas
	// mock answer #dbdab780: Hello, stream! aute
}
