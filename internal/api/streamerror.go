package api

import (
	"encoding/json"
	"fmt"
)

// StreamError is an error event in a stream that had begun with a 2xx
// answer: data {"error":{...}}. It matches ErrQuota for account-level
// codes and ErrTransport otherwise, so Retryable retries it.
type StreamError struct {
	// Response is the streamed answer's status and headers (Body nil).
	Response *Response
	// Type, Code and Message are the error object's fields.
	Type, Code, Message string
}

// Error names the error event's code, never the request.
func (e *StreamError) Error() string {
	s := "api: error event in stream"
	if e.Code != "" {
		s += " (" + e.Code + ")"
	} else if e.Type != "" {
		s += " (" + e.Type + ")"
	}
	if e.Message != "" {
		s += ": " + Truncate(e.Message, 200)
	}
	return s
}

// Is makes errors.Is(err, ErrQuota) true for account-level failures and
// errors.Is(err, ErrTransport) true for the others.
func (e *StreamError) Is(target error) bool {
	quota := AccountWide(0, e.Type, e.Code, e.Message)
	switch target {
	case ErrQuota:
		return quota
	case ErrTransport:
		return !quota
	}
	return false
}

// RateLimited reports whether the event is about the request rate (a 429
// told inside the stream): the caller backs off as for a 429 answer.
func (e *StreamError) RateLimited() bool {
	return rateLimitCodes[e.Code] || rateLimitCodes[e.Type]
}

// Overloaded reports whether the event says the provider is overloaded.
func (e *StreamError) Overloaded() bool {
	return overloadCodes[e.Code] || overloadCodes[e.Type]
}

// ErrorEvent returns the *StreamError of an error value inside a stream
// (an object with type, code and message, or a bare string); DoStream
// fills in its Response and redacts the key.
func ErrorEvent(raw json.RawMessage) *StreamError {
	e := &StreamError{}
	e.Type, e.Code, e.Message = ParseErrorObject(raw)
	return e
}

// ErrorObject is the failure of a 2xx answer that carries an error object
// raw: it wraps ErrMalformed and names the code and message.
func ErrorObject(raw json.RawMessage) error {
	typ, code, msg := ParseErrorObject(raw)
	s := "a 2xx answer carries an error object"
	if c := cmpOr(code, typ); c != "" {
		s += " (" + Truncate(c, 100) + ")"
	}
	if msg != "" {
		s += ": " + Truncate(msg, 200)
	}
	return fmt.Errorf("%w: %s", ErrMalformed, s)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
