package endpoint_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/record"
)

// responseObject is a response as the Responses API documents it
// (https://platform.openai.com/docs/api-reference/responses/object).
const responseObject = `{"id":"resp_1","object":"response","created_at":1741476542,"status":"completed","model":"grok-4",` +
	`"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello world","annotations":[]}]}],` +
	`"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":0},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":5},"total_tokens":22}}`

// responsesServer answers POST /v1/responses with responseObject, as a
// plain answer or, for "stream": true, as the documented typed events.
func responsesServer(t *testing.T, events func(w io.Writer)) *api.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/responses" {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Stream bool `json:"stream"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &req)
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, responseObject)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		events(w)
	}))
	t.Cleanup(srv.Close)
	c, err := api.New(api.Config{BaseURL: srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sse(w io.Writer, typ, data string) {
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", typ, data)
}

// documentedStream sends the events of a streamed response, the last
// carrying the whole response.
func documentedStream(w io.Writer) {
	inProgress := strings.Replace(strings.Replace(responseObject, `"status":"completed"`, `"status":"in_progress"`, 1), `"output":[{`, `"output":[],"x":[{`, 1)
	sse(w, "response.created", `{"type":"response.created","sequence_number":0,"response":`+inProgress+`}`)
	sse(w, "response.in_progress", `{"type":"response.in_progress","sequence_number":1,"response":`+inProgress+`}`)
	sse(w, "response.output_item.added", `{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"message","id":"msg_1","status":"in_progress","role":"assistant","content":[]}}`)
	sse(w, "response.content_part.added", `{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}`)
	sse(w, "response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello"}`)
	fmt.Fprint(w, ": keep-alive\n\n")
	sse(w, "response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" world"}`)
	sse(w, "response.output_text.done", `{"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hello world"}`)
	sse(w, "response.output_item.done", `{"type":"response.output_item.done","sequence_number":7,"output_index":0,"item":{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello world","annotations":[]}]}}`)
	sse(w, "response.completed", `{"type":"response.completed","sequence_number":8,"response":`+responseObject+`}`)
}

func streamResponses(t *testing.T, c *api.Client, body string) (*api.Response, []api.Delta, error) {
	t.Helper()
	ep := endpoint.Responses{}
	b, err := ep.StreamBody([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var deltas []api.Delta
	resp, _, err := c.DoStream(context.Background(), api.Request{Path: ep.Path(), Body: b, Check: ep.Check}, ep.NewAssembler(),
		api.StreamOptions{OnDelta: func(d api.Delta) { deltas = append(deltas, d) }})
	return resp, deltas, err
}

// A streamed Responses call yields the response object a plain call
// returns, usage included, for a string and a message-array input.
func TestResponsesStreamEqualsPlain(t *testing.T) {
	t.Parallel()
	c := responsesServer(t, documentedStream)
	ep := endpoint.Responses{}
	plain, err := c.Do(context.Background(), api.Request{Path: ep.Path(), Body: []byte(`{"model":"grok-4","input":"hi"}`), Check: ep.Check})
	if err != nil || string(plain.Body) != responseObject {
		t.Fatalf("plain: %v %s", err, plain.Body)
	}
	for _, body := range []string{
		`{"model":"grok-4","input":"hi","stream":true}`,
		`{"model":"grok-4","input":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"input_text","text":"hi"}]}]}`,
	} {
		resp, deltas, err := streamResponses(t, c, body)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if string(resp.Body) != responseObject {
			t.Errorf("streamed body\n%s\nwant the plain one\n%s", resp.Body, responseObject)
		}
		var text strings.Builder
		for _, d := range deltas {
			if d.Type == "response.output_text.delta" {
				var e struct{ Delta string }
				_ = json.Unmarshal(d.Data, &e)
				text.WriteString(e.Delta)
			}
			if strings.HasPrefix(d.Type, "response.created") || d.Type == "response.completed" {
				t.Errorf("lifecycle event %s passed on as a delta", d.Type)
			}
		}
		if text.String() != "Hello world" || len(deltas) != 6 {
			t.Errorf("%d deltas with text %q", len(deltas), text.String())
		}
		u, ok := ep.Usage(resp.Body)
		if !ok || u != (endpoint.Usage{Input: 10, Output: 7, Reasoning: 5, Total: 22}) {
			t.Errorf("usage %+v %v", u, ok)
		}
	}
}

func TestResponsesStreamFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		events func(w io.Writer)
		want   error
	}{
		{"truncated", func(w io.Writer) {
			sse(w, "response.output_text.delta", `{"type":"response.output_text.delta","output_index":0,"delta":"Hel"}`)
		}, api.ErrTransport},
		{"error event", func(w io.Writer) {
			sse(w, "error", `{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null}`)
		}, api.ErrTransport},
		{"failed", func(w io.Writer) {
			sse(w, "response.failed", `{"type":"response.failed","response":{"id":"r","object":"response","status":"failed","error":{"code":"server_error","message":"boom"},"output":[]}}`)
		}, api.ErrTransport},
		{"quota in stream", func(w io.Writer) {
			sse(w, "error", `{"type":"error","code":"insufficient_quota","message":"no credits"}`)
		}, api.ErrQuota},
		{"not JSON", func(w io.Writer) { sse(w, "response.output_text.delta", `{"type":`) }, api.ErrMalformed},
		{"completed but failed check", func(w io.Writer) {
			sse(w, "response.completed", `{"type":"response.completed","response":{"object":"response","status":"completed","output":[{"type":"function_call","name":"f","arguments":"{"}]}}`)
		}, api.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := streamResponses(t, responsesServer(t, tc.events), `{"model":"m","input":"hi"}`)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if tc.name == "error event" {
				var se *api.StreamError
				if !errors.As(err, &se) || !se.RateLimited() {
					t.Errorf("err = %v, want a rate-limited StreamError", err)
				}
			}
		})
	}
}

