package mockapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock for rate-limit arithmetic.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startServer serves mock over real HTTP until the test ends.
func startServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	mock := New(cfg)
	srv := httptest.NewServer(mock)
	t.Cleanup(func() {
		mock.Close()
		srv.Close()
	})
	return mock, srv
}

// reqBody builds a chat-completions request body.
func reqBody(t *testing.T, model, user string, extra map[string]any) string {
	t.Helper()
	m := map[string]any{
		"model":    model,
		"messages": []map[string]any{{"role": "system", "content": "You are helpful."}, {"role": "user", "content": user}},
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// post sends body to url and returns the answer and its body.
func post(ctx context.Context, t *testing.T, url, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

// serveRecorded runs h in-process; aborted reports an http.ErrAbortHandler panic.
func serveRecorded(h http.Handler, r *http.Request) (rec *httptest.ResponseRecorder, aborted bool) {
	rec = httptest.NewRecorder()
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	h.ServeHTTP(rec, r)
	return rec, false
}

// recordChat posts body to h in-process at the given fake time.
func recordChat(h http.Handler, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	rec, _ := serveRecorded(h, r)
	return rec
}

// testCompletion decodes a chat.completion.
type testCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
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
	Usage             testUsage `json:"usage"`
	SystemFingerprint string    `json:"system_fingerprint"`
}

type testUsage struct {
	PromptTokens            int `json:"prompt_tokens"`
	CompletionTokens        int `json:"completion_tokens"`
	TotalTokens             int `json:"total_tokens"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

// testError decodes an OpenAI error body, insisting on all four keys.
type testError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func decodeError(t *testing.T, b []byte) testError {
	t.Helper()
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := raw["error"][k]; !ok {
			t.Fatalf("error body %s lacks error.%s", b, k)
		}
	}
	var e testError
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e testError) code() string {
	if e.Error.Code == nil {
		return ""
	}
	return *e.Error.Code
}

// sseEvent is one parsed server-sent event: a data payload, with the
// name of its "event:" line if any, or a comment.
type sseEvent struct {
	name    string
	data    string
	comment bool
}

// readSSE parses events from r until EOF or error.
func readSSE(r io.Reader) ([]sseEvent, error) {
	var evs []sseEvent
	sc := bufio.NewScanner(r)
	var data []string
	name := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil {
				evs = append(evs, sseEvent{name: name, data: strings.Join(data, "\n")})
				data, name = nil, ""
			}
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, ":"):
			evs = append(evs, sseEvent{data: line, comment: true})
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	return evs, sc.Err()
}

// testChunk decodes a chat.completion.chunk.
type testChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role             string  `json:"role"`
			Content          *string `json:"content"`
			ReasoningContent *string `json:"reasoning_content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *testUsage `json:"usage"`
}
