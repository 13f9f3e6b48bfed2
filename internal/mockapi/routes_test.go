package mockapi

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// testResponse decodes a Responses API response object.
type testResponse struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Status            string `json:"status"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Instructions *string `json:"instructions"`
	Model        string  `json:"model"`
	Output       []struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Status  string `json:"status"`
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage *struct {
		InputTokens         int `json:"input_tokens"`
		OutputTokens        int `json:"output_tokens"`
		TotalTokens         int `json:"total_tokens"`
		OutputTokensDetails struct {
			ReasoningTokens int `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
	} `json:"usage"`
}

// text is the response's output text.
func (r testResponse) text() string {
	var b strings.Builder
	for _, it := range r.Output {
		for _, c := range it.Content {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

// postOK posts body to path and insists on a 200.
func postOK(t *testing.T, url, body string) []byte {
	t.Helper()
	resp, b := post(context.Background(), t, url, body, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s %s: status %d: %s", url, body, resp.StatusCode, b)
	}
	return b
}

// A Responses call answers a response object: the output text, usage with
// reasoning counted in output_tokens, status incomplete when
// max_output_tokens cut it; the same request answers the same text.
func TestResponsesPlain(t *testing.T) {
	t.Parallel()
	_, srv := startServer(t, Config{Latency: 0, Seed: 1})
	url := srv.URL + "/v1/responses"
	for _, tc := range []struct {
		name, body string
		reasoning  bool
		incomplete bool
	}{
		{"string input", `{"model":"grok-3-mini","input":"What is Kafka?"}`, false, false},
		{"message array and instructions", `{"model":"grok-4","instructions":"Be terse.","input":[{"role":"user","content":"What is Kafka?"},{"type":"message","role":"user","content":[{"type":"input_text","text":"And Go?"}]}]}`, true, false},
		{"max_output_tokens", `{"model":"grok-3-mini","input":"Say a lot","max_output_tokens":3}`, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := postOK(t, url, tc.body)
			r := decode[testResponse](t, b)
			if r.Object != "response" || !strings.HasPrefix(r.ID, "resp_") || r.Usage == nil {
				t.Fatalf("not a response object: %s", b)
			}
			msg := r.Output[len(r.Output)-1]
			if msg.Type != "message" || msg.Role != "assistant" || len(msg.Content) != 1 || msg.Content[0].Type != "output_text" || msg.Content[0].Text == "" {
				t.Fatalf("no output_text message: %s", b)
			}
			if got := r.Usage.TotalTokens; got != r.Usage.InputTokens+r.Usage.OutputTokens || r.Usage.InputTokens == 0 {
				t.Errorf("usage %+v: total is not input + output", *r.Usage)
			}
			if got := r.Usage.OutputTokensDetails.ReasoningTokens > 0; got != tc.reasoning || (got && r.Output[0].Type != "reasoning") {
				t.Errorf("reasoning tokens %d, output %s; want reasoning %v", r.Usage.OutputTokensDetails.ReasoningTokens, b, tc.reasoning)
			}
			if tc.incomplete != (r.Status == "incomplete") || (tc.incomplete && (r.IncompleteDetails == nil || r.IncompleteDetails.Reason != "max_output_tokens" || r.Usage.OutputTokens != 3)) {
				t.Errorf("status %s, usage %+v: %s", r.Status, *r.Usage, b)
			}
			if again := decode[testResponse](t, postOK(t, url, tc.body)); again.text() != r.text() {
				t.Errorf("not deterministic: %q then %q", r.text(), again.text())
			}
		})
	}
}

// A streamed Responses call sends the documented typed events, each
// "event:" line naming its data's type, in order, with rising sequence
// numbers; the deltas make the text, and the last event carries the
// response a plain call returns.
func TestResponsesStream(t *testing.T) {
	t.Parallel()
	_, srv := startServer(t, Config{Latency: 0, Seed: 1})
	url := srv.URL + "/v1/responses"
	for _, tc := range []struct{ name, body string }{
		{"string input", `{"model":"grok-4","input":"What is Kafka?","stream":true}`},
		{"message array", `{"model":"grok-3-mini","instructions":"Be terse.","input":[{"role":"user","content":"What is Kafka?"}],"stream":true}`},
		{"max_output_tokens", `{"model":"grok-3-mini","input":"Say a lot","max_output_tokens":4,"stream":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain := decode[testResponse](t, postOK(t, url, strings.Replace(tc.body, `"stream":true`, `"stream":false`, 1)))
			evs, err := readSSE(strings.NewReader(string(postOK(t, url, tc.body))))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			var text, doneText string
			var last testResponse
			for i, ev := range evs {
				e := decode[struct {
					Type     string          `json:"type"`
					Seq      int             `json:"sequence_number"`
					Delta    string          `json:"delta"`
					Text     string          `json:"text"`
					Response json.RawMessage `json:"response"`
				}](t, []byte(ev.data))
				if e.Type != ev.name || e.Seq != i {
					t.Fatalf("event %d: event: %q, data type %q, sequence_number %d", i, ev.name, e.Type, e.Seq)
				}
				if len(names) == 0 || names[len(names)-1] != e.Type {
					names = append(names, e.Type)
				}
				switch e.Type {
				case "response.output_text.delta":
					text += e.Delta
				case "response.output_text.done":
					doneText = e.Text
				case "response.completed", "response.incomplete":
					last = decode[testResponse](t, e.Response)
				}
			}
			want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
				"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
			if plain.Output[0].Type == "reasoning" {
				want = append(want[:2], append([]string{"response.output_item.added", "response.output_item.done"}, want[2:]...)...)
			}
			if plain.Status == "incomplete" {
				want[len(want)-1] = "response.incomplete"
			}
			if !reflect.DeepEqual(names, want) {
				t.Errorf("events\n%v, want\n%v", names, want)
			}
			if text != plain.text() || doneText != text {
				t.Errorf("deltas %q, done %q, plain %q", text, doneText, plain.text())
			}
			plain.ID, last.ID = "", ""
			for i := range plain.Output {
				plain.Output[i].ID = ""
			}
			for i := range last.Output {
				last.Output[i].ID = ""
			}
			if !reflect.DeepEqual(last, plain) {
				t.Errorf("last event's response\n%+v, plain\n%+v", last, plain)
			}
		})
	}
}

// A legacy completion is a text_completion of max_tokens 16 when unset
// (the API's default); streamed, its data-only chunks make the same text.
func TestCompletions(t *testing.T) {
	t.Parallel()
	_, srv := startServer(t, Config{Latency: 0, Seed: 1, CompletionTokens: 40})
	url := srv.URL + "/v1/completions"
	type textCompletion struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         string  `json:"text"`
			Index        int     `json:"index"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *testUsage `json:"usage"`
	}
	plain := decode[textCompletion](t, postOK(t, url, `{"model":"grok-3-mini","prompt":"Once upon a time","n":2}`))
	if plain.Object != "text_completion" || len(plain.Choices) != 2 || plain.Usage == nil || plain.Usage.CompletionTokens != 2*16 {
		t.Fatalf("%+v", plain)
	}
	if n := len(strings.Fields(plain.Choices[0].Text)); n != 16 || *plain.Choices[0].FinishReason != "length" {
		t.Errorf("%d words, finish %s; want 16 (the default max_tokens), length", n, *plain.Choices[0].FinishReason)
	}
	evs, err := readSSE(strings.NewReader(string(postOK(t, url, `{"model":"grok-3-mini","prompt":"Once upon a time","n":2,"stream":true,"stream_options":{"include_usage":true}}`))))
	if err != nil {
		t.Fatal(err)
	}
	texts, finish := map[int]string{}, map[int]string{}
	var u *testUsage
	for _, ev := range evs[:len(evs)-1] {
		c := decode[textCompletion](t, []byte(ev.data))
		if ev.name != "" || c.Object != "text_completion" {
			t.Fatalf("event %q %s", ev.name, ev.data)
		}
		for _, ch := range c.Choices {
			texts[ch.Index] += ch.Text
			if ch.FinishReason != nil {
				finish[ch.Index] = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			u = c.Usage
		}
	}
	if evs[len(evs)-1].data != "[DONE]" {
		t.Errorf("last event %q, want [DONE]", evs[len(evs)-1].data)
	}
	for i, ch := range plain.Choices {
		if texts[i] != ch.Text || finish[i] != *ch.FinishReason {
			t.Errorf("choice %d streamed %q (%s), plain %q (%s)", i, texts[i], finish[i], ch.Text, *ch.FinishReason)
		}
	}
	if u == nil || *u != *plain.Usage {
		t.Errorf("streamed usage %v, plain %v", u, plain.Usage)
	}
}

// Moderations are deterministic: a category named in the input is flagged;
// the model is optional.
func TestModerations(t *testing.T) {
	t.Parallel()
	_, srv := startServer(t, Config{Latency: 0, Models: []string{"grok-4"}})
	url := srv.URL + "/v1/moderations"
	type moderation struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Results []struct {
			Flagged        bool               `json:"flagged"`
			Categories     map[string]bool    `json:"categories"`
			CategoryScores map[string]float64 `json:"category_scores"`
		} `json:"results"`
	}
	body := `{"input":["a calm river","graphic violence ahead"]}`
	a, b := postOK(t, url, body), postOK(t, url, body)
	m := decode[moderation](t, a)
	if m.Model != "omni-moderation-latest" || !strings.HasPrefix(m.ID, "modr-") || len(m.Results) != 2 {
		t.Fatalf("%s", a)
	}
	if m.Results[0].Flagged || !m.Results[1].Flagged || !m.Results[1].Categories["violence"] || m.Results[1].Categories["hate"] {
		t.Errorf("flags: %s", a)
	}
	if len(m.Results[0].CategoryScores) != len(moderationCategories) {
		t.Errorf("%d scores, want %d", len(m.Results[0].CategoryScores), len(moderationCategories))
	}
	m2 := decode[moderation](t, b)
	if !reflect.DeepEqual(m.Results, m2.Results) {
		t.Errorf("not deterministic:\n%s\n%s", a, b)
	}
	if m := decode[moderation](t, postOK(t, url, `{"model":"text-moderation-stable","input":[{"type":"text","text":"hello"}]}`)); m.Model != "text-moderation-stable" || len(m.Results) != 1 {
		t.Errorf("%+v", m)
	}
}

// Each route refuses the bodies its API refuses, with a 400 naming the
// parameter; a route that does not stream refuses "stream": true; a route
// that generates refuses an unknown model.
func TestRouteInvalidBodies(t *testing.T) {
	t.Parallel()
	_, srv := startServer(t, Config{Latency: 0, Models: []string{"grok-4"}})
	for _, tc := range []struct {
		path, body, param string
		status            int
	}{
		{"/v1/responses", `{"model":"grok-4"}`, "input", 400},
		{"/v1/responses", `{"model":"grok-4","input":[]}`, "input", 400},
		{"/v1/responses", `{"model":"grok-4","input":[{"content":"x"}]}`, "input[0].role", 400},
		{"/v1/responses", `{"input":"x"}`, "model", 400},
		{"/v1/responses", `{"model":"grok-4","input":"x","max_output_tokens":0}`, "max_output_tokens", 400},
		{"/v1/responses", `{"model":"nope","input":"x"}`, "model", 404},
		{"/v1/completions", `{"model":"grok-4"}`, "prompt", 400},
		{"/v1/completions", `{"model":"grok-4","prompt":"x","n":0}`, "n", 400},
		{"/v1/completions", `{"model":"nope","prompt":"x"}`, "model", 404},
		{"/v1/moderations", `{"input":[]}`, "input", 400},
		{"/v1/moderations", `{"input":"x","stream":true}`, "stream", 400},
		{"/v1/embeddings", `{"model":"e","input":[]}`, "input", 400},
		{"/v1/embeddings", `{"model":"e","input":"x","stream":true}`, "stream", 400},
		{"/v1/embeddings", `{"model":"e","input":"x"} {}`, "", 400},
	} {
		resp, b := post(context.Background(), t, srv.URL+tc.path, tc.body, nil)
		e := decodeError(t, b)
		param := ""
		if e.Error.Param != nil {
			param = *e.Error.Param
		}
		if resp.StatusCode != tc.status || param != tc.param {
			t.Errorf("%s %s: status %d, param %q; want %d, %q", tc.path, tc.body, resp.StatusCode, param, tc.status, tc.param)
		}
	}
}

// The simulator's limits and faults apply to every route: a 5xx, a quota
// 429, a malformed 200, and the RPM bucket.
func TestRouteFaultsAndLimits(t *testing.T) {
	t.Parallel()
	bodies := map[string]string{
		"/v1/chat/completions": `{"model":"grok-4","messages":[{"role":"user","content":"x"}]}`,
		"/v1/responses":        `{"model":"grok-4","input":"x"}`,
		"/v1/embeddings":       `{"model":"e","input":"x"}`,
		"/v1/completions":      `{"model":"grok-4","prompt":"x"}`,
		"/v1/moderations":      `{"input":"x"}`,
	}
	for path, body := range bodies {
		t.Run(strings.TrimPrefix(path, "/v1/"), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			_, s5 := startServer(t, Config{Fail5xx: 1})
			if resp, _ := post(ctx, t, s5.URL+path, body, nil); resp.StatusCode < 500 {
				t.Errorf("Fail5xx: status %d", resp.StatusCode)
			}
			_, sq := startServer(t, Config{Quota: 1})
			if resp, b := post(ctx, t, sq.URL+path, body, nil); resp.StatusCode != 429 || decodeError(t, b).code() != "insufficient_quota" {
				t.Errorf("Quota: status %d %s", resp.StatusCode, b)
			}
			_, sm := startServer(t, Config{Malformed: 1, Seed: 1})
			if resp, b := post(ctx, t, sm.URL+path, body, nil); resp.StatusCode != 200 || json.Valid(b) {
				t.Errorf("Malformed: status %d %s", resp.StatusCode, b)
			}
			mock, sr := startServer(t, Config{RPM: 1})
			if resp, b := post(ctx, t, sr.URL+path, body, nil); resp.StatusCode != 200 || resp.Header.Get("x-ratelimit-limit-requests") == "" {
				t.Errorf("first: status %d %s, headers %v", resp.StatusCode, b, resp.Header)
			}
			if resp, b := post(ctx, t, sr.URL+path, body, nil); resp.StatusCode != 429 || decodeError(t, b).code() != "rate_limit_exceeded" {
				t.Errorf("second within the minute: status %d %s", resp.StatusCode, b)
			}
			if st := mock.Stats(); st.Requests != 2 || st.RateLimited != 1 || st.PromptTokens == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
