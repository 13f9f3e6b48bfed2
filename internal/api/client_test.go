package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
)

const testKey = "xai-test-SECRET-key-7f3a9c"

// okAnswer is the smallest well-formed chat.completion.
const okAnswer = `{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}`

// seen is what the test server received.
type seen struct {
	method, path, auth, contentType string
	body                            []byte
}

// newServer starts an httptest server running h and reports every request
// it receives on the returned channel (buffered, never blocks the handler).
func newServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, <-chan seen) {
	t.Helper()
	reqs := make(chan seen, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case reqs <- seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), b}:
		default:
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

// release returns a channel closed before the server shuts down, so a
// handler that hangs always returns.
func release(t *testing.T) <-chan struct{} {
	ch := make(chan struct{})
	t.Cleanup(func() { close(ch) }) // runs before srv.Close (LIFO)
	return ch
}

func newClient(t *testing.T, baseURL string) *api.Client {
	t.Helper()
	c, err := api.New(api.Config{BaseURL: baseURL, Key: func() string { return testKey }})
	if err != nil {
		t.Fatalf("api.New(%q): %v", baseURL, err)
	}
	return c
}

func TestDoSuccess(t *testing.T) {
	t.Parallel()
	// Odd whitespace and number spelling: the body must come back verbatim.
	const answer = `{"id":"chatcmpl-1", "choices":[{"message":{"role":"assistant","content":"hi <b>"}}],"n":1.50e0}`
	srv, reqs := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("x-request-id", "req-123")
		_, _ = io.WriteString(w, answer)
	})
	c := newClient(t, srv.URL+"/v1")
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)

	resp, err := c.Do(context.Background(), chatReq(body))
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Errorf("StatusCode = %d, want 200", resp.StatusCode)
	}
	if string(resp.Body) != answer {
		t.Errorf("Body = %q, want %q", resp.Body, answer)
	}
	if string(resp.JSONBody()) != answer {
		t.Errorf("JSONBody = %q, want %q", resp.JSONBody(), answer)
	}
	if resp.RequestID != "req-123" {
		t.Errorf("RequestID = %q, want req-123", resp.RequestID)
	}
	got := <-reqs
	if got.method != http.MethodPost {
		t.Errorf("method = %s, want POST", got.method)
	}
	if got.auth != "Bearer "+testKey {
		t.Errorf("Authorization = %q, want %q", got.auth, "Bearer "+testKey)
	}
	if got.contentType != "application/json" {
		t.Errorf("Content-Type = %q", got.contentType)
	}
	if string(got.body) != string(body) {
		t.Errorf("server got body %q, want %q", got.body, body)
	}
}

