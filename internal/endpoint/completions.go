package endpoint

import (
	"encoding/json"
	"fmt"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

// Completions is the legacy POST /completions
// (https://platform.openai.com/docs/api-reference/completions/create):
// "prompt" (a string, an array of strings, of token ids or of arrays of
// them) in, {"object":"text_completion","choices":[{"text",...}],
// "usage":{...}} out. sluice does not stream it: "stream": true is refused.
type Completions struct{}

func init() { Register(Completions{}) }

// Path implements Endpoint.
func (Completions) Path() string { return "/completions" }

// defaultCompletionMaxTokens is max_tokens when a legacy completion sets
// none (the API's documented default).
const defaultCompletionMaxTokens = 16

// Validate implements Endpoint: "prompt" is required, as for embeddings'
// input; "stream": true is refused (sluice does not assemble this
// endpoint's stream).
func (Completions) Validate(fields []jsonobj.Field, path string) error {
	p, err := required(fields, path, "prompt")
	if err != nil {
		return err
	}
	if err := validateTextInput(p, jsonobj.Join(path, "prompt"), true); err != nil {
		return err
	}
	if v, ok := jsonobj.Lookup(fields, "stream"); ok && string(v) == "true" {
		return jsonobj.Invalidf(jsonobj.Join(path, "stream"), "must not be true: sluice does not stream /v1/completions")
	}
	return nil
}

// Simple implements Endpoint: the simple shape's "prompt" is the
// endpoint's own; a system text has no place.
func (Completions) Simple(prompt, system json.RawMessage) ([]jsonobj.Field, error) {
	return noSystem("prompt", "/v1/completions", prompt, system)
}

// Estimate implements Endpoint: the prompt's characters / 4, and n x
// max_tokens (16 when unset, the API's default).
func (Completions) Estimate(body []byte) Estimate {
	var req struct {
		Prompt    json.RawMessage `json:"prompt"`
		MaxTokens *count          `json:"max_tokens"`
		N         *count          `json:"n"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return Estimate{Input: len(body) / 4, Choices: 1}
	}
	e := Estimate{Input: textTokens(inputChars(req.Prompt)), Choices: 1}
	if req.N != nil && *req.N > 1 {
		e.Choices = min(int(*req.N), MaxChoices)
	}
	ceiling := defaultCompletionMaxTokens
	if req.MaxTokens != nil && *req.MaxTokens > 0 {
		ceiling = min(int(*req.MaxTokens), MaxCeiling)
	}
	e.Reserved = e.Choices * ceiling
	return e
}

// Usage implements Endpoint: as chat's.
func (Completions) Usage(answer []byte) (Usage, bool) { return completionUsage(answer) }

// Check implements Endpoint
// (https://platform.openai.com/docs/api-reference/completions/object): a
// JSON object with no error and a non-empty "choices" array whose
// elements each have a string "text".
func (Completions) Check(answer []byte) error {
	if err := errorMember(answer); err != nil {
		return err
	}
	var a struct {
		Choices []struct {
			Text *string `json:"text"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return fmt.Errorf("%w: the answer is not a text_completion: %v", api.ErrMalformed, err)
	}
	if len(a.Choices) == 0 {
		return fmt.Errorf("%w: the answer has no choices", api.ErrMalformed)
	}
	for i, c := range a.Choices {
		if c.Text == nil {
			return fmt.Errorf("%w: choice %d has no text", api.ErrMalformed, i)
		}
	}
	return nil
}
