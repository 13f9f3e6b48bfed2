package endpoint

import (
	"encoding/json"
	"fmt"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

// Embeddings is POST /embeddings
// (https://platform.openai.com/docs/api-reference/embeddings/create):
// "input" (a string, an array of strings, an array of token ids or an
// array of such arrays) in, {"object":"list","data":[{"object":"embedding",
// "index":0,"embedding":[...]}],"usage":{"prompt_tokens","total_tokens"}}
// out. It does not stream.
type Embeddings struct{}

func init() { Register(Embeddings{}) }

// Path implements Endpoint.
func (Embeddings) Path() string { return "/embeddings" }

// Validate implements Endpoint: "input" is required: a non-empty string,
// or a non-empty array of non-empty strings, of token ids, or of non-empty
// arrays of token ids.
func (Embeddings) Validate(fields []jsonobj.Field, path string) error {
	in, err := required(fields, path, "input")
	if err != nil {
		return err
	}
	return validateTextInput(in, jsonobj.Join(path, "input"), true)
}

// validateTextInput checks an input that is text (embeddings,
// moderations) or, with tokens, token ids.
func validateTextInput(raw json.RawMessage, path string, tokens bool) error {
	return stringOrArray(raw, path, "", func(it json.RawMessage, p string) error {
		switch k := jsonobj.KindOf(it); {
		case k == "string":
			_, err := jsonobj.NonEmptyString(it, p)
			return err
		case tokens && k == "number":
		case tokens && k == "array":
			var ids []json.Number
			if err := json.Unmarshal(it, &ids); err != nil || len(ids) == 0 {
				return jsonobj.Invalidf(p, "must be a non-empty array of token ids")
			}
		case !tokens && k == "object": // multi-modal moderation inputs
		default:
			return jsonobj.Invalidf(p, "must be a string, got %s", k)
		}
		return nil
	})
}

// Simple implements Endpoint: the prompt becomes "input"; a system text
// has no place.
func (Embeddings) Simple(prompt, system json.RawMessage) ([]jsonobj.Field, error) {
	return noSystem("input", "/v1/embeddings", prompt, system)
}

// Estimate implements Endpoint: the input's characters / 4 (a token id
// counts one); nothing is generated.
func (Embeddings) Estimate(body []byte) Estimate { return inputEstimate(body) }

// inputEstimate is the estimate of an endpoint that reads "input" and
// generates nothing.
func inputEstimate(body []byte) Estimate {
	var req struct {
		Input json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return Estimate{Input: len(body) / 4, Choices: 1, NoOutput: true}
	}
	return Estimate{Input: textTokens(inputChars(req.Input)), Choices: 1, NoOutput: true}
}

// Usage implements Endpoint: prompt_tokens and total_tokens.
func (Embeddings) Usage(answer []byte) (Usage, bool) {
	var v struct {
		Usage *struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(answer, &v) != nil || v.Usage == nil {
		return Usage{}, false
	}
	return splitUsage(v.Usage.PromptTokens, 0, v.Usage.TotalTokens, 0), true
}

// Check implements Endpoint
// (https://platform.openai.com/docs/api-reference/embeddings/object): a
// JSON object with no error and a non-empty "data" array whose elements
// each carry an "embedding" (an array of numbers, or a base64 string with
// encoding_format base64).
func (Embeddings) Check(answer []byte) error {
	if err := errorMember(answer); err != nil {
		return err
	}
	var a struct {
		Data []struct {
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return fmt.Errorf("%w: the answer is not an embedding list: %v", api.ErrMalformed, err)
	}
	if len(a.Data) == 0 {
		return fmt.Errorf("%w: the answer has no data", api.ErrMalformed)
	}
	for i, d := range a.Data {
		if k := jsonobj.KindOf(d.Embedding); k != "array" && k != "string" {
			return fmt.Errorf("%w: data %d has no embedding", api.ErrMalformed, i)
		}
	}
	return nil
}
