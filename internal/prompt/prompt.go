// Package prompt parses and validates one prompt record value, the input
// of a sluice batch, and turns it into the JSON body to POST to an
// OpenAI-compatible /chat/completions endpoint.
//
// The same validator runs in the consumer and in the client library that
// submits prompts, so a value that passes [Validate] on the client is
// accepted by the consumer (given the consumer's default model).
//
// # Input shapes
//
// A record value is a JSON object in one of three shapes, detected in this
// order:
//
//  1. [ShapeBatch], an OpenAI Batch API line, when the object has "body",
//     "url" or "method":
//     {"custom_id":"r-1","method":"POST","url":"/v1/chat/completions","body":{...}}
//     "url" is required and must be "/v1/chat/completions" or
//     "/chat/completions" (anything else is [ErrUnsupportedURL]); "method",
//     if present, must be "POST"; "body" is required and is validated as a
//     chat body (shape 2). No other top-level members are allowed.
//  2. [ShapeChat], a bare chat-completions body, when the object has
//     "messages": {"custom_id":"r-1","model":"m","messages":[...],...}
//  3. [ShapeSimple], when the object has "prompt":
//     {"custom_id":"r-1","prompt":"text","system":"optional","model":"m",...}
//     It becomes {"model":M,"messages":[{"role":"system","content":S},
//     {"role":"user","content":P}],...}. The "messages" member takes the
//     place of "prompt"; an empty "system" adds no system message; every
//     other member (max_tokens, temperature, ...) passes through.
//
// # Passthrough
//
// The output body is the input object with "custom_id" removed (and, for
// the simple shape, "prompt"/"system" replaced by "messages"). Every other
// member is copied byte for byte: member names keep their spelling and
// order, values keep their whitespace, number spelling (1e400,
// 12345678901234567890) and string escapes. Only the top level (and, for
// validation, each message) is walked; nested values are never decoded and
// re-encoded, so provider-specific parameters reach the API exactly as
// submitted. Whitespace between top-level members is dropped.
//
// When the body has no "model", "model":DefaultModel is inserted as the
// first member.
//
// # Strictness
//
// A value is rejected with [ErrInvalidInput] when it is empty, larger
// than Options.MaxValueBytes, not valid UTF-8, not valid JSON, not an
// object, followed by trailing data, or has duplicate member names at the
// top level, in a batch "body", in a message or in a content part (JSON
// parsers disagree on which duplicate wins). Deeper duplicates are passed
// through untouched. Error messages name the offending field, e.g.
// "invalid input: messages[2].role: must be a string, got number", and
// never contain prompt text.
//
// # Usage
//
//	req, err := prompt.Parse(record.Value, prompt.Options{
//		DefaultModel:  cfg.Model,
//		FallbackID:    fmt.Sprintf("%s-%d-%d", record.Topic, record.Partition, record.Offset),
//		MaxValueBytes: 1 << 20,
//	})
//	switch {
//	case errors.Is(err, prompt.ErrInvalidInput):
//		// Not retryable: publish an error result for this record.
//	case err == nil:
//		// POST req.Body to <base>/chat/completions; key the result by req.CustomID.
//	}
package prompt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

var (
	// ErrInvalidInput is wrapped by every error Parse and Validate return.
	// The wrapping message names the offending field precisely.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnsupportedURL is wrapped (together with ErrInvalidInput) when a
	// batch line targets an endpoint other than chat completions, e.g.
	// "/v1/embeddings".
	ErrUnsupportedURL = errors.New("unsupported url")
)

// Shape is the input shape a value was recognized as.
type Shape int

const (
	// ShapeUnknown is the zero Shape; Parse never returns it with a nil
	// error.
	ShapeUnknown Shape = iota
	// ShapeBatch is an OpenAI Batch API line (custom_id, method, url, body).
	ShapeBatch
	// ShapeChat is a bare chat-completions body with "messages".
	ShapeChat
	// ShapeSimple is {"prompt": ..., "system": ...}.
	ShapeSimple
)

// String returns "batch", "chat", "simple" or "unknown".
func (s Shape) String() string {
	switch s {
	case ShapeBatch:
		return "batch"
	case ShapeChat:
		return "chat"
	case ShapeSimple:
		return "simple"
	case ShapeUnknown:
		return "unknown"
	}
	return fmt.Sprintf("Shape(%d)", int(s))
}

// Request is a parsed, validated prompt record.
type Request struct {
	// CustomID is the value's custom_id, or Options.FallbackID when the
	// value has none (then it may be empty if FallbackID is empty).
	CustomID string
	// Model is the effective model: the body's "model", else
	// Options.DefaultModel.
	Model string
	// Body is the JSON object to POST to /chat/completions. It always
	// has "messages" and "model" and never a top-level "custom_id".
	Body []byte
	// Stream reports whether the body has "stream": true.
	Stream bool
	// Shape is the input shape the value was recognized as.
	Shape Shape
}