func TestDoKeyPerRequestAndNoKey(t *testing.T) {
	t.Parallel()
	srv, reqs := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, okAnswer)
	})
	keys := []string{"k1", "k2", ""}
	i := 0
	c, err := api.New(api.Config{BaseURL: srv.URL, Key: func() string { return keys[i] }})
	if err != nil {
		t.Fatal(err)
	}
	for i = range keys {
		if _, err := c.Do(context.Background(), chatReq([]byte(`{}`))); err != nil {
			t.Fatalf("Do #%d: %v", i, err)
		}
		want := ""
		if keys[i] != "" {
			want = "Bearer " + keys[i]
		}
		if got := (<-reqs).auth; got != want {
			t.Errorf("request %d: Authorization = %q, want %q", i, got, want)
		}
	}

	// A nil Key func sends no Authorization header.
	c, err = api.New(api.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(context.Background(), chatReq([]byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	if got := (<-reqs).auth; got != "" {
		t.Errorf("nil Key: Authorization = %q, want none", got)
	}
}

func TestDoEndpointPath(t *testing.T) {
	t.Parallel()
	srv, reqs := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, okAnswer)
	})
	for _, tc := range []struct{ base, want string }{
		{"/v1", "/v1/chat/completions"},
		{"/v1/", "/v1/chat/completions"},
		{"", "/chat/completions"},
		{"/", "/chat/completions"},
	} {
		t.Run("base="+tc.base, func(t *testing.T) {
			c := newClient(t, srv.URL+tc.base)
			if _, err := c.Do(context.Background(), chatReq([]byte(`{}`))); err != nil {
				t.Fatal(err)
			}
			if got := (<-reqs).path; got != tc.want {
				t.Errorf("path = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewRejectsMalformedBaseURL(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"", "not a url", "ftp://x", "http://", "//host/v1", "/v1", "localhost:8080", "http://[::1", "https:///v1"} {
		t.Run(base, func(t *testing.T) {
			t.Parallel()
			c, err := api.New(api.Config{BaseURL: base})
			if err == nil {
				t.Fatalf("New(%q) = %v, want an error", base, c)
			}
		})
	}
	for _, base := range []string{"https://api.x.ai/v1", "http://127.0.0.1:9/v1/", "http://h"} {
		t.Run("ok "+base, func(t *testing.T) {
			t.Parallel()
			if _, err := api.New(api.Config{BaseURL: base}); err != nil {
				t.Fatalf("New(%q): %v", base, err)
			}
		})
	}
}

func TestDoStatusErrors(t *testing.T) {
	t.Parallel()
	const std = `{"error":{"message":"something went wrong","type":"server_error","code":"boom"}}`
	tests := []struct {
		name      string
		status    int
		body      string
		retryable bool
		quota     bool
		typ, code string
		message   string
	}{
		{"408", 408, std, true, false, "server_error", "boom", "something went wrong"},
		{"409", 409, std, true, false, "server_error", "boom", "something went wrong"},
		{"429 rate limit", 429, `{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`, true, false, "requests", "rate_limit_exceeded", "slow down"},
		{"500", 500, std, true, false, "server_error", "boom", "something went wrong"},
		{"502", 502, std, true, false, "server_error", "boom", "something went wrong"},
		{"503", 503, std, true, false, "server_error", "boom", "something went wrong"},
		{"504 no body", 504, ``, true, false, "", "", ""},
		{"400", 400, `{"error":{"message":"bad messages","type":"invalid_request_error","code":null}}`, false, false, "invalid_request_error", "", "bad messages"},
		{"404", 404, `{"error":{"message":"no such model","type":"invalid_request_error","code":"model_not_found"}}`, false, false, "invalid_request_error", "model_not_found", "no such model"},
		{"422 numeric code", 422, `{"error":{"message":"unprocessable","code":42}}`, false, false, "", "42", "unprocessable"},
		{"400 html body", 400, `<html>bad</html>`, false, false, "", "", ""},
		{"429 insufficient_quota", 429, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`, false, true, "insufficient_quota", "insufficient_quota", "You exceeded your current quota"},
		{"401", 401, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`, false, true, "invalid_request_error", "invalid_api_key", "Incorrect API key provided"},
		// A 403 about one request (a model the key may not use) is that
		// request's failure; only xAI's credits message is account-wide.
		{"403 permission", 403, `{"error":{"message":"forbidden","type":"permission_error"}}`, false, false, "permission_error", "", "forbidden"},
		{"403 model_not_found", 403, `{"error":{"message":"The model grok-x does not exist or your team does not have access to it","type":"invalid_request_error","code":"model_not_found"}}`, false, false, "invalid_request_error", "model_not_found", "The model grok-x does not exist or your team does not have access to it"},
		{"403 xAI no credits", 403, `{"code":"The caller does not have permission to execute the specified operation","error":"Your newly created team doesn't have any credits yet."}`, false, true, "", "The caller does not have permission to execute the specified operation", "Your newly created team doesn't have any credits yet."},
		{"400 xAI wrong key", 400, `{"code":"Client specified an invalid argument","error":"Incorrect API key provided: xa***bc."}`, false, true, "", "Client specified an invalid argument", "Incorrect API key provided: xa***bc."},
		{"429 spending limit", 429, `{"error":{"message":"Your team has reached its monthly spending limit","type":"rate_limit"}}`, false, true, "rate_limit", "", "Your team has reached its monthly spending limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("x-request-id", "req-err")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			resp, err := newClient(t, srv.URL).Do(context.Background(), chatReq([]byte(`{}`)))
			var se *api.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v (%T), want *api.StatusError", err, err)
			}
			if resp == nil || resp.StatusCode != tc.status || string(resp.Body) != tc.body || resp.RequestID != "req-err" {
				t.Errorf("resp = %+v, want status %d, body %q, request id req-err", resp, tc.status, tc.body)
			}
			if se.Response != resp {
				t.Errorf("StatusError.Response is not the returned Response")
			}
			if se.Type != tc.typ || se.Code != tc.code || se.Message != tc.message {
				t.Errorf("Type, Code, Message = %q, %q, %q; want %q, %q, %q", se.Type, se.Code, se.Message, tc.typ, tc.code, tc.message)
			}
			if got := api.Retryable(err); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
			if got := errors.Is(err, api.ErrQuota); got != tc.quota {
				t.Errorf("errors.Is(err, ErrQuota) = %v, want %v", got, tc.quota)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Errorf("error %q does not name the status", err)
			}
		})
	}
}

func TestDoRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		header   func() http.Header
		min, max time.Duration
	}{
		{"none", func() http.Header { return http.Header{} }, 0, 0},
		{"seconds", func() http.Header { return http.Header{"Retry-After": {"7"}} }, 7 * time.Second, 7 * time.Second},
		{"fractional seconds", func() http.Header { return http.Header{"Retry-After": {"1.5"}} }, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"ms", func() http.Header { return http.Header{"Retry-After-Ms": {"250"}} }, 250 * time.Millisecond, 250 * time.Millisecond},
		{"ms wins over seconds", func() http.Header {
			return http.Header{"Retry-After": {"30"}, "Retry-After-Ms": {"120"}}
		}, 120 * time.Millisecond, 120 * time.Millisecond},
		{"invalid ms falls back to seconds", func() http.Header {
			return http.Header{"Retry-After": {"3"}, "Retry-After-Ms": {"soon"}}
		}, 3 * time.Second, 3 * time.Second},
		{"http date", func() http.Header {
			return http.Header{"Retry-After": {time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}}
		}, 58 * time.Minute, time.Hour},
		{"http date in the past", func() http.Header {
			return http.Header{"Retry-After": {time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)}}
		}, 0, 0},
		{"garbage", func() http.Header { return http.Header{"Retry-After": {"whenever"}} }, 0, 0},
		{"negative", func() http.Header { return http.Header{"Retry-After": {"-5"}} }, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header() {
					w.Header()[k] = v
				}
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = io.WriteString(w, `{"error":{"message":"slow down","code":"rate_limit_exceeded"}}`)
			})
			_, err := newClient(t, srv.URL).Do(context.Background(), chatReq([]byte(`{}`)))
			if err == nil {
				t.Fatal("Do: nil error for a 429")
			}
			var se *api.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %T, want *api.StatusError", err)
			}
			got := api.RetryAfter(err)
			if got != se.RetryAfter {
				t.Errorf("RetryAfter(err) = %v, StatusError.RetryAfter = %v", got, se.RetryAfter)
			}
			if got < tc.min || got > tc.max {
				t.Errorf("RetryAfter = %v, want in [%v, %v]", got, tc.min, tc.max)
			}
		})
	}
}

