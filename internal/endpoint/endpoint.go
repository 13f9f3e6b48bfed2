// Package endpoint is what sluice knows of each API endpoint it serves, one
// file each: chat.go (/chat/completions), responses.go (/responses),
// embeddings.go, completions.go and moderations.go. An Endpoint owns its
// path, the validation of a body and the mapping of the simple
// {"prompt"} shape, the token estimate before a call and the usage after
// it, what a 2xx answer must contain, and (a Streamer) how a streamed
// answer is assembled into the body a plain call returns.
//
// Adding an endpoint is one file: a type implementing Endpoint, registered
// in an init function.
//
//	func init() { endpoint.Register(myEndpoint{}) }
//
//	ep, ok := endpoint.Lookup("/v1/embeddings") // a Batch line's url
//	est := ep.Estimate(body)                     // before the call
//	err := ep.Check(answer)                      // a 2xx answer
//	u, ok := ep.Usage(answer)                    // what it cost
package endpoint

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

// Endpoint is one API endpoint. Its methods are safe for concurrent use.
type Endpoint interface {
	// Path is appended to the API base URL, e.g. "/responses"; a Batch
	// line's url selects it as "/v1"+Path or Path.
	Path() string
	// Validate checks the members of a body (the whole value, or a Batch
	// line's "body" when path is "body"); the parser has checked
	// custom_id, model and stream. Errors come from jsonobj.Invalidf and
	// name the member.
	Validate(fields []jsonobj.Field, path string) error
	// Simple returns the members that take the place of the simple
	// shape's "prompt": prompt is its raw JSON string, system the raw
	// "system" string or nil when absent or empty.
	Simple(prompt, system json.RawMessage) ([]jsonobj.Field, error)
	// Estimate is what the body is expected to cost, before the call. It
	// never fails: an unreadable body estimates as its length / 4.
	Estimate(body []byte) Estimate
	// Usage reads what an answer cost; false when it does not say.
	Usage(answer []byte) (Usage, bool)
	// Check reports whether a 2xx answer is a well-formed answer of the
	// endpoint; the error wraps api.ErrMalformed.
	Check(answer []byte) error
}

// Streamer is an Endpoint that can stream its answers.
type Streamer interface {
	Endpoint
	// StreamBody returns body asking for a streamed answer, edited in
	// place: every other byte as it was.
	StreamBody(body []byte) ([]byte, error)
	// NewAssembler returns the assembler of one streamed answer.
	NewAssembler() api.Assembler
}

// ModelOptional is implemented by an endpoint whose bodies may name no
// model (moderations: the provider picks one); the default model is then
// not inserted.
type ModelOptional interface{ ModelOptional() }

// Estimate is what one request is expected to cost before the call, the
// way the OpenAI cookbook's parallel processor counts: about four
// characters per input token, and the output's ceiling.
type Estimate struct {
	// Input is the input tokens.
	Input int
	// Reserved is the output ceiling the request sets (n x max_tokens,
	// max_output_tokens), 0 when it sets none: the provider may count it
	// against the budget whatever the answer's length.
	Reserved int
	// Choices is n, the answers asked for (1 unless chat's n > 1).
	Choices int
	// NoOutput is set for endpoints that generate no tokens
	// (embeddings, moderations): no output is guessed for them.
	NoOutput bool
}

// Usage is what an answer says it cost, in tokens.
type Usage struct {
	// Input is the prompt or input tokens.
	Input int
	// Output is the generated tokens, reasoning excluded.
	Output int
	// Reasoning is the reasoning tokens.
	Reasoning int
	// Total is the tokens charged: total_tokens where the answer has it.
	Total int
}

// Bounds of what a request or an answer can make an estimate or a usage:
// n is at most OpenAI's 128 choices, a ceiling at most MaxCeiling tokens,
// a usage figure at most MaxUsage; so no sum or product overflows,
// whatever the record or the provider says.
const (
	MaxChoices = 128
	MaxCeiling = 1 << 30
	MaxUsage   = 1 << 40
)

var (
	mu       sync.RWMutex
	registry = map[string]Endpoint{}
)