// A provider whose last event leaves the output out still yields the
// items that finished.
func TestResponsesCompletedWithoutOutput(t *testing.T) {
	t.Parallel()
	c := responsesServer(t, func(w io.Writer) {
		sse(w, "response.output_item.done", `{"type":"response.output_item.done","output_index":0,"item":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}}`)
		sse(w, "response.completed", `{"type":"response.completed","response":{"id":"r","object":"response","status":"completed","output":[],"usage":{"input_tokens":1,"output_tokens":1,"total_tokens":2}}}`)
	})
	resp, _, err := streamResponses(t, c, `{"model":"m","input":"hi"}`)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"r","object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":1,"output_tokens":1,"total_tokens":2}}`
	if string(resp.Body) != want {
		t.Errorf("body %s\nwant %s", resp.Body, want)
	}
}

// Each endpoint refuses the bodies it cannot take, naming the member, and
// maps the simple shape to its own members.
func TestEndpointBodies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, value, want string // want: the body, or the error text
		ok               bool
	}{
		{"/v1/responses", `{"model":"m","input":"hi","max_output_tokens":5}`, `{"model":"m","input":"hi","max_output_tokens":5}`, true},
		{"/v1/responses", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"x"}]},{"type":"function_call_output","call_id":"c","output":"{}"}]}`, "", true},
		{"/v1/responses", `{"model":"m"}`, "body.input: required", false},
		{"/v1/responses", `{"model":"m","input":[]}`, "body.input: must not be empty", false},
		{"/v1/responses", `{"model":"m","input":[{"role":"robot","content":"x"}]}`, `body.input[0].role: unsupported role "robot"`, false},
		{"/v1/responses", `{"model":"m","input":"x","background":true}`, "body.background: must not be true", false},
		{"/v1/responses", `{"model":"m","input":"x","instructions":3}`, "body.instructions: must be a string", false},
		{"/v1/embeddings", `{"model":"e","input":["a","b"],"dimensions":256}`, `{"model":"e","input":["a","b"],"dimensions":256}`, true},
		{"/v1/embeddings", `{"model":"e","input":[[1,2],[3]]}`, "", true},
		{"/v1/embeddings", `{"model":"e","input":""}`, "body.input: must be a non-empty string", false},
		{"/v1/embeddings", `{"model":"e","input":[{}]}`, "body.input[0]: must be a string, got object", false},
		{"/v1/embeddings", `{"model":"e"}`, "body.input: required", false},
		{"/v1/moderations", `{"input":"x"}`, `{"input":"x"}`, true},
		{"/v1/moderations", `{"input":3}`, "body.input: must be a string or an array", false},
		{"/v1/completions", `{"model":"m","prompt":"x"}`, `{"model":"m","prompt":"x"}`, true},
		{"/v1/completions", `{"model":"m","prompt":"x","stream":true}`, "body.stream: must not be true", false},
		{"/v1/completions", `{"model":"m"}`, "body.prompt: required", false},
	} {
		value := `{"custom_id":"c","method":"POST","url":"` + tc.url + `","body":` + tc.value + `}`
		req, err := record.Parse([]byte(value), record.Options{DefaultModel: "d"})
		if !tc.ok {
			if !errors.Is(err, record.ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %s: err %v, want %q", tc.url, tc.value, err, tc.want)
			}
			continue
		}
		if err != nil || req.URL != tc.url || (tc.want != "" && string(req.Body) != tc.want) {
			t.Errorf("%s %s: %v, url %s, body %s", tc.url, tc.value, err, req.URL, req.Body)
		}
	}
	for _, tc := range []struct{ endpoint, want string }{
		{"/v1/chat/completions", `{"model":"d","messages":[{"role":"system","content":"s"},{"role":"user","content":"p"}],"max_tokens":3}`},
		{"/v1/responses", `{"model":"d","instructions":"s","input":"p","max_tokens":3}`},
	} {
		req, err := record.Parse([]byte(`{"prompt":"p","system":"s","max_tokens":3}`), record.Options{DefaultModel: "d", Endpoint: tc.endpoint})
		if err != nil || string(req.Body) != tc.want || req.URL != tc.endpoint || req.Shape != record.ShapeSimple {
			t.Errorf("simple to %s: %v %+v %s", tc.endpoint, err, req, req.Body)
		}
	}
	for _, url := range []string{"/v1/embeddings", "/v1/moderations"} {
		req, err := record.Parse([]byte(`{"prompt":"p","model":"e"}`), record.Options{Endpoint: url})
		if err != nil || string(req.Body) != `{"input":"p","model":"e"}` {
			t.Errorf("simple to %s: %v %s", url, err, req.Body)
		}
		if _, err := record.Parse([]byte(`{"prompt":"p","system":"s","model":"e"}`), record.Options{Endpoint: url}); !errors.Is(err, record.ErrInvalidInput) {
			t.Errorf("simple with system to %s: %v, want invalid", url, err)
		}
	}
}

