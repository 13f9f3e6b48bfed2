package endpoint

import (
	"encoding/json"
	"fmt"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

// Moderations is POST /moderations
// (https://platform.openai.com/docs/api-reference/moderations/create):
// "input" (a string, an array of strings or of multi-modal input objects)
// in, {"id","model","results":[{"flagged":...,"categories":{...},
// "category_scores":{...}}]} out, without usage. "model" is optional: the
// provider picks its default, so none is inserted. It does not stream.
type Moderations struct{}

func init() { Register(Moderations{}) }

// Path implements Endpoint.
func (Moderations) Path() string { return "/moderations" }

// ModelOptional implements ModelOptional.
func (Moderations) ModelOptional() {}

// Validate implements Endpoint: "input" is required: a non-empty string,
// or a non-empty array of non-empty strings or of input objects.
func (Moderations) Validate(fields []jsonobj.Field, path string) error {
	in, err := required(fields, path, "input")
	if err != nil {
		return err
	}
	return validateTextInput(in, jsonobj.Join(path, "input"), false)
}

// Simple implements Endpoint: the prompt becomes "input"; a system text
// has no place.
func (Moderations) Simple(prompt, system json.RawMessage) ([]jsonobj.Field, error) {
	return noSystem("input", "/v1/moderations", prompt, system)
}

// Estimate implements Endpoint: the input's characters / 4; nothing is
// generated.
func (Moderations) Estimate(body []byte) Estimate { return inputEstimate(body) }

// Usage implements Endpoint: a moderation answer says nothing of its cost
// (the estimate stays charged).
func (Moderations) Usage([]byte) (Usage, bool) { return Usage{}, false }

// Check implements Endpoint
// (https://platform.openai.com/docs/api-reference/moderations/object): a
// JSON object with no error and a non-empty "results" array of objects.
func (Moderations) Check(answer []byte) error {
	if err := errorMember(answer); err != nil {
		return err
	}
	var a struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return fmt.Errorf("%w: the answer is not a moderation: %v", api.ErrMalformed, err)
	}
	if len(a.Results) == 0 {
		return fmt.Errorf("%w: the answer has no results", api.ErrMalformed)
	}
	for i, r := range a.Results {
		if jsonobj.KindOf(r) != "object" {
			return fmt.Errorf("%w: result %d is not an object", api.ErrMalformed, i)
		}
	}
	return nil
}
