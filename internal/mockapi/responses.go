package mockapi

import (
	"encoding/json"
	"fmt"
	"strings"
)

// responsesRoute is POST /responses, the Responses API
// (https://platform.openai.com/docs/api-reference/responses/create): the
// same deterministic text as a chat completion of the same messages, as a
// response object; streamed as typed events
// (https://platform.openai.com/docs/api-reference/responses-streaming).
var responsesRoute = route{
	parse: parseResponses,
	answer: func(p *parsedRequest, a *answerPlan, id string, created int64) any {
		return responseObject(p, a, id, created, true)
	},
	events: responsesEvents,
}

// responsesRequest is the part of a Responses request the simulator reads.
type responsesRequest struct {
	Model           *string         `json:"model"`
	Input           json.RawMessage `json:"input"`
	Instructions    *string         `json:"instructions"`
	MaxOutputTokens *int            `json:"max_output_tokens"`
	Stream          bool            `json:"stream"`
}

// inputItem is one element of an array "input": a message (role and
// content) or another item, whose "output" (a function call's) is read as
// text.
type inputItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	Output  string          `json:"output"`
}

// parseResponses validates a Responses request body: "input" is a string
// or a non-empty array of input items; input_text parts count as text.
func parseResponses(body []byte) (*parsedRequest, *apiError) {
	var req responsesRequest
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, aerr
	}
	if aerr := needModel(req.Model); aerr != nil {
		return nil, aerr
	}
	p := &parsedRequest{model: *req.Model, n: 1, stream: req.Stream, instructions: req.Instructions}
	if req.Instructions != nil {
		p.roles, p.texts = append(p.roles, "system"), append(p.texts, *req.Instructions)
	}
	var one string
	var items []inputItem
	switch {
	case len(req.Input) == 0 || string(req.Input) == "null":
		return nil, invalidRequest("input", "Missing required parameter: 'input'.")
	case json.Unmarshal(req.Input, &one) == nil:
		p.roles, p.texts = append(p.roles, "user"), append(p.texts, one)
	case json.Unmarshal(req.Input, &items) == nil && len(items) > 0:
		for i, it := range items {
			if it.Type != "" && it.Type != "message" {
				p.roles, p.texts = append(p.roles, it.Type), append(p.texts, it.Output)
				continue
			}
			param := fmt.Sprintf("input[%d]", i)
			if it.Role == "" {
				return nil, invalidRequest(param+".role", "Missing required parameter: '"+param+".role'.")
			}
			text, ok := contentText(it.Content)
			if !ok {
				return nil, invalidRequest(param+".content", "Invalid type for '"+param+".content': expected a string or an array of input content parts.")
			}
			p.roles, p.texts = append(p.roles, it.Role), append(p.texts, text)
		}
	default:
		return nil, invalidRequest("input", "Invalid 'input': expected a string or a non-empty array of input items.")
	}
	if aerr := p.setMaxTokens("max_output_tokens", req.MaxOutputTokens); aerr != nil {
		return nil, aerr
	}
	return p, nil
}

// response is a Responses API response object
// (https://platform.openai.com/docs/api-reference/responses/object).
type response struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	CreatedAt         int64           `json:"created_at"`
	Status            string          `json:"status"`
	Error             *struct{}       `json:"error"`
	IncompleteDetails *incomplete     `json:"incomplete_details"`
	Instructions      *string         `json:"instructions"`
	MaxOutputTokens   *int            `json:"max_output_tokens"`
	Model             string          `json:"model"`
	Output            []outputItem    `json:"output"`
	Usage             *responsesUsage `json:"usage"`
}

type incomplete struct {
	Reason string `json:"reason"`
}

// outputItem is a reasoning item or an assistant message.
type outputItem struct {
	ID      string        `json:"id"`
	Type    string        `json:"type"`
	Status  string        `json:"status,omitempty"`
	Role    string        `json:"role,omitempty"`
	Content []contentOut  `json:"content,omitempty"`
	Summary *[]contentOut `json:"summary,omitempty"`
}

// contentOut is an output_text content part.
type contentOut struct {
	Type        string   `json:"type"`
	Text        string   `json:"text"`
	Annotations []string `json:"annotations"`
}

// responsesUsage is a response's usage: output_tokens include the
// reasoning tokens, total_tokens = input_tokens + output_tokens.
type responsesUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