// Options configure Parse.
type Options struct {
	// DefaultModel is inserted as "model" when the body has none. If it
	// is empty, a body without "model" is rejected.
	DefaultModel string
	// FallbackID is used as Request.CustomID when the value has no
	// custom_id. Callers pass the record's custom_id header, or
	// "<topic>-<partition>-<offset>".
	FallbackID string
	// MaxValueBytes rejects values longer than this many bytes; 0 means
	// no limit.
	MaxValueBytes int
}

// Batch API URLs that sluice serves.
var supportedURLs = map[string]bool{
	"/v1/chat/completions": true,
	"/chat/completions":    true,
}

// Parse validates value and builds the request body for it. Every error it
// returns wraps ErrInvalidInput; an unsupported batch url also wraps
// ErrUnsupportedURL.
func Parse(value []byte, opts Options) (Request, error) {
	return parse(value, opts, true)
}

// Validate reports whether value is a valid prompt record, for client-side
// checks before submitting. It applies Parse's rules with no size limit and
// no fallback id. Unlike Parse with empty Options, a value without "model"
// is accepted, because the consumer supplies its configured default model;
// a "model" that is present must still be a non-empty string.
func Validate(value []byte) error {
	_, err := parse(value, Options{}, false)
	return err
}

// parse is Parse; requireModel is false for Validate, which accepts a
// missing model when no default is known.
func parse(value []byte, opts Options, requireModel bool) (Request, error) {
	if opts.MaxValueBytes > 0 && len(value) > opts.MaxValueBytes {
		return Request{}, invalidf("", "value is %d bytes, over the limit of %d", len(value), opts.MaxValueBytes)
	}
	if len(bytes.TrimSpace(value)) == 0 {
		return Request{}, invalidf("", "value is empty")
	}
	if !utf8.Valid(value) {
		return Request{}, invalidf("", "value is not valid UTF-8")
	}
	if !json.Valid(value) {
		var v json.RawMessage
		err := json.Unmarshal(value, &v)
		if err == nil { // cannot happen: json.Valid and Unmarshal agree
			err = errors.New("invalid")
		}
		return Request{}, invalidf("", "value is %s", syntaxErr(err))
	}
	if k := kindOf(value); k != "object" {
		return Request{}, invalidf("", "value must be a JSON object, got %s", k)
	}
	fields, err := readObject(value)
	if err != nil {
		return Request{}, invalidf("", "value: %s", err)
	}

	has := func(k string) bool { _, ok := lookup(fields, k); return ok }
	var req Request
	switch {
	case has("body") || has("url") || has("method"):
		req, err = parseBatch(fields, opts, requireModel)
	case has("messages"):
		req, err = parseChat(fields, "", opts, requireModel)
	case has("prompt"):
		req, err = parseSimple(fields, opts, requireModel)
	default:
		return Request{}, invalidf("", `value has none of "messages", "prompt" or "body"; cannot tell its shape`)
	}
	if err != nil {
		return Request{}, err
	}
	if req.CustomID == "" {
		req.CustomID = opts.FallbackID
	}
	return req, nil
}

// parseBatch handles {"custom_id","method","url","body"}.
func parseBatch(fields []field, opts Options, requireModel bool) (Request, error) {
	var customID string
	for _, f := range fields {
		switch f.Key {
		case "custom_id":
			id, err := nonEmptyString(f.Value, "custom_id")
			if err != nil {
				return Request{}, err
			}
			customID = id
		case "method", "url", "body":
		default:
			return Request{}, invalidf("", "unexpected member %s in a batch line (allowed: custom_id, method, url, body)", quoteTrunc(f.Key))
		}
	}
	if raw, ok := lookup(fields, "method"); ok {
		m, err := stringValue(raw, "method")
		if err != nil {
			return Request{}, err
		}
		if m != "POST" {
			return Request{}, invalidf("method", `must be "POST", got %s`, quoteTrunc(m))
		}
	}
	rawURL, ok := lookup(fields, "url")
	if !ok {
		return Request{}, invalidf("url", "required in a batch line")
	}
	u, err := stringValue(rawURL, "url")
	if err != nil {
		return Request{}, err
	}
	if !supportedURLs[u] {
		return Request{}, fmt.Errorf(`%w: %w: url: %s (want "/v1/chat/completions" or "/chat/completions")`,
			ErrInvalidInput, ErrUnsupportedURL, quoteTrunc(u))
	}
	rawBody, ok := lookup(fields, "body")
	if !ok {
		return Request{}, invalidf("body", "required in a batch line")
	}
	if k := kindOf(rawBody); k != "object" {
		return Request{}, invalidf("body", "must be an object, got %s", k)
	}
	bodyFields, err := readObject(rawBody)
	if err != nil {
		return Request{}, invalidf("body", "%s", err)
	}
	req, err := parseChat(bodyFields, "body", opts, requireModel)
	if err != nil {
		return Request{}, err
	}
	// A custom_id inside the body is dropped like any other; it may
	// stand in for a missing top-level one but must not contradict it.
	if customID != "" {
		if req.CustomID != "" && req.CustomID != customID {
			return Request{}, invalidf("body.custom_id", "differs from the top-level custom_id")
		}
		req.CustomID = customID
	}
	req.Shape = ShapeBatch
	return req, nil
}

