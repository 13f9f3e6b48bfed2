// Package record is sluice's record contract, what teams produce and read
// on Kafka: the input shapes of a prompt record (Parse, Validate), the
// result record (Result) and the error codes of failed records, and the
// headers sluice adds. Producers validate with it, the consumer parses
// with it, result readers decode with it.
//
// # Input shapes
//
// A record value is a JSON object in one of three shapes, detected in this
// order:
//
//  1. [ShapeBatch], an OpenAI Batch API line, when the object has "body",
//     "url" or "method":
//     {"custom_id":"r-1","method":"POST","url":"/v1/responses","body":{...}}
//     "url" picks the endpoint: "/v1/chat/completions", "/v1/responses",
//     "/v1/embeddings", "/v1/completions" or "/v1/moderations" (each also
//     without "/v1"); anything else is [ErrUnsupportedURL]. "method", if
//     present, must be "POST"; "body" is required and is validated as a
//     body of that endpoint. No other top-level members are allowed.
//  2. [ShapeBody], a bare body of the default endpoint, when the object
//     has "messages" or "input": {"custom_id":"r-1","model":"m",
//     "messages":[...],...}.
//  3. [ShapeSimple], when the object has "prompt":
//     {"custom_id":"r-1","prompt":"text","system":"optional","model":"m",...}
//     It is sent to the default endpoint (Options.Endpoint,
//     SLUICE_ENDPOINT), "prompt" and "system" mapped to its members: for
//     chat, {"messages":[{"role":"system","content":S},{"role":"user",
//     "content":P}]}; for responses, "instructions":S and "input":P; for
//     embeddings and moderations, "input":P (a system text is refused);
//     for legacy completions "prompt" stays. The new members take the
//     place of "prompt"; an empty "system" is dropped; every other member
//     (max_tokens, temperature, ...) passes through.
//
// # Passthrough
//
// The output body is the input object with "custom_id" removed (and, for
// the simple shape, "prompt"/"system" replaced). Every other member is
// copied byte for byte: member names keep their spelling and order, values
// keep their whitespace, number spelling (1e400, 12345678901234567890) and
// string escapes. Only the top level (and, for validation, the members an
// endpoint checks) is walked; nested values are never decoded and
// re-encoded, so provider-specific parameters reach the API exactly as
// submitted. A body that needs no edit (a Batch line's or a bare body
// with a "model" and no "custom_id") is sent as it came, byte for byte;
// an edited one loses the whitespace between its top-level members.
//
// When the body has no "model", "model":DefaultModel is inserted as the
// first member (not for moderations, whose model is optional).
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
//	req, err := record.Parse(rec.Value, record.Options{
//		DefaultModel:  cfg.Model,
//		FallbackID:    fmt.Sprintf("%s-%d-%d", rec.Topic, rec.Partition, rec.Offset),
//		MaxValueBytes: 1 << 20,
//	})
//	switch {
//	case errors.Is(err, record.ErrInvalidInput):
//		// Not retryable: publish an error result for this record.
//	case err == nil:
//		// POST req.Body to <base>req.URL minus "/v1"; key the result by req.CustomID.
//	}
//
// Reading results:
//
//	var r record.Result
//	if err := json.Unmarshal(rec.Value, &r); err != nil { ... }
//	if r.Error != nil && r.Error.Code == record.CodeInvalidInput { ... }
package record

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

var (
	// ErrInvalidInput is wrapped by every error Parse and Validate return.
	// The wrapping message names the offending field precisely.
	ErrInvalidInput = jsonobj.ErrInvalidInput
	// ErrUnsupportedURL is wrapped (together with ErrInvalidInput) when a
	// batch line targets an endpoint sluice does not serve, e.g.
	// "/v1/images/generations".
	ErrUnsupportedURL = errors.New("unsupported url")
)

// DefaultEndpoint is Options.Endpoint when it is empty.
const DefaultEndpoint = "/v1/chat/completions"

// Endpoints returns the Batch urls sluice serves, sorted:
// "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
// "/v1/moderations", "/v1/responses".
func Endpoints() []string { return endpoint.URLs() }

// SupportedEndpoint reports whether url is a Batch url sluice serves, with
// or without "/v1".
func SupportedEndpoint(url string) bool {
	_, ok := endpoint.Lookup(url)
	return ok
}

// Shape is the input shape a value was recognized as.
type Shape int

const (
	// ShapeUnknown is the zero Shape; Parse never returns it with a nil
	// error.
	ShapeUnknown Shape = iota
	// ShapeBatch is an OpenAI Batch API line (custom_id, method, url, body).
	ShapeBatch
	// ShapeBody is a bare body of the default endpoint ("messages" or
	// "input").
	ShapeBody
	// ShapeSimple is {"prompt": ..., "system": ...}.
	ShapeSimple
)

