// Package api is a minimal client of an OpenAI-compatible chat-completions
// endpoint. It makes exactly one attempt per call (sluice has one retry layer,
// in the processor) and classifies what went wrong so the caller can decide
// whether to retry.
//
//	c, _ := api.New(api.Config{BaseURL: "https://api.x.ai/v1", Key: key})
//	resp, err := c.Do(ctx, body)
//	if api.Retryable(err) { ... wait api.RetryAfter(err), try again ... }
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// MaxResponseBytes bounds how much of one answer is read into memory.
const MaxResponseBytes = 32 << 20

// Config configures a Client.
type Config struct {
	// BaseURL is the API root, e.g. https://api.x.ai/v1; /chat/completions is appended.
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

// Client calls POST {BaseURL}/chat/completions.
type Client struct {
	endpoint  string
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
		endpoint:  strings.TrimSuffix(cfg.BaseURL, "/") + "/chat/completions",
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

// Do sends one chat-completions request with the JSON body and reads the
// whole answer. It returns the Response whenever an HTTP answer arrived, and
// an error that is nil only for a 2xx answer that CheckAnswer accepts:
//   - *StatusError for a non-2xx status,
//   - ErrMalformed for a 2xx answer that is not a well-formed
//     chat.completion (not JSON, an error object, no choices, ...),
//   - ErrTimeout when ctx's deadline passed first,
//   - ErrTransport for connection failures.
func (c *Client) Do(ctx context.Context, body []byte) (*Response, error) {
	req, k, err := c.newRequest(ctx, body, "application/json")
	if err != nil {
		return nil, err
	}
	hr, err := c.hc.Do(req)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer hr.Body.Close()
	return readAnswer(ctx, hr, k)
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