// Token accounting with and without usage.
func TestEstimatesAndUsage(t *testing.T) {
	t.Parallel()
	r := endpoint.Responses{}
	if e := r.Estimate([]byte(`{"input":"12345678","instructions":"abcd","max_output_tokens":100}`)); e != (endpoint.Estimate{Input: 3, Reserved: 100, Choices: 1}) {
		t.Errorf("responses estimate %+v", e)
	}
	if _, ok := r.Usage([]byte(`{"object":"response","output":[]}`)); ok {
		t.Error("responses usage without usage")
	}
	e := endpoint.Embeddings{}
	if est := e.Estimate([]byte(`{"input":["12345678","abcd",[1,2]]}`)); est != (endpoint.Estimate{Input: 5, Choices: 1, NoOutput: true}) {
		t.Errorf("embeddings estimate %+v", est)
	}
	if u, ok := e.Usage([]byte(`{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}`)); !ok || u != (endpoint.Usage{Input: 8, Total: 8}) {
		t.Errorf("embeddings usage %+v", u)
	}
	if _, ok := e.Usage([]byte(`{"object":"list","data":[]}`)); ok {
		t.Error("embeddings usage without usage")
	}
	if err := e.Check([]byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"e","usage":{"prompt_tokens":1,"total_tokens":1}}`)); err != nil {
		t.Errorf("embeddings check: %v", err)
	}
	for _, bad := range []string{`{"object":"list","data":[]}`, `{"data":[{"index":0}]}`, `{"error":{"code":"x"}}`} {
		if err := e.Check([]byte(bad)); !errors.Is(err, api.ErrMalformed) {
			t.Errorf("embeddings check %s: %v", bad, err)
		}
	}
	for _, bad := range []string{`{"object":"response","status":"in_progress","output":[]}`, `{"object":"chat.completion","choices":[]}`, `{"object":"response","status":"completed","output":[]}`} {
		if err := r.Check([]byte(bad)); !errors.Is(err, api.ErrMalformed) {
			t.Errorf("responses check %s: %v", bad, err)
		}
	}
}
