package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/mockapi"
	"github.com/sluice-dev/sluice/record"
)

// tapped serves the simulator and keeps every exchange: the request body
// as it arrived, and the answer's bytes as they left.
type tapped struct {
	mock *mockapi.Server
	mu   sync.Mutex
	seen []exchange
}

type exchange struct {
	path           string
	request, reply []byte
}

// tapWriter copies what the simulator writes; Unwrap keeps Flush working
// for streams.
type tapWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *tapWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *tapWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (t *tapped) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	tw := &tapWriter{ResponseWriter: w}
	t.mock.ServeHTTP(tw, r)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seen = append(t.seen, exchange{r.URL.Path, body, tw.buf.Bytes()})
}

// exchanges returns the exchanges whose request body is body.
func (t *tapped) exchanges(body []byte) []exchange {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []exchange
	for _, e := range t.seen {
		if bytes.Equal(e.request, body) {
			out = append(out, e)
		}
	}
	return out
}

// simulatorStack is a test stack whose API is the simulator, tapped.
func simulatorStack(t *testing.T) (*testStack, *tapped) {
	t.Helper()
	s := newTestStack(t, 2)
	tap := &tapped{mock: mockapi.New(mockapi.Config{Seed: 1})}
	srv := httptest.NewServer(tap)
	t.Cleanup(func() { tap.mock.Close(); srv.Close() })
	s.cfg.API.BaseURL = srv.URL + "/v1"
	return s, tap
}

// completedResponse returns the "response" of the response.completed
// event of a Responses stream, verbatim.
func completedResponse(t *testing.T, stream []byte) json.RawMessage {
	t.Helper()
	for _, line := range strings.Split(string(stream), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		var ev struct {
			Type     string          `json:"type"`
			Response json.RawMessage `json:"response"`
		}
		if ok && json.Unmarshal([]byte(data), &ev) == nil && ev.Type == "response.completed" {
			return ev.Response
		}
	}
	t.Fatalf("no response.completed in %s", stream)
	return nil
}

// withoutIDs decodes a response object, less what differs between two
// calls of the same request: ids and created_at.
func withoutIDs(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	delete(m, "id")
	delete(m, "created_at")
	out, _ := m["output"].([]any)
	for _, it := range out {
		delete(it.(map[string]any), "id")
	}
	return m
}

// Batch lines for /v1/responses (plain, streamed with a string input and
// with a message-array input) and /v1/embeddings reach the simulator byte
// for byte, and their results hold what it answered; a streamed response
// is the response object a plain call returns, usage included.
func TestEndpointsThroughSimulator(t *testing.T) {
	s, tap := simulatorStack(t)
	bodies := map[string]string{
		"responses-plain":         `{"model": "grok-4",  "input": "What is Kafka?", "x_vendor": {"a": [1, 2.50, "<&>"]}}`,
		"responses-stream-string": `{"model": "grok-4",  "input": "What is Kafka?", "x_vendor": {"a": [1, 2.50, "<&>"]}, "stream": true}`,
		"responses-stream-array":  `{"model": "grok-3-mini", "instructions": "Be terse.", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}], "stream": true}`,
		"embeddings":              `{"model": "grok-embed", "input": ["Kafka is a log.", "sluice is a batch engine."], "dimensions": 4}`,
	}
	urls := map[string]string{"embeddings": "/v1/embeddings"}
	var recs []*kgo.Record
	for id, body := range bodies {
		url := urls[id]
		if url == "" {
			url = "/v1/responses"
		}
		recs = append(recs, &kgo.Record{Value: []byte(`{"custom_id": "` + id + `", "method": "POST", "url": "` + url + `", "body": ` + body + `}`)})
	}
	s.produce(t, recs...)
	s.member(t)
	results := decodeResults(t, s.collect(t, "completions", len(recs)))

	for id, body := range bodies {
		r := results[id]
		if r.Error != nil || r.Response == nil || r.Response.StatusCode != 200 {
			t.Fatalf("%s: %+v", id, r)
		}
		ex := tap.exchanges([]byte(body))
		if len(ex) != 1 {
			tap.mu.Lock()
			for _, e := range tap.seen {
				t.Logf("sent %s %s", e.path, e.request)
			}
			tap.mu.Unlock()
			t.Fatalf("%s: %d calls with the body byte for byte, want 1", id, len(ex))
		}
		want := ex[0].reply
		if strings.Contains(id, "stream") {
			want = completedResponse(t, ex[0].reply)
		}
		if !bytes.Equal(r.Response.Body, want) {
			t.Errorf("%s: result body\n%s\nthe API answered\n%s", id, r.Response.Body, want)
		}
	}
	plain := withoutIDs(t, results["responses-plain"].Response.Body)
	streamed := withoutIDs(t, results["responses-stream-string"].Response.Body)
	if plain["usage"] == nil || !reflect.DeepEqual(plain, streamed) {
		t.Errorf("streamed response\n%v\nplain\n%v", streamed, plain)
	}
	var emb struct {
		Data []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(results["embeddings"].Response.Body, &emb); err != nil || len(emb.Data) != 2 || len(emb.Data[1].Embedding) != 4 {
		t.Errorf("embeddings: %s", results["embeddings"].Response.Body)
	}
}

// SLUICE_ENDPOINT=/v1/responses sends simple prompts to /v1/responses, as
// input and instructions.
func TestEndpointSimplePromptsToResponses(t *testing.T) {
	s, tap := simulatorStack(t)
	s.cfg.API.Endpoint = "/v1/responses"
	if err := s.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s.produce(t,
		&kgo.Record{Value: []byte(`{"custom_id":"simple","prompt":"What is Kafka?","system":"Be terse.","max_output_tokens":64}`)},
		&kgo.Record{Value: []byte(`{"custom_id":"bare","model":"grok-3-mini","input":"Hi"}`)},
	)
	s.member(t)
	results := decodeResults(t, s.collect(t, "completions", 2))
	for id, r := range results {
		if r.Error != nil || r.Response == nil || r.Response.StatusCode != 200 {
			t.Fatalf("%s: %+v", id, r)
		}
		var resp struct {
			Object string `json:"object"`
		}
		if err := json.Unmarshal(r.Response.Body, &resp); err != nil || resp.Object != "response" {
			t.Errorf("%s: not a response object: %s", id, r.Response.Body)
		}
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	var simple map[string]json.RawMessage
	for _, e := range tap.seen {
		if e.path != "/v1/responses" {
			t.Errorf("call to %s, want /v1/responses", e.path)
		}
		if bytes.Contains(e.request, []byte("What is Kafka?")) {
			if err := json.Unmarshal(e.request, &simple); err != nil {
				t.Fatal(err)
			}
		}
	}
	if string(simple["input"]) != `"What is Kafka?"` || string(simple["instructions"]) != `"Be terse."` ||
		string(simple["model"]) != `"grok-4"` || string(simple["max_output_tokens"]) != "64" || simple["messages"] != nil {
		t.Errorf("simple prompt sent as %v", simple)
	}
	if r := results["simple"]; r.Error != nil && r.Error.Code == record.CodeUnsupportedURL {
		t.Errorf("simple: %+v", r)
	}
}