// responseObject is the response of a; done is false for the in-progress
// snapshot of a stream's first events (no output, no usage).
func responseObject(p *parsedRequest, a *answerPlan, id string, created int64, done bool) *response {
	r := &response{ID: "resp_" + id, Object: "response", CreatedAt: created, Status: "in_progress",
		Instructions: p.instructions, Model: p.model, Output: []outputItem{}}
	if p.maxTokens > 0 {
		r.MaxOutputTokens = &p.maxTokens
	}
	if !done {
		return r
	}
	c := a.choices[0]
	r.Status = "completed"
	if c.finishReason == "length" {
		r.Status, r.IncompleteDetails = "incomplete", &incomplete{Reason: "max_output_tokens"}
	}
	if c.reasoningTokens > 0 {
		r.Output = append(r.Output, reasoningItem(id))
	}
	r.Output = append(r.Output, messageItem(id, r.Status, c.content))
	u := a.usage()
	r.Usage = &responsesUsage{InputTokens: u.PromptTokens, OutputTokens: u.TotalTokens - u.PromptTokens, TotalTokens: u.TotalTokens}
	r.Usage.OutputTokensDetails.ReasoningTokens = u.CompletionTokensDetails.ReasoningTokens
	return r
}

func reasoningItem(id string) outputItem {
	return outputItem{ID: "rs_" + id, Type: "reasoning", Summary: &[]contentOut{}}
}

func messageItem(id, status, text string) outputItem {
	it := outputItem{ID: "msg_" + id, Type: "message", Status: status, Role: "assistant", Content: []contentOut{}}
	if status != "in_progress" {
		it.Content = append(it.Content, contentOut{Type: "output_text", Text: text, Annotations: []string{}})
	}
	return it
}

// responsesEvent is the data of a Responses stream event; the members a
// type does not use are left out.
type responsesEvent struct {
	Type           string      `json:"type"`
	SequenceNumber int         `json:"sequence_number"`
	Response       *response   `json:"response,omitempty"`
	OutputIndex    *int        `json:"output_index,omitempty"`
	ItemID         string      `json:"item_id,omitempty"`
	ContentIndex   *int        `json:"content_index,omitempty"`
	Item           *outputItem `json:"item,omitempty"`
	Part           *contentOut `json:"part,omitempty"`
	Delta          *string     `json:"delta,omitempty"`
	Text           *string     `json:"text,omitempty"`
}

// responsesEvents is a streamed response: response.created and
// response.in_progress, the reasoning item (paced by the reasoning
// tokens), the message item with its output_text deltas, and last
// response.completed (response.incomplete when max_output_tokens cut it)
// with the whole response a plain call returns.
func responsesEvents(p *parsedRequest, a *answerPlan, id string, created int64) []outEvent {
	var evs []outEvent
	add := func(e responsesEvent, tokens int) {
		e.SequenceNumber = len(evs)
		evs = append(evs, outEvent{name: e.Type, data: e, tokens: tokens})
	}
	final := responseObject(p, a, id, created, true)
	start := responseObject(p, a, id, created, false)
	add(responsesEvent{Type: "response.created", Response: start}, 0)
	add(responsesEvent{Type: "response.in_progress", Response: start}, 0)
	c := a.choices[0]
	idx, zero := 0, 0 // output_index, content_index
	if c.reasoningTokens > 0 {
		it := reasoningItem(id)
		add(responsesEvent{Type: "response.output_item.added", OutputIndex: intp(idx), Item: &it}, 0)
		add(responsesEvent{Type: "response.output_item.done", OutputIndex: intp(idx), Item: &it}, c.reasoningTokens)
		idx++
	}
	msgID := "msg_" + id
	started := messageItem(id, "in_progress", "")
	add(responsesEvent{Type: "response.output_item.added", OutputIndex: intp(idx), Item: &started}, 0)
	empty := contentOut{Type: "output_text", Annotations: []string{}}
	add(responsesEvent{Type: "response.content_part.added", OutputIndex: intp(idx), ItemID: msgID, ContentIndex: &zero, Part: &empty}, 0)
	for _, t := range splitDeltas(c.content, wordsPerDelta) {
		add(responsesEvent{Type: "response.output_text.delta", OutputIndex: intp(idx), ItemID: msgID, ContentIndex: &zero, Delta: &t}, len(strings.Fields(t)))
	}
	msg := final.Output[idx]
	part := msg.Content[0]
	add(responsesEvent{Type: "response.output_text.done", OutputIndex: intp(idx), ItemID: msgID, ContentIndex: &zero, Text: &part.Text}, 0)
	add(responsesEvent{Type: "response.content_part.done", OutputIndex: intp(idx), ItemID: msgID, ContentIndex: &zero, Part: &part}, 0)
	add(responsesEvent{Type: "response.output_item.done", OutputIndex: intp(idx), Item: &msg}, 0)
	last := "response.completed"
	if final.Status == "incomplete" {
		last = "response.incomplete"
	}
	add(responsesEvent{Type: last, Response: final}, 0)
	return evs
}

// intp returns a pointer to a copy of i.
func intp(i int) *int { return &i }