// parseChat handles a chat-completions body (the whole value, or a batch
// line's "body" when path is "body").
func parseChat(fields []field, path string, opts Options, requireModel bool) (Request, error) {
	req := Request{Shape: ShapeChat}
	out := make([]field, 0, len(fields)+1)
	hasModel, hasMessages := false, false
	for _, f := range fields {
		p := join(path, f.Key)
		switch f.Key {
		case "custom_id":
			id, err := nonEmptyString(f.Value, p)
			if err != nil {
				return Request{}, err
			}
			req.CustomID = id
			continue // never sent to the API
		case "model":
			m, err := nonEmptyString(f.Value, p)
			if err != nil {
				return Request{}, err
			}
			req.Model, hasModel = m, true
		case "stream":
			s, err := boolValue(f.Value, p)
			if err != nil {
				return Request{}, err
			}
			req.Stream = s
		case "messages":
			if err := validateMessages(f.Value, p); err != nil {
				return Request{}, err
			}
			hasMessages = true
		}
		out = append(out, f)
	}
	if !hasMessages {
		return Request{}, invalidf(join(path, "messages"), "required")
	}
	out, err := withModel(out, &req, hasModel, path, opts, requireModel)
	if err != nil {
		return Request{}, err
	}
	req.Body = appendObject(nil, out)
	return req, nil
}

// parseSimple handles {"prompt","system",...}.
func parseSimple(fields []field, opts Options, requireModel bool) (Request, error) {
	req := Request{Shape: ShapeSimple}
	var rawSystem json.RawMessage
	for _, f := range fields {
		if f.Key != "system" {
			continue
		}
		s, err := stringValue(f.Value, "system")
		if err != nil {
			return Request{}, err
		}
		if s != "" {
			rawSystem = f.Value
		}
	}
	out := make([]field, 0, len(fields)+1)
	hasModel := false
	for _, f := range fields {
		switch f.Key {
		case "custom_id":
			id, err := nonEmptyString(f.Value, "custom_id")
			if err != nil {
				return Request{}, err
			}
			req.CustomID = id
			continue
		case "system":
			continue // folded into messages
		case "prompt":
			if _, err := nonEmptyString(f.Value, "prompt"); err != nil {
				return Request{}, err
			}
			// The prompt and system strings are copied raw, escapes
			// and all, into the message contents.
			var msgs []byte
			msgs = append(msgs, '[')
			if rawSystem != nil {
				msgs = append(msgs, `{"role":"system","content":`...)
				msgs = append(msgs, rawSystem...)
				msgs = append(msgs, "},"...)
			}
			msgs = append(msgs, `{"role":"user","content":`...)
			msgs = append(msgs, f.Value...)
			msgs = append(msgs, "}]"...)
			f = newField("messages", msgs)
		case "model":
			m, err := nonEmptyString(f.Value, "model")
			if err != nil {
				return Request{}, err
			}
			req.Model, hasModel = m, true
		case "stream":
			s, err := boolValue(f.Value, "stream")
			if err != nil {
				return Request{}, err
			}
			req.Stream = s
		}
		out = append(out, f)
	}
	out, err := withModel(out, &req, hasModel, "", opts, requireModel)
	if err != nil {
		return Request{}, err
	}
	req.Body = appendObject(nil, out)
	return req, nil
}

// withModel inserts "model":DefaultModel as the first member when the body
// has no model.
func withModel(out []field, req *Request, hasModel bool, path string, opts Options, requireModel bool) ([]field, error) {
	if hasModel {
		return out, nil
	}
	if opts.DefaultModel == "" {
		if requireModel {
			return nil, invalidf(join(path, "model"), "required: the value has none and no default model is configured")
		}
		return out, nil
	}
	raw := encodeString(opts.DefaultModel)
	// Report the model as the API will see it: encoding replaces
	// invalid UTF-8 in DefaultModel with U+FFFD.
	req.Model = opts.DefaultModel
	if !utf8.ValidString(req.Model) {
		_ = json.Unmarshal(raw, &req.Model)
	}
	return append([]field{newField("model", raw)}, out...), nil
}
