package endpoint_test

import (
	"encoding/json"
	"fmt"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/internal/jsonobj"
	"github.com/sluice-dev/sluice/record"
)

// tokenizeText is a toy endpoint, xAI's POST /v1/tokenize-text
// (https://docs.x.ai/docs/api-reference#tokenize-text): {"model","text"}
// in, {"token_ids":[{"token_id","string_token","token_bytes"}]} out. These
// few lines, in one file, are all it takes: Batch lines may name it, the
// simple shape can go to it (SLUICE_ENDPOINT), and the limiter and retries
// serve it like any other endpoint.
type tokenizeText struct{}

func init() { endpoint.Register(tokenizeText{}) }

func (tokenizeText) Path() string { return "/tokenize-text" }

// Validate: "text" is a non-empty string.
func (tokenizeText) Validate(fields []jsonobj.Field, path string) error {
	v, ok := jsonobj.Lookup(fields, "text")
	if !ok {
		return jsonobj.Invalidf(jsonobj.Join(path, "text"), "required")
	}
	_, err := jsonobj.NonEmptyString(v, jsonobj.Join(path, "text"))
	return err
}

// Simple: the prompt becomes "text".
func (tokenizeText) Simple(prompt, system json.RawMessage) ([]jsonobj.Field, error) {
	if system != nil {
		return nil, jsonobj.Invalidf("system", "/v1/tokenize-text has no place for a system text")
	}
	return []jsonobj.Field{jsonobj.NewField("text", prompt)}, nil
}

// Estimate: about a token per four bytes; nothing is generated.
func (tokenizeText) Estimate(body []byte) endpoint.Estimate {
	return endpoint.Estimate{Input: len(body) / 4, Choices: 1, NoOutput: true}
}

// Usage: the answer does not state one; the estimate stays charged.
func (tokenizeText) Usage([]byte) (endpoint.Usage, bool) { return endpoint.Usage{}, false }

// Check: a 2xx answer has a "token_ids" array.
func (tokenizeText) Check(answer []byte) error {
	var a struct {
		TokenIDs []json.RawMessage `json:"token_ids"`
	}
	if json.Unmarshal(answer, &a) != nil || a.TokenIDs == nil {
		return fmt.Errorf("%w: the answer has no token_ids", api.ErrMalformed)
	}
	return nil
}

// An endpoint is one file: a type implementing endpoint.Endpoint,
// registered in an init function (above). Records then reach it.
func Example_register() {
	ep, ok := endpoint.Lookup("/v1/tokenize-text")
	fmt.Println(ok, ep.Path())

	line := `{"custom_id":"t-1","method":"POST","url":"/v1/tokenize-text","body":{"model":"grok-4", "text":"Hello world!"}}`
	req, err := record.Parse([]byte(line), record.Options{})
	fmt.Println(req.URL, string(req.Body), err)

	req, err = record.Parse([]byte(`{"custom_id":"t-2","prompt":"Hi"}`), record.Options{DefaultModel: "grok-4", Endpoint: "/v1/tokenize-text"})
	fmt.Println(req.URL, string(req.Body), err)

	_, err = record.Parse([]byte(`{"custom_id":"t-3","method":"POST","url":"/v1/tokenize-text","body":{"model":"grok-4"}}`), record.Options{})
	fmt.Println(err)

	fmt.Println(ep.Check([]byte(`{"token_ids":[{"token_id":13902,"string_token":"Hello","token_bytes":[72,101,108,108,111]}]}`)))
	fmt.Println(ep.Check([]byte(`{"tokens":[]}`)))
	// Output:
	// true /tokenize-text
	// /v1/tokenize-text {"model":"grok-4", "text":"Hello world!"} <nil>
	// /v1/tokenize-text {"model":"grok-4","text":"Hi"} <nil>
	// invalid input: body.text: required
	// <nil>
	// api: malformed response: the answer has no token_ids
}
