package mockapi

import (
	"encoding/json"
	"strings"
)

// defaultCompletionMaxTokens is max_tokens of a legacy completion that
// sets none, the API's documented default.
const defaultCompletionMaxTokens = 16

// completionsRoute is the legacy POST /completions
// (https://platform.openai.com/docs/api-reference/completions/create): the
// same deterministic text as a chat completion whose one user message is
// the prompt, as a text_completion; streamed as data-only
// text_completion chunks and [DONE].
var completionsRoute = route{
	parse:  parseCompletions,
	answer: textCompletion,
	events: completionEvents,
	done:   "[DONE]",
}

// parseCompletions validates a legacy completions request: "prompt" is a
// string or a non-empty array of strings (read as one prompt, joined by
// newlines) or of token ids.
func parseCompletions(body []byte) (*parsedRequest, *apiError) {
	var req struct {
		Model         *string         `json:"model"`
		Prompt        json.RawMessage `json:"prompt"`
		MaxTokens     *int            `json:"max_tokens"`
		N             *int            `json:"n"`
		Stream        bool            `json:"stream"`
		StreamOptions *streamOptions  `json:"stream_options"`
	}
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, aerr
	}
	if aerr := needModel(req.Model); aerr != nil {
		return nil, aerr
	}
	p := &parsedRequest{model: *req.Model, n: 1, stream: req.Stream, maxTokens: defaultCompletionMaxTokens}
	var prompts []string
	var ids []json.Number
	switch {
	case textInputs(req.Prompt, &prompts, false):
	case json.Unmarshal(req.Prompt, &ids) == nil && len(ids) > 0:
		prompts = []string{strings.Repeat("tokn", len(ids))} // a token id counts as four characters
	default:
		return nil, invalidRequest("prompt", "'prompt' must be a string, or a non-empty array of strings or of token ids.")
	}
	p.roles, p.texts = []string{"user"}, []string{strings.Join(prompts, "\n")}
	if aerr := p.setMaxTokens("max_tokens", req.MaxTokens); aerr != nil {
		return nil, aerr
	}
	if aerr := p.setChoices(req.N, req.Stream, req.StreamOptions); aerr != nil {
		return nil, aerr
	}
	return p, nil
}

// textChoice is one choice of a text_completion.
type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// textCompletionObject is a text_completion
// (https://platform.openai.com/docs/api-reference/completions/object), or
// one chunk of a streamed one.
type textCompletionObject struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []textChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"`
}

// textCompletion is the plain answer: the reasoning of a reasoning model
// is counted in usage, not shown.
func textCompletion(p *parsedRequest, a *answerPlan, id string, created int64) any {
	c := &textCompletionObject{ID: "cmpl-" + id, Object: "text_completion", Created: created, Model: p.model, Usage: a.usage()}
	for i, ch := range a.choices {
		c.Choices = append(c.Choices, textChoice{Text: ch.content, Index: i, FinishReason: &ch.finishReason})
	}
	return c
}

// completionEvents is a streamed text_completion: text deltas per choice,
// a last chunk per choice with its finish_reason, and with
// stream_options.include_usage a usage chunk with no choices.
func completionEvents(p *parsedRequest, a *answerPlan, id string, created int64) []outEvent {
	mk := func(choices []textChoice, u *usage) outEvent {
		return outEvent{data: textCompletionObject{ID: "cmpl-" + id, Object: "text_completion", Created: created,
			Model: p.model, Choices: choices, Usage: u}}
	}
	var evs []outEvent
	for i, c := range a.choices {
		for _, t := range splitDeltas(c.content, wordsPerDelta) {
			ev := mk([]textChoice{{Text: t, Index: i}}, nil)
			ev.tokens = len(strings.Fields(t))
			evs = append(evs, ev)
		}
	}
	for i, c := range a.choices {
		evs = append(evs, mk([]textChoice{{Index: i, FinishReason: &c.finishReason}}, nil))
	}
	if p.includeUsage {
		evs = append(evs, mk([]textChoice{}, a.usage()))
	}
	return evs
}
