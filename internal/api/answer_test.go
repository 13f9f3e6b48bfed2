package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
)

// A 2xx answer is a success only when it is a well-formed chat.completion:
// anything else is ErrMalformed, retried like a body that is not JSON, and
// the answer is still returned so the result can show it.
func TestDoMalformedAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body, want string }{
		{"error object", `{"error":{"message":"upstream failed","type":"server_error","code":"upstream_error"}}`, "upstream_error"},
		{"error object and choices", `{"error":{"message":"x"},"choices":[{"message":{"content":"hi"}}]}`, "error object"},
		{"empty object", `{}`, "no choices"},
		{"empty choices", `{"choices":[]}`, "no choices"},
		{"not an object", `[{"choices":[]}]`, "not a JSON object"},
		{"choice without message", `{"choices":[{"index":0,"text":"hi"}]}`, "no message"},
		{"tool call arguments cut", `{"choices":[{"message":{"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":"}}]}}]}`, "do not parse"},
		{"tool call without name", `{"choices":[{"message":{"tool_calls":[{"id":"a","type":"function","function":{"arguments":"{}"}}]}}]}`, "names no function"},
		{"key echoed", `{"error":{"message":"bad key ` + testKey + `"}}`, "[redacted]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, tc.body)
			})
			resp, err := newClient(t, srv.URL).Do(context.Background(), chatReq([]byte(`{}`)))
			if !errors.Is(err, api.ErrMalformed) || !api.Retryable(err) {
				t.Fatalf("err = %v, want a retryable ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), testKey) {
				t.Errorf("err = %q, want it to say %q and never the key", err, tc.want)
			}
			if resp == nil || resp.StatusCode != 200 || string(resp.Body) != tc.body {
				t.Errorf("resp = %+v, want the 200 answer verbatim", resp)
			}
		})
	}
	// Well-formed answers pass, tool calls included.
	for _, body := range []string{
		okAnswer,
		`{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":[1,2]}"}}]}}],"error":null}`,
	} {
		if err := chat.Check([]byte(body)); err != nil {
			t.Errorf("Check(%s) = %v, want nil", body, err)
		}
	}
}

// The streamed body is the record's body with only "stream" and
// stream_options.include_usage edited: key order, number spelling,
// escapes and whitespace are kept byte for byte.
func TestDoStreamRequestBodyBytes(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, want string }{
		{`{"model":"m","seed":12345678901234567890,"t":1.50e0,"x":"\u003cb\u003e&","messages":[]}`,
			`{"model":"m","seed":12345678901234567890,"t":1.50e0,"x":"\u003cb\u003e&","messages":[],"stream":true,"stream_options":{"include_usage":true}}`},
		{`{ "stream" : false , "b":1, "stream_options" : { "z" : 1.0, "include_usage" : false } }`,
			`{ "stream" : true , "b":1, "stream_options" : { "z" : 1.0, "include_usage" : true } }`},
		{`{"stream_options":{"include_obfuscation":false},"a":2}`,
			`{"stream_options":{"include_obfuscation":false,"include_usage":true},"a":2,"stream":true}`},
		{`{"stream_options":null,"stream":true}`, `{"stream_options":{"include_usage":true},"stream":true}`},
		{`{"stream_options":{}}`, `{"stream_options":{"include_usage":true},"stream":true}`},
		{`{}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
	}
	for _, tc := range tests {
		srv, reqs := sseServer(t, helloStream...)
		if _, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(tc.body), api.StreamOptions{}); err != nil {
			t.Fatalf("DoStream(%s): %v", tc.body, err)
		}
		if got := string((<-reqs).raw); got != tc.want {
			t.Errorf("body %s\n sent %s\n want %s", tc.body, got, tc.want)
		}
	}
}

// A stream is the plain answer or a failure: tool calls whose assembled
// arguments do not parse fail as ErrMalformed.
func TestDoStreamMalformedToolCall(t *testing.T) {
	t.Parallel()
	srv, _ := sseServer(t,
		event(chunk(`{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":"}}]}}`)),
		event(chunk(`{"index":0,"delta":{},"finish_reason":"tool_calls"}`)),
		doneEvent,
	)
	resp, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{})
	if !errors.Is(err, api.ErrMalformed) || !api.Retryable(err) || !strings.Contains(err.Error(), "do not parse") {
		t.Fatalf("err = %v, want a retryable ErrMalformed about the arguments", err)
	}
	if resp == nil || resp.Body != nil {
		t.Errorf("resp = %+v, want the answer with no body", resp)
	}
}

// Error events are classified with the one list of codes: a rate limit is
// a rate limit, a quota code is account-wide, the rest is retried.
func TestDoStreamErrorEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data                   string
		rateLimited, quota, overload bool
	}{
		{"rate limit", `{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}`, true, false, false},
		{"quota", `{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}`, false, true, false},
		{"billing", `{"error":{"message":"billing","code":"billing_hard_limit_reached"}}`, false, true, false},
		{"overloaded", `{"error":{"message":"busy","type":"overloaded_error"}}`, false, false, true},
		{"other", `{"error":{"message":"boom","type":"server_error"}}`, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := sseServer(t, event(chunk(`{"index":0,"delta":{"content":"a"}}`)), event(tc.data))
			_, _, err := doStream(newClient(t, srv.URL), context.Background(), []byte(`{}`), api.StreamOptions{})
			var se *api.StreamError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *StreamError", err)
			}
			if se.RateLimited() != tc.rateLimited || errors.Is(err, api.ErrQuota) != tc.quota || se.Overloaded() != tc.overload {
				t.Errorf("RateLimited %v, quota %v, Overloaded %v; want %v, %v, %v", se.RateLimited(), errors.Is(err, api.ErrQuota), se.Overloaded(), tc.rateLimited, tc.quota, tc.overload)
			}
			if api.Retryable(err) == tc.quota {
				t.Errorf("Retryable = %v, want %v", api.Retryable(err), !tc.quota)
			}
		})
	}
}

// Retry-After and retry-after-ms are bounded: no overflow, no negative
// wait, at most api.MaxRetryAfter.
func TestRetryAfterBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header, value string
		want          time.Duration
	}{
		{"Retry-After", "3600", time.Hour},
		{"Retry-After", "1e300", api.MaxRetryAfter},
		{"Retry-After", "-5", 0},
		{"Retry-After", "NaN", 0},
		{"Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT", api.MaxRetryAfter},
		{"retry-after-ms", "1e300", api.MaxRetryAfter},
		{"retry-after-ms", "250", 250 * time.Millisecond},
		{"retry-after-ms", "Inf", api.MaxRetryAfter},
	}
	for _, tc := range tests {
		srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(tc.header, tc.value)
			w.WriteHeader(429)
		})
		_, err := newClient(t, srv.URL).Do(context.Background(), chatReq([]byte(`{}`)))
		if got := api.RetryAfter(err); got != tc.want {
			t.Errorf("%s: %s -> %s, want %s", tc.header, tc.value, got, tc.want)
		}
	}
}
