package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors of one call. They are wrapped: test with errors.Is.
var (
	// ErrTimeout: no answer before the call's deadline. Retryable.
	ErrTimeout = errors.New("api: timeout")
	// ErrTransport: the connection failed (refused, reset, closed early). Retryable.
	ErrTransport = errors.New("api: transport error")
	// ErrMalformed: a 2xx answer that is not a well-formed chat.completion
	// (not JSON, an error object, no choices, tool call arguments that do
	// not parse; see CheckAnswer). Retryable.
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
	e.Type, e.Code, e.Message = parseErrorBody(r.Body)
	return e
}

// parseErrorBody reads the error of an answer body: the OpenAI shape
// {"error":{"type":...,"code":...,"message":...}} (code a string or a
// number), or xAI's {"code":"...","error":"..."} where error is the message.
// Fields it cannot find are "".
func parseErrorBody(body []byte) (typ, code, msg string) {
	var v struct {
		Error json.RawMessage `json:"error"`
		Code  any             `json:"code"`
	}
	if json.Unmarshal(body, &v) != nil {
		return "", "", ""
	}
	typ, code, msg = ParseErrorObject(v.Error)
	if s, ok := v.Code.(string); ok && code == "" && typ == "" {
		code = s
	}
	return typ, code, msg
}

// ParseErrorObject reads an error value: an object with type, code and
// message, or a bare string (the message).
func ParseErrorObject(raw json.RawMessage) (typ, code, msg string) {
	var o struct {
		Type    any `json:"type"`
		Code    any `json:"code"`
		Message any `json:"message"`
	}
	if json.Unmarshal(raw, &o) == nil {
		return scalar(o.Type), scalar(o.Code), scalar(o.Message)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return "", "", s
	}
	return "", "", ""
}

// scalar renders a JSON string, number or boolean as text; "" for the rest.
func scalar(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64, bool:
		return fmt.Sprint(v)
	}
	return ""
}

// Error names the status and the provider's error code, never the request.
func (e *StatusError) Error() string {
	s := fmt.Sprintf("api: status %d", e.Response.StatusCode)
	if e.Code != "" {
		s += " (" + Truncate(e.Code, 100) + ")"
	} else if e.Type != "" {
		s += " (" + Truncate(e.Type, 100) + ")"
	}
	if e.Message != "" {
		s += ": " + Truncate(e.Message, 200)
	}
	return s
}

// Is makes errors.Is(err, ErrQuota) true for account-level failures.
func (e *StatusError) Is(target error) bool {
	return target == ErrQuota && e.quota()
}

func (e *StatusError) quota() bool {
	return AccountWide(e.Response.StatusCode, e.Type, e.Code, e.Message)
}

// quotaCodes are the error codes and types that say the account, not the
// request, cannot go on: quota or spending limit exhausted, billing off,
// key invalid or the account deactivated. It is the one list, used for
// error answers and for error events inside a stream alike.
var quotaCodes = map[string]bool{
	"insufficient_quota":         true,
	"spending_limit_exceeded":    true,
	"billing_hard_limit_reached": true,
	"billing_not_active":         true,
	"invalid_api_key":            true,
	"account_deactivated":        true,
}

// accountWideTexts are what xAI's answers say, in the message only, when
// the team has no credits left or hit its spending limit, or the key is
// wrong (xAI answers a wrong key with a 400).
var accountWideTexts = []string{"incorrect api key", "invalid api key", "any credits", "used all available credits", "spending limit"}

// AccountWide reports whether an error answer (status 0 for an error event
// inside a 2xx stream) says the account cannot go on: a 401, a code or type
// in the list of quota codes, or xAI's message for exhausted credits or a
// wrong key. Everything else, including a 403 about one model or one
// request's permissions, is the request's own failure.
func AccountWide(status int, typ, code, msg string) bool {
	if status == http.StatusUnauthorized || quotaCodes[code] || quotaCodes[typ] {
		return true
	}
	if status != http.StatusBadRequest && status != http.StatusForbidden && status != http.StatusTooManyRequests {
		return false
	}
	m := strings.ToLower(msg)
	for _, t := range accountWideTexts {
		if strings.Contains(m, t) {
			return true
		}
	}
	return false
}

// rateLimitCodes are the codes and types of an error that is about the
// request rate (OpenAI: code rate_limit_exceeded, type requests or
// tokens; Anthropic-style rate_limit_error).
var rateLimitCodes = map[string]bool{
	"rate_limit_exceeded": true, "rate_limit_error": true, "requests": true, "tokens": true,
}

// overloadCodes are those of a provider that is overloaded.
var overloadCodes = map[string]bool{"overloaded": true, "overloaded_error": true, "server_overloaded": true}

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

// MaxRetryAfter bounds what RetryAfter reports, whatever the header said;
// callers cap it further (the processor at SLUICE_RETRY_MAX).
const MaxRetryAfter = 24 * time.Hour

// retryAfter reads retry-after-ms (OpenAI's precise form) or Retry-After
// (seconds or an HTTP date, RFC 9110 section 10.2.3). The result is in
// [0, MaxRetryAfter]; zero when the headers name no usable wait.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("retry-after-ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return boundedWait(ms / 1000)
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s > 0 {
			return boundedWait(s)
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), MaxRetryAfter)
	}
	return 0
}

// boundedWait converts seconds to a Duration in [0, MaxRetryAfter],
// without overflow; NaN is zero.
func boundedWait(s float64) time.Duration {
	switch {
	case !(s > 0): // also NaN
		return 0
	case s >= MaxRetryAfter.Seconds():
		return MaxRetryAfter
	}
	return time.Duration(s * float64(time.Second))
}

// Truncate cuts s to at most n bytes (plus "…"), never inside a character.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // never cut a character in two
	}
	return s[:n] + "…"
}
