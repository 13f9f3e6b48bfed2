package endpoint_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/internal/mockapi"
)

// sansIDs decodes an answer less what differs between two calls of one
// request: ids and creation times, at the top and in output items; and
// null members, which the APIs' shapes read as absent.
func sansIDs(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	dropNulls(m)
	for _, k := range []string{"id", "created", "created_at"} {
		delete(m, k)
	}
	out, _ := m["output"].([]any)
	for _, it := range out {
		delete(it.(map[string]any), "id")
	}
	return m
}

// Every endpoint against the simulator: a plain answer passes its Check
// and states its usage (moderations have none); a streamed one
// assembles into the answer a plain call returns.
func TestEndpointsAgainstSimulator(t *testing.T) {
	t.Parallel()
	mock := mockapi.New(mockapi.Config{Latency: 0, Seed: 1})
	srv := httptest.NewServer(mock)
	t.Cleanup(func() { mock.Close(); srv.Close() })
	c, err := api.New(api.Config{BaseURL: srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		url, body string
		usage     bool
	}{
		{"/v1/chat/completions", `{"model":"grok-4","messages":[{"role":"user","content":"What is Kafka?"}],"stream_options":{"include_usage":true}}`, true},
		{"/v1/responses", `{"model":"grok-4","input":"What is Kafka?","instructions":"Be terse."}`, true},
		{"/v1/responses", `{"model":"grok-3-mini","input":[{"role":"user","content":[{"type":"input_text","text":"Hi"}]}],"max_output_tokens":5}`, true},
		{"/v1/embeddings", `{"model":"grok-embed","input":["a","b"]}`, true},
		{"/v1/completions", `{"model":"grok-3-mini","prompt":"Once upon a time"}`, true},
		{"/v1/moderations", `{"input":"hello"}`, false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			ep, ok := endpoint.Lookup(tc.url)
			if !ok {
				t.Fatalf("%s not registered", tc.url)
			}
			body := []byte(tc.body)
			if tc.url == "/v1/chat/completions" { // stream_options only with a stream
				body = []byte(`{"model":"grok-4","messages":[{"role":"user","content":"What is Kafka?"}]}`)
			}
			plain, err := c.Do(ctx, api.Request{Path: ep.Path(), Body: body, Check: ep.Check})
			if err != nil {
				t.Fatalf("plain: %v", err)
			}
			u, ok := ep.Usage(plain.Body)
			if ok != tc.usage || (ok && (u.Input == 0 || u.Total < u.Input)) {
				t.Errorf("usage %+v %v of %s", u, ok, plain.Body)
			}
			st, ok := ep.(endpoint.Streamer)
			if !ok {
				return
			}
			sb, err := st.StreamBody([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			streamed, _, err := c.DoStream(ctx, api.Request{Path: ep.Path(), Body: sb, Check: ep.Check}, st.NewAssembler(), api.StreamOptions{})
			if err != nil {
				t.Fatalf("streamed: %v", err)
			}
			if got, want := sansIDs(t, streamed.Body), sansIDs(t, plain.Body); !reflect.DeepEqual(got, want) {
				t.Errorf("streamed\n%s\nplain\n%s", streamed.Body, plain.Body)
			}
		})
	}
}

func dropNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if x == nil {
				delete(v, k)
			}
			dropNulls(x)
		}
	case []any:
		for _, x := range v {
			dropNulls(x)
		}
	}
}