func TestRetryAfterOfOtherErrors(t *testing.T) {
	t.Parallel()
	for _, err := range []error{nil, api.ErrTimeout, fmt.Errorf("%w: EOF", api.ErrTransport)} {
		if got := api.RetryAfter(err); got != 0 {
			t.Errorf("RetryAfter(%v) = %v, want 0", err, got)
		}
	}
}

func TestDoMalformed(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"not json", `{"truncated":`, ""} {
		t.Run(fmt.Sprintf("%q", body), func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("x-request-id", "req-m")
				_, _ = io.WriteString(w, body)
			})
			resp, err := newClient(t, srv.URL).Do(context.Background(), chatReq([]byte(`{}`)))
			if !errors.Is(err, api.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if !api.Retryable(err) {
				t.Error("ErrMalformed is not retryable")
			}
			if resp == nil || resp.StatusCode != 200 || string(resp.Body) != body || resp.RequestID != "req-m" {
				t.Errorf("resp = %+v, want the 200 answer with its body", resp)
			}
			if resp != nil && resp.JSONBody() != nil {
				t.Errorf("JSONBody = %q, want nil", resp.JSONBody())
			}
		})
	}
}

// hijackClose answers nothing: it takes the connection and closes it.
func hijackClose(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		_ = conn.Close()
	}
}

