package mockapi

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"unicode/utf8"
)

// embeddingDimensions is the length of a simulated embedding, unless the
// request asks for "dimensions".
const embeddingDimensions = 8

// embeddingsRoute is POST /embeddings
// (https://platform.openai.com/docs/api-reference/embeddings/create):
// deterministic unit vectors derived from each input, and usage
// prompt_tokens = ceil(chars/4) per input. Any model name is served.
var embeddingsRoute = route{
	parse:    parseEmbeddings,
	anyModel: true,
	plan:     inputPlan,
	answer:   embeddingList,
}

// parseEmbeddings validates an embeddings request: "input" is a string or
// a non-empty array of strings.
func parseEmbeddings(body []byte) (*parsedRequest, *apiError) {
	var req struct {
		Model      *string         `json:"model"`
		Input      json.RawMessage `json:"input"`
		Dimensions *int            `json:"dimensions"`
		Stream     bool            `json:"stream"`
	}
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, aerr
	}
	if aerr := needModel(req.Model); aerr != nil {
		return nil, aerr
	}
	p := &parsedRequest{model: *req.Model, dims: embeddingDimensions, stream: req.Stream}
	if !textInputs(req.Input, &p.inputs, false) {
		return nil, invalidRequest("input", "'input' must be a string or a non-empty array of strings.")
	}
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > 4096 {
			return nil, invalidRequest("dimensions", "'dimensions' must be in [1, 4096].")
		}
		p.dims = *req.Dimensions
	}
	return p, nil
}

// textInputs reads an "input" that is a string or a non-empty array of
// strings (or, with objects, of multi-modal input objects whose "text" is
// read) into out.
func textInputs(raw json.RawMessage, out *[]string, objects bool) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		*out = []string{one}
		return true
	}
	if json.Unmarshal(raw, out) == nil {
		return len(*out) > 0
	}
	if !objects {
		return false
	}
	var parts []contentPart
	if json.Unmarshal(raw, &parts) != nil || len(parts) == 0 {
		return false
	}
	*out = nil
	for _, pt := range parts {
		*out = append(*out, pt.Text)
	}
	return true
}

// inputPlan is the plan of an endpoint that generates nothing: its cost
// is its inputs, ceil(chars/4) tokens each.
func inputPlan(p *parsedRequest) *answerPlan {
	tokens := 0
	for _, in := range p.inputs {
		tokens += (utf8.RuneCountInString(in) + 3) / 4
	}
	return &answerPlan{promptTokens: tokens, budgetTokens: tokens}
}

// embeddingItem is one embedding of an embedding list.
type embeddingItem struct {
	Object    string    `json:"object"`
	Index     int       `json:"index"`
	Embedding []float64 `json:"embedding"`
}

// embeddingList is the answer of an embeddings request
// (https://platform.openai.com/docs/api-reference/embeddings/object).
func embeddingList(p *parsedRequest, a *answerPlan, _ string, _ int64) any {
	out := struct {
		Object string          `json:"object"`
		Data   []embeddingItem `json:"data"`
		Model  string          `json:"model"`
		Usage  struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}{Object: "list", Data: []embeddingItem{}, Model: p.model}
	for i, in := range p.inputs {
		out.Data = append(out.Data, embeddingItem{Object: "embedding", Index: i, Embedding: embedding(p.model, in, p.dims)})
	}
	out.Usage.PromptTokens, out.Usage.TotalTokens = a.promptTokens, a.promptTokens
	return out
}

// embedding is a deterministic unit vector of dims components for text.
func embedding(model, text string, dims int) []float64 {
	v := make([]float64, dims)
	norm := 0.0
	for i := range v {
		h := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%s", model, i, text))
		x := float64(int32(binary.BigEndian.Uint32(h[:4]))) / math.MaxInt32
		v[i], norm = x, norm+x*x
	}
	norm = math.Sqrt(norm)
	for i := range v {
		v[i] = math.Round(v[i]/norm*1e6) / 1e6
	}
	return v
}
