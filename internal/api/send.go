package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Call is one request of any method and content type, for the provider
// APIs besides the endpoints (the Batch and Files APIs, see
// internal/batchapi).
type Call struct {
	// Method is the HTTP method, e.g. http.MethodGet.
	Method string
	// Path is appended to the base URL, e.g. "/batches/b-1".
	Path string
	// ContentType of Body; "" sends none (a GET).
	ContentType string
	// Body is sent as it is; nil sends none.
	Body io.Reader
	// ContentLength is Body's length in bytes when Body is a stream
	// whose length net/http cannot see (a pipe); 0 leaves it to net/http
	// (known for bytes and strings readers, else chunked).
	ContentLength int64
}

// Send makes one call and reads its whole answer, at most limit bytes
// (MaxResponseBytes when limit <= 0). The error is nil only for a 2xx
// answer within the limit; otherwise it is classified as Do's are
// (*StatusError, ErrMalformed for an answer over the limit, ErrTimeout,
// ErrTransport) and never carries the key.
func (c *Client) Send(ctx context.Context, call Call, limit int64) (*Response, error) {
	if limit <= 0 {
		limit = MaxResponseBytes
	}
	body, resp, err := c.Open(ctx, call)
	if err != nil {
		return resp, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	resp.Body = b
	if int64(len(b)) > limit {
		return resp, fmt.Errorf("%w: body exceeds %d bytes", ErrMalformed, limit)
	}
	return resp, nil
}

// Open makes one call and, for a 2xx answer, returns its body unread
// (the caller reads what it needs and closes it) with the answer's
// status and headers. A non-2xx answer is read (bounded) and returned as
// a *StatusError, like every other failure of Send.
func (c *Client) Open(ctx context.Context, call Call) (io.ReadCloser, *Response, error) {
	req, err := http.NewRequestWithContext(ctx, call.Method, c.base+call.Path, call.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("api: build request: %w", err)
	}
	if call.ContentLength > 0 {
		req.ContentLength = call.ContentLength
	}
	if call.ContentType != "" {
		req.Header.Set("Content-Type", call.ContentType)
	}
	req.Header.Set("User-Agent", c.userAgent)
	k := c.key()
	if k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	hr, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, transportError(ctx, err)
	}
	resp := &Response{StatusCode: hr.StatusCode, RequestID: hr.Header.Get("x-request-id"), Header: hr.Header}
	if hr.StatusCode >= 200 && hr.StatusCode <= 299 {
		return hr.Body, resp, nil
	}
	defer hr.Body.Close()
	b, err := io.ReadAll(io.LimitReader(hr.Body, maxErrorBytes))
	if err != nil {
		return nil, nil, transportError(ctx, err)
	}
	resp.Body = b
	se := newStatusError(resp, time.Now())
	se.Type, se.Code, se.Message = redact(se.Type, k), redact(se.Code, k), redact(se.Message, k)
	return nil, resp, se
}

// maxErrorBytes bounds what is read of an error answer of Open.
const maxErrorBytes = 1 << 20
