package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// Sentinel errors of one call. They are wrapped: test with errors.Is.
var (
	// ErrTimeout: no answer before the call's deadline. Retryable.
	ErrTimeout = errors.New("api: timeout")
	// ErrTransport: the connection failed (refused, reset, closed early). Retryable.
	ErrTransport = errors.New("api: transport error")
	// ErrMalformed: a 2xx answer whose body is not JSON. Retryable.
	ErrMalformed = errors.New("api: malformed response")
	// ErrQuota: the account cannot go on (quota or spending limit
	// exhausted, bad or forbidden key). Retrying one record cannot help.
	ErrQuota = errors.New("api: account quota exhausted or key rejected")
)

// StatusError is a non-2xx answer.
type StatusError struct {
	Response *Response
	// Type and Code are the OpenAI error object's fields, when present.
	Type, Code, Message string
	// RetryAfter is what the answer asked the client to wait (Retry-After
	// or retry-after-ms); zero when it did not say.
	RetryAfter time.Duration
}

func newStatusError(r *Response, now time.Time) *StatusError {
	e := &StatusError{Response: r, RetryAfter: retryAfter(r.Header, now)}
	var body struct {
		Error struct {
			Type    string `json:"type"`
			Code    any    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(r.Body, &body) == nil {
		e.Type, e.Message = body.Error.Type, body.Error.Message
		if body.Error.Code != nil {
			e.Code = fmt.Sprint(body.Error.Code)
		}
	}
	return e
}

// Error names the status and the provider's error code, never the request.
func (e *StatusError) Error() string {
	s := fmt.Sprintf("api: status %d", e.Response.StatusCode)
	if e.Code != "" {
		s += " (" + e.Code + ")"
	} else if e.Type != "" {
		s += " (" + e.Type + ")"
	}
	if e.Message != "" {
		s += ": " + truncate(e.Message, 200)
	}
	return s
}

// Is makes errors.Is(err, ErrQuota) true for account-level failures.
func (e *StatusError) Is(target error) bool {
	return target == ErrQuota && e.quota()
}

func (e *StatusError) quota() bool {
	switch e.Response.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return true
	case http.StatusTooManyRequests:
		return e.Code == "insufficient_quota" || e.Type == "insufficient_quota" ||
			e.Code == "spending_limit_exceeded" || e.Code == "billing_hard_limit_reached"
	}
	return false
}

// Retryable reports whether the answer may succeed when tried again:
// 408, 409, 429 (but not quota exhaustion) and every 5xx.
func (e *StatusError) Retryable() bool {
	switch c := e.Response.StatusCode; {
	case e.quota():
		return false
	case c == http.StatusRequestTimeout, c == http.StatusConflict, c == http.StatusTooManyRequests:
		return true
	default:
		return c >= 500
	}
}

// Retryable reports whether err, returned by Do, is worth another attempt.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Retryable()
	}
	return errors.Is(err, ErrTimeout) || errors.Is(err, ErrTransport) || errors.Is(err, ErrMalformed)
}

// RetryAfter returns how long the answer behind err asked to wait, or zero.
func RetryAfter(err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// retryAfter reads retry-after-ms (OpenAI's precise form) or Retry-After
// (seconds or an HTTP date).
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("retry-after-ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && !math.IsInf(ms, 0) {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 && s < 1e6 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // never cut a character in two
	}
	return s[:n] + "…"
}
