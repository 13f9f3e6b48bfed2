// Package api is a minimal client of an OpenAI-compatible API. It makes
// exactly one attempt per call (sluice has one retry layer, in the
// processor) and classifies what went wrong so the caller can decide
// whether to retry. What an endpoint's answer must contain and how its
// stream is assembled belong to the endpoint (internal/endpoint): a call
// names its path, its answer check and, streamed, its Assembler.
//
//	c, _ := api.New(api.Config{BaseURL: "https://api.x.ai/v1", Key: key})
//	resp, err := c.Do(ctx, api.Request{Path: "/responses", Body: body, Check: check})
//	if api.Retryable(err) { ... wait api.RetryAfter(err), try again ... }
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxResponseBytes bounds how much of one answer is read into memory.
const MaxResponseBytes = 32 << 20

// Config configures a Client.
type Config struct {
	// BaseURL is the API root, e.g. https://api.x.ai/v1; a Request's
	// Path is appended.
	BaseURL string
	// Key returns the bearer token for each request (so a rotated key is
	// picked up without a restart). Nil or "" sends no Authorization header.
	Key func() string
	// MaxConns sizes the connection pool; it should be at least the
	// number of concurrent calls.
	MaxConns int
	// HTTPClient overrides the HTTP client (tests); its timeouts should be
	// left to the per-call context.
	HTTPClient *http.Client
	// UserAgent is sent with every request.
	UserAgent string
}

// Client calls POST {BaseURL}{Request.Path}.
type Client struct {
	base      string
	key       func() string
	hc        *http.Client
	userAgent string
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api: base URL must be an absolute http(s) URL, got %q", cfg.BaseURL)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		conns := max(cfg.MaxConns, 16)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = conns
		tr.MaxIdleConnsPerHost = conns
		tr.ForceAttemptHTTP2 = true
		hc = &http.Client{Transport: tr}
	}
	key := cfg.Key
	if key == nil {
		key = func() string { return "" }
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "sluice"
	}
	return &Client{
		base:      strings.TrimSuffix(cfg.BaseURL, "/"),
		key:       key,
		hc:        hc,
		userAgent: ua,
	}, nil
}

// Response is one HTTP answer of the API.
type Response struct {
	StatusCode int
	// RequestID is the provider's x-request-id, "" when absent.
	RequestID string
	Header    http.Header
	// Body is the answer's bytes, verbatim.
	Body []byte
}

// JSONBody returns Body when it is valid JSON, else nil (encoded as null).
func (r *Response) JSONBody() json.RawMessage {
	if r == nil || !json.Valid(r.Body) {
		return nil
	}
	return r.Body
}

// Request is one call: the endpoint's path, the JSON body, and the
// endpoint's check of a 2xx answer.
type Request struct {
	// Path is appended to the base URL, e.g. "/chat/completions".
	Path string
	// Body is sent byte for byte.
	Body []byte
	// Check reports whether a 2xx answer is a well-formed answer of the
	// endpoint; its error should wrap ErrMalformed. Nil accepts any JSON.
	Check func(body []byte) error
}

// Do sends one request and reads the whole answer. It returns the Response
// whenever an HTTP answer arrived, and an error that is nil only for a 2xx
// JSON answer that req.Check accepts:
//   - *StatusError for a non-2xx status,
//   - ErrMalformed for a 2xx answer that is not JSON or that req.Check
//     refuses (an error object, no choices, ...),
//   - ErrTimeout when ctx's deadline passed first,
//   - ErrTransport for connection failures.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	hreq, k, err := c.newRequest(ctx, req, "application/json")
	if err != nil {
		return nil, err
	}
	hr, err := c.hc.Do(hreq)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer hr.Body.Close()
	return readAnswer(ctx, hr, req, k)
}

// transportError names a failure that left no HTTP answer. It never
// includes the request (and so never the key or the prompt).
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("api: %w", context.Cause(ctx))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %s", ErrTimeout, redactURL(err))
	}
	return fmt.Errorf("%w: %s", ErrTransport, redactURL(err))
}

// redactURL strips the *url.Error wrapper (it repeats the endpoint) and
// returns the underlying cause's text.
func redactURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// newRequest builds the POST of body with the client's headers and
// returns the key it sent ("" for none).
func (c *Client) newRequest(ctx context.Context, r Request, accept string) (*http.Request, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return nil, "", fmt.Errorf("api: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.userAgent)
	k := c.key()
	if k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	return req, k, nil
}

// readAnswer reads a whole answer and classifies it exactly as Do does;
// key k is redacted from the error.
func readAnswer(ctx context.Context, hr *http.Response, req Request, k string) (*Response, error) {
	b, err := io.ReadAll(io.LimitReader(hr.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	resp := &Response{
		StatusCode: hr.StatusCode,
		RequestID:  hr.Header.Get("x-request-id"),
		Header:     hr.Header,
		Body:       b,
	}
	if len(b) > MaxResponseBytes {
		return resp, fmt.Errorf("%w: body exceeds %d bytes", ErrMalformed, MaxResponseBytes)
	}
	if hr.StatusCode < 200 || hr.StatusCode > 299 {
		se := newStatusError(resp, time.Now())
		se.Type, se.Code, se.Message = redact(se.Type, k), redact(se.Code, k), redact(se.Message, k)
		return resp, se
	}
	if !json.Valid(b) {
		return resp, fmt.Errorf("%w: status %d with a body that is not JSON", ErrMalformed, hr.StatusCode)
	}
	if err := check(req, b); err != nil {
		return resp, redactErr(err, k)
	}
	return resp, nil
}

// check runs req.Check on a 2xx body; nil accepts it.
func check(req Request, b []byte) error {
	if req.Check == nil {
		return nil
	}
	return req.Check(b)
}

// redact removes key k from s. Some gateways echo the key; error texts are
// logged and published, so they must never carry it.
func redact(s, k string) string {
	if k == "" {
		return s
	}
	return strings.ReplaceAll(s, k, "[redacted]")
}

// redactErr returns err, or an error of the same class (ErrMalformed,
// ErrTransport, ...) without key k in its text when it had it.
func redactErr(err error, k string) error {
	if err == nil || k == "" || !strings.Contains(err.Error(), k) {
		return err
	}
	return redactedError{err: err, text: redact(err.Error(), k)}
}

// redactedError is err with another text.
type redactedError struct {
	err  error
	text string
}

func (e redactedError) Error() string { return e.text }
func (e redactedError) Unwrap() error { return e.err }