// String returns "batch", "body", "simple" or "unknown".
func (s Shape) String() string {
	switch s {
	case ShapeBatch:
		return "batch"
	case ShapeBody:
		return "body"
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
	// Options.DefaultModel ("" for a moderation that names none).
	Model string
	// URL is the endpoint's Batch url, e.g. "/v1/responses": the batch
	// line's (always with "/v1"), else Options.Endpoint.
	URL string
	// Body is the JSON object to POST to the endpoint. It has "model"
	// (unless the endpoint's model is optional) and never a top-level
	// "custom_id".
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
	// Endpoint is the Batch url of the endpoint that bare bodies and the
	// simple shape go to (SLUICE_ENDPOINT); "" is DefaultEndpoint. Parse
	// rejects one sluice does not serve with ErrUnsupportedURL.
	Endpoint string
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
		return Request{}, jsonobj.Invalidf("", "value is %d bytes, over the limit of %d", len(value), opts.MaxValueBytes)
	}
	if len(bytes.TrimSpace(value)) == 0 {
		return Request{}, jsonobj.Invalidf("", "value is empty")
	}
	if !utf8.Valid(value) {
		return Request{}, jsonobj.Invalidf("", "value is not valid UTF-8")
	}
	if !json.Valid(value) {
		var v json.RawMessage
		err := json.Unmarshal(value, &v)
		if err == nil { // cannot happen: json.Valid and Unmarshal agree
			err = errors.New("invalid")
		}
		return Request{}, jsonobj.Invalidf("", "value is %s", jsonobj.SyntaxErr(err))
	}
	if k := jsonobj.KindOf(value); k != "object" {
		return Request{}, jsonobj.Invalidf("", "value must be a JSON object, got %s", k)
	}
	fields, err := jsonobj.ReadObject(value)
	if err != nil {
		return Request{}, jsonobj.Invalidf("", "value: %s", err)
	}

	has := func(k string) bool { _, ok := jsonobj.Lookup(fields, k); return ok }
	var req Request
	switch {
	case has("body") || has("url") || has("method"):
		req, err = parseBatch(fields, opts, requireModel)
	case has("messages") || has("input"):
		var ep endpoint.Endpoint
		if ep, req.URL, err = defaultEndpoint(opts); err == nil {
			req, err = parseBody(ep, req.URL, bytes.TrimSpace(value), fields, "", opts, requireModel)
		}
	case has("prompt"):
		req, err = parseSimple(fields, opts, requireModel)
	default:
		return Request{}, jsonobj.Invalidf("", `value has none of "messages", "input", "prompt" or "body"; cannot tell its shape`)
	}
	if err != nil {
		return Request{}, err
	}
	if req.CustomID == "" {
		req.CustomID = opts.FallbackID
	}
	return req, nil
}

// defaultEndpoint is the endpoint of Options.Endpoint and its Batch url.
func defaultEndpoint(opts Options) (endpoint.Endpoint, string, error) {
	url := cmp.Or(opts.Endpoint, DefaultEndpoint)
	ep, ok := endpoint.Lookup(url)
	if !ok {
		return nil, "", unsupported("the default endpoint", url)
	}
	return ep, "/v1" + ep.Path(), nil
}

// unsupported is the error of a url sluice does not serve.
func unsupported(what, url string) error {
	return fmt.Errorf(`%w: %w: %s: %s (want one of %s)`, ErrInvalidInput, ErrUnsupportedURL, what,
		jsonobj.QuoteTrunc(url), strings.Join(endpoint.URLs(), ", "))
}

// parseBatch handles {"custom_id","method","url","body"}.
func parseBatch(fields []jsonobj.Field, opts Options, requireModel bool) (Request, error) {
	var customID string
	for _, f := range fields {
		switch f.Key {
		case "custom_id":
			id, err := jsonobj.NonEmptyString(f.Value, "custom_id")
			if err != nil {
				return Request{}, err
			}
			customID = id
		case "method", "url", "body":
		default:
			return Request{}, jsonobj.Invalidf("", "unexpected member %s in a batch line (allowed: custom_id, method, url, body)", jsonobj.QuoteTrunc(f.Key))
		}
	}
	if raw, ok := jsonobj.Lookup(fields, "method"); ok {
		m, err := jsonobj.StringValue(raw, "method")
		if err != nil {
			return Request{}, err
		}
		if m != "POST" {
			return Request{}, jsonobj.Invalidf("method", `must be "POST", got %s`, jsonobj.QuoteTrunc(m))
		}
	}
	rawURL, ok := jsonobj.Lookup(fields, "url")
	if !ok {
		return Request{}, jsonobj.Invalidf("url", "required in a batch line")
	}
	u, err := jsonobj.StringValue(rawURL, "url")
	if err != nil {
		return Request{}, err
	}
	ep, ok := endpoint.Lookup(u)
	if !ok {
		return Request{}, unsupported("url", u)
	}
	rawBody, ok := jsonobj.Lookup(fields, "body")
	if !ok {
		return Request{}, jsonobj.Invalidf("body", "required in a batch line")
	}
	if k := jsonobj.KindOf(rawBody); k != "object" {
		return Request{}, jsonobj.Invalidf("body", "must be an object, got %s", k)
	}
	bodyFields, err := jsonobj.ReadObject(rawBody)
	if err != nil {
		return Request{}, jsonobj.Invalidf("body", "%s", err)
	}
	req, err := parseBody(ep, "/v1"+ep.Path(), rawBody, bodyFields, "body", opts, requireModel)
	if err != nil {
		return Request{}, err
	}
	// A custom_id inside the body is dropped like any other; it may
	// stand in for a missing top-level one but must not contradict it.
	if customID != "" {
		if req.CustomID != "" && req.CustomID != customID {
			return Request{}, jsonobj.Invalidf("body.custom_id", "differs from the top-level custom_id")
		}
		req.CustomID = customID
	}
	req.Shape = ShapeBatch
	return req, nil
}