func TestDoTransportError(t *testing.T) {
	t.Parallel()
	t.Run("hijacked and closed", func(t *testing.T) {
		t.Parallel()
		srv, _ := newServer(t, hijackClose(t))
		resp, err := newClient(t, srv.URL).Do(context.Background(), chatReq([]byte(`{}`)))
		if !errors.Is(err, api.ErrTransport) {
			t.Fatalf("err = %v, want ErrTransport", err)
		}
		if !api.Retryable(err) {
			t.Error("ErrTransport is not retryable")
		}
		if resp != nil {
			t.Errorf("resp = %+v, want nil", resp)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		_, err := newClient(t, url).Do(context.Background(), chatReq([]byte(`{}`)))
		if !errors.Is(err, api.ErrTransport) || !api.Retryable(err) {
			t.Fatalf("err = %v, want retryable ErrTransport", err)
		}
	})
}

func TestDoTimeout(t *testing.T) {
	t.Parallel()
	rel := release(t)
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-rel:
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	resp, err := newClient(t, srv.URL).Do(ctx, chatReq([]byte(`{}`)))
	if !errors.Is(err, api.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if !api.Retryable(err) {
		t.Error("ErrTimeout is not retryable")
	}
	if resp != nil {
		t.Errorf("resp = %+v, want nil", resp)
	}
}

func TestDoCanceledIsNotTimeout(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{}`)
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newClient(t, srv.URL).Do(ctx, chatReq([]byte(`{}`)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if errors.Is(err, api.ErrTimeout) {
		t.Errorf("err = %v: a canceled call is not a timeout", err)
	}
}

// TestKeyNeverInErrors checks every error class for the key, including an
// answer that echoes the key back (as some gateways do).
func TestKeyNeverInErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    func(t *testing.T, rel <-chan struct{}) http.HandlerFunc
		ctx  time.Duration
	}{
		{"401 echoing the key", func(*testing.T, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","code":"invalid_api_key"}}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			}
		}, 0},
		{"500", func(*testing.T, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = io.WriteString(w, `{"error":{"message":"oops","type":"server_error"}}`)
			}
		}, 0},
		{"malformed", func(*testing.T, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "<html>") }
		}, 0},
		{"transport", func(t *testing.T, _ <-chan struct{}) http.HandlerFunc { return hijackClose(t) }, 0},
		{"timeout", func(_ *testing.T, rel <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-rel:
				}
			}
		}, 30 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, reqs := newServer(t, tc.h(t, release(t)))
			// A timeout can pass before the request reaches the server on
			// a loaded machine: then try again with twice the time, until
			// the server saw the key.
			var err error
			var got seen
			for d, sent := tc.ctx, false; !sent; d *= 2 {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if d > 0 {
					ctx, cancel = context.WithTimeout(ctx, d)
				}
				_, err = newClient(t, srv.URL).Do(ctx, chatReq([]byte(`{}`)))
				cancel()
				if err == nil {
					t.Fatal("Do: nil error")
				}
				if d == 0 { // no deadline: the server answered it
					got, sent = <-reqs, true
					break
				}
				select {
				case got, sent = <-reqs:
				case <-time.After(10 * d):
				}
			}
			if got := got.auth; got != "Bearer "+testKey {
				t.Fatalf("Authorization = %q: the key was not sent, so the test proves nothing", got)
			}
			for _, s := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", errors.Unwrap(err))} {
				if strings.Contains(s, testKey) {
					t.Errorf("error text contains the key: %s", s)
				}
			}
		})
	}
}