// Register adds e to the endpoints records may name. It panics when the
// path is not "/" followed by a name, or already taken: both are
// programming errors.
func Register(e Endpoint) {
	p := e.Path()
	if !strings.HasPrefix(p, "/") || len(p) < 2 || strings.HasPrefix(p, "/v1/") {
		panic(fmt.Sprintf("endpoint: path %q must start with / and not with /v1/", p))
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[p]; dup {
		panic(fmt.Sprintf("endpoint: %s registered twice", p))
	}
	registry[p] = e
}

// Lookup returns the endpoint of a Batch line's url ("/v1/responses" or
// "/responses").
func Lookup(url string) (Endpoint, bool) {
	mu.RLock()
	defer mu.RUnlock()
	if e, ok := registry[strings.TrimPrefix(url, "/v1")]; ok && strings.HasPrefix(url, "/") {
		return e, true
	}
	return nil, false
}

// URLs returns the Batch urls of every endpoint ("/v1"+Path), sorted.
func URLs() []string {
	mu.RLock()
	defer mu.RUnlock()
	var out []string
	for _, p := range slices.Sorted(maps.Keys(registry)) {
		out = append(out, "/v1"+p)
	}
	return out
}

// bound clamps a figure of an answer to [0, MaxUsage].
func bound(n int) int { return min(max(n, 0), MaxUsage) }

// textTokens estimates the tokens of n characters: about four each.
func textTokens(chars int) int { return (chars + 3) / 4 }

// inputChars counts the characters of an input value: a string, an array
// of strings, or of token ids (each counted as four characters: one
// token), or of arrays of them, or of objects whose "text" or "content"
// is counted. A value it cannot read counts as its length.
func inputChars(raw json.RawMessage) int {
	if jsonobj.IsNull(raw) {
		return 0
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return utf8.RuneCountInString(s)
	}
	var n float64
	if json.Unmarshal(raw, &n) == nil {
		return 4 // one token id
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) == nil {
		total := 0
		for _, it := range items {
			total += inputChars(it)
		}
		return total
	}
	var o struct {
		Text    json.RawMessage `json:"text"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil {
		return inputChars(o.Text) + inputChars(o.Content)
	}
	return len(raw)
}

// errorMember checks a 2xx answer for a non-null "error" member.
func errorMember(answer []byte) error {
	var a struct {
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return fmt.Errorf("%w: the answer is not a JSON object", api.ErrMalformed)
	}
	if !jsonobj.IsNull(a.Error) {
		return api.ErrorObject(a.Error)
	}
	return nil
}

// noSystem is the Simple mapping of endpoints whose input is the prompt
// alone: prompt becomes member key, and a system text is refused.
func noSystem(key, path string, prompt, system json.RawMessage) ([]jsonobj.Field, error) {
	if system != nil {
		return nil, jsonobj.Invalidf("system", "%s has no place for a system text", path)
	}
	return []jsonobj.Field{jsonobj.NewField(key, prompt)}, nil
}

// required checks that fields has key.
func required(fields []jsonobj.Field, path, key string) (json.RawMessage, error) {
	v, ok := jsonobj.Lookup(fields, key)
	if !ok {
		return nil, jsonobj.Invalidf(jsonobj.Join(path, key), "required")
	}
	return v, nil
}

// stringOrArray checks an input that is a non-empty string or a non-empty
// array, each element checked by item with its path (embeddings',
// moderations' and completions' text, Responses' input items); of names
// what the array holds, for the error ("" for nothing said).
func stringOrArray(raw json.RawMessage, path, of string, item func(it json.RawMessage, path string) error) error {
	switch jsonobj.KindOf(raw) {
	case "string":
		_, err := jsonobj.NonEmptyString(raw, path)
		return err
	case "array":
	default:
		return jsonobj.Invalidf(path, "must be a string or an array%s, got %s", of, jsonobj.KindOf(raw))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return jsonobj.Invalidf(path, "%s", jsonobj.SyntaxErr(err))
	}
	if len(items) == 0 {
		return jsonobj.Invalidf(path, "must not be empty")
	}
	for i, it := range items {
		if err := item(it, jsonobj.Index(path, i)); err != nil {
			return err
		}
	}
	return nil
}