// parseBody handles a body of endpoint ep (the whole value, or a batch
// line's "body" when path is "body"): custom_id, model and stream here,
// the rest by the endpoint.
// raw is the body's bytes, sent as they are when nothing is edited; nil
// when the fields are not a received object's (the simple shape).
func parseBody(ep endpoint.Endpoint, url string, raw []byte, fields []jsonobj.Field, path string, opts Options, requireModel bool) (Request, error) {
	req := Request{Shape: ShapeBody, URL: url}
	out := make([]jsonobj.Field, 0, len(fields)+1)
	hasModel := false
	for _, f := range fields {
		p := jsonobj.Join(path, f.Key)
		switch f.Key {
		case "custom_id":
			id, err := jsonobj.NonEmptyString(f.Value, p)
			if err != nil {
				return Request{}, err
			}
			req.CustomID = id
			continue // never sent to the API
		case "model":
			m, err := jsonobj.NonEmptyString(f.Value, p)
			if err != nil {
				return Request{}, err
			}
			req.Model, hasModel = m, true
		case "stream":
			s, err := jsonobj.BoolValue(f.Value, p)
			if err != nil {
				return Request{}, err
			}
			req.Stream = s
		}
		out = append(out, f)
	}
	if err := ep.Validate(out, path); err != nil {
		return Request{}, err
	}
	kept := len(out) // custom_id dropped when fewer than fields
	if _, optional := ep.(endpoint.ModelOptional); !optional {
		var err error
		if out, err = withModel(out, &req, hasModel, path, opts, requireModel); err != nil {
			return Request{}, err
		}
	}
	if raw != nil && kept == len(fields) && len(out) == kept {
		req.Body = raw
		return req, nil
	}
	req.Body = jsonobj.AppendObject(nil, out)
	return req, nil
}

// parseSimple handles {"prompt","system",...}: prompt and system become
// the default endpoint's members, and the body is validated as that
// endpoint's.
func parseSimple(fields []jsonobj.Field, opts Options, requireModel bool) (Request, error) {
	ep, url, err := defaultEndpoint(opts)
	if err != nil {
		return Request{}, err
	}
	var rawSystem json.RawMessage
	if v, ok := jsonobj.Lookup(fields, "system"); ok {
		s, err := jsonobj.StringValue(v, "system")
		if err != nil {
			return Request{}, err
		}
		if s != "" {
			rawSystem = v
		}
	}
	out := make([]jsonobj.Field, 0, len(fields)+1)
	for _, f := range fields {
		switch f.Key {
		case "system":
			continue // folded into the prompt's members
		case "prompt":
			mapped, err := ep.Simple(f.Value, rawSystem)
			if err != nil {
				return Request{}, err
			}
			if len(mapped) == 1 && mapped[0].Key == "prompt" {
				out = append(out, f) // the endpoint's own member (legacy completions): its to validate
				continue
			}
			if _, err := jsonobj.NonEmptyString(f.Value, "prompt"); err != nil {
				return Request{}, err
			}
			for _, m := range mapped {
				if m.Key != "prompt" && slices.ContainsFunc(fields, func(g jsonobj.Field) bool { return g.Key == m.Key }) {
					return Request{}, jsonobj.Invalidf(m.Key, "not allowed beside \"prompt\", which %s maps to it", url)
				}
			}
			out = append(out, mapped...)
			continue
		}
		out = append(out, f)
	}
	req, err := parseBody(ep, url, nil, out, "", opts, requireModel)
	if err != nil {
		return Request{}, err
	}
	req.Shape = ShapeSimple
	return req, nil
}

// withModel inserts "model":DefaultModel as the first member when the body
// has no model.
func withModel(out []jsonobj.Field, req *Request, hasModel bool, path string, opts Options, requireModel bool) ([]jsonobj.Field, error) {
	if hasModel {
		return out, nil
	}
	if opts.DefaultModel == "" {
		if requireModel {
			return nil, jsonobj.Invalidf(jsonobj.Join(path, "model"), "required: the value has none and no default model is configured")
		}
		return out, nil
	}
	raw := jsonobj.EncodeString(opts.DefaultModel)
	// Report the model as the API will see it: encoding replaces
	// invalid UTF-8 in DefaultModel with U+FFFD.
	req.Model = opts.DefaultModel
	if !utf8.ValidString(req.Model) {
		_ = json.Unmarshal(raw, &req.Model)
	}
	return append([]jsonobj.Field{jsonobj.NewField("model", raw)}, out...), nil
}
