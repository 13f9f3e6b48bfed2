package mockapi

import (
	"crypto/sha256"
	"encoding/json"
	"math"
	"strings"
)

// defaultModerationModel is the model of a moderation request that names
// none, as OpenAI's.
const defaultModerationModel = "omni-moderation-latest"

// moderationCategories are OpenAI's moderation categories.
var moderationCategories = []string{
	"harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
	"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors",
	"violence", "violence/graphic",
}

// moderationsRoute is POST /moderations
// (https://platform.openai.com/docs/api-reference/moderations/create):
// one result per input, deterministic: a category scores 0.9 and is
// flagged when the input names it (e.g. "violence"), else a small score
// derived from the input. "model" is optional; any model name is served.
// The answer has no usage, as OpenAI's.
var moderationsRoute = route{
	parse:    parseModerations,
	anyModel: true,
	plan:     inputPlan,
	answer:   moderation,
}

// parseModerations validates a moderations request: "input" is a string,
// a non-empty array of strings or of multi-modal input objects.
func parseModerations(body []byte) (*parsedRequest, *apiError) {
	var req struct {
		Model  *string         `json:"model"`
		Input  json.RawMessage `json:"input"`
		Stream bool            `json:"stream"`
	}
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, aerr
	}
	p := &parsedRequest{model: defaultModerationModel, stream: req.Stream}
	if req.Model != nil && *req.Model != "" {
		p.model = *req.Model
	}
	if !textInputs(req.Input, &p.inputs, true) {
		return nil, invalidRequest("input", "'input' must be a string, or a non-empty array of strings or of input objects.")
	}
	return p, nil
}

// moderationResult is one result of a moderation.
type moderationResult struct {
	Flagged        bool               `json:"flagged"`
	Categories     map[string]bool    `json:"categories"`
	CategoryScores map[string]float64 `json:"category_scores"`
}

// moderation is the answer of a moderations request
// (https://platform.openai.com/docs/api-reference/moderations/object).
func moderation(p *parsedRequest, _ *answerPlan, id string, _ int64) any {
	out := struct {
		ID      string             `json:"id"`
		Model   string             `json:"model"`
		Results []moderationResult `json:"results"`
	}{ID: "modr-" + id, Model: p.model}
	for _, in := range p.inputs {
		lower := strings.ToLower(in)
		r := moderationResult{Categories: map[string]bool{}, CategoryScores: map[string]float64{}}
		for _, c := range moderationCategories {
			h := sha256.Sum256([]byte(c + "|" + in))
			score := math.Round(float64(h[0])/255*0.01*1e6) / 1e6 // [0, 0.01]
			if strings.Contains(lower, c) {
				score = 0.9
			}
			r.CategoryScores[c], r.Categories[c] = score, score >= 0.5
			r.Flagged = r.Flagged || score >= 0.5
		}
		out.Results = append(out.Results, r)
	}
	return out
}
