package endpoint

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

// Responses is POST /responses, the Responses API
// (https://platform.openai.com/docs/api-reference/responses/create,
// https://docs.x.ai/docs/guides/responses-api): "input" (a string or an
// array of input items) and "instructions" in, a response object out
// ({"id","object":"response","status","output":[...],"usage":{...}}).
// Streamed, it sends typed events (https://platform.openai.com/docs/api-reference/responses-streaming):
// response.created, response.output_text.delta, ... and last
// response.completed (or response.incomplete) with the whole response,
// which is the assembled answer; response.failed and error fail the call.
type Responses struct{}

func init() { Register(Responses{}) }

var _ Streamer = Responses{}

// Path implements Endpoint.
func (Responses) Path() string { return "/responses" }

// inputRoles are the roles of a message input item.
var inputRoles = map[string]bool{"user": true, "assistant": true, "system": true, "developer": true}

// Validate implements Endpoint: "input" is required, a non-empty string or
// a non-empty array of input items (objects; a message item's role is a
// known role and its content a string or an array of typed parts; other
// items name their "type"). "instructions", when present, is a string.
// "background": true is refused: sluice does not poll for an answer that
// is not in the reply.
func (Responses) Validate(fields []jsonobj.Field, path string) error {
	in, err := required(fields, path, "input")
	if err != nil {
		return err
	}
	if err := validateInput(in, jsonobj.Join(path, "input")); err != nil {
		return err
	}
	if v, ok := jsonobj.Lookup(fields, "instructions"); ok && !jsonobj.IsNull(v) {
		if _, err := jsonobj.StringValue(v, jsonobj.Join(path, "instructions")); err != nil {
			return err
		}
	}
	if v, ok := jsonobj.Lookup(fields, "background"); ok && string(v) == "true" {
		return jsonobj.Invalidf(jsonobj.Join(path, "background"), "must not be true: sluice takes the answer from the reply and does not poll for it")
	}
	return nil
}

// validateInput checks a Responses "input": a non-empty string or a
// non-empty array of input items.
func validateInput(raw json.RawMessage, path string) error {
	return stringOrArray(raw, path, " of input items", validateInputItem)
}

// validateInputItem checks one input item: an object; a message (no
// "type", or "message") has a known role and a string or typed-parts
// content.
func validateInputItem(it json.RawMessage, p string) error {
	if jsonobj.KindOf(it) != "object" {
		return jsonobj.Invalidf(p, "must be an object, got %s", jsonobj.KindOf(it))
	}
	fields, err := jsonobj.ReadObject(it)
	if err != nil {
		return jsonobj.Invalidf(p, "%s", err)
	}
	typ, hasType := jsonobj.Lookup(fields, "type")
	if hasType {
		t, err := jsonobj.NonEmptyString(typ, jsonobj.Join(p, "type"))
		if err != nil {
			return err
		}
		if t != "message" {
			return nil // function_call_output, item_reference, ...: the API's to judge
		}
	}
	role, ok := jsonobj.Lookup(fields, "role")
	if !ok {
		return jsonobj.Invalidf(jsonobj.Join(p, "role"), `required (or a "type" naming the item)`)
	}
	r, err := jsonobj.StringValue(role, jsonobj.Join(p, "role"))
	if err != nil {
		return err
	}
	if !inputRoles[r] {
		return jsonobj.Invalidf(jsonobj.Join(p, "role"), "unsupported role %s (want user, assistant, system or developer)", jsonobj.QuoteTrunc(r))
	}
	content, err := required(fields, p, "content")
	if err != nil {
		return err
	}
	switch jsonobj.KindOf(content) {
	case "string":
	case "array":
		if err := validateContentParts(content, jsonobj.Join(p, "content")); err != nil {
			return err
		}
	default:
		return jsonobj.Invalidf(jsonobj.Join(p, "content"), "must be a string or an array, got %s", jsonobj.KindOf(content))
	}
	return nil
}

// Simple implements Endpoint: the prompt becomes "input", the system text
// "instructions".
func (Responses) Simple(prompt, system json.RawMessage) ([]jsonobj.Field, error) {
	var out []jsonobj.Field
	if system != nil {
		out = append(out, jsonobj.NewField("instructions", system))
	}
	return append(out, jsonobj.NewField("input", prompt)), nil
}

// Estimate implements Endpoint: the characters of input and instructions
// / 4, four tokens an input item, and max_output_tokens (which counts
// reasoning too).
func (Responses) Estimate(body []byte) Estimate {
	var req struct {
		Input           json.RawMessage `json:"input"`
		Instructions    json.RawMessage `json:"instructions"`
		MaxOutputTokens *count          `json:"max_output_tokens"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return Estimate{Input: len(body) / 4, Choices: 1}
	}
	items := 0
	if jsonobj.KindOf(req.Input) == "array" {
		var its []json.RawMessage
		_ = json.Unmarshal(req.Input, &its)
		items = len(its)
	}
	e := Estimate{Input: textTokens(inputChars(req.Input)+inputChars(req.Instructions)) + 4*items, Choices: 1}
	if req.MaxOutputTokens != nil && *req.MaxOutputTokens > 0 {
		e.Reserved = min(int(*req.MaxOutputTokens), MaxCeiling)
	}
	return e
}

// Usage implements Endpoint: input_tokens, output_tokens, total_tokens
// and output_tokens_details.reasoning_tokens; total_tokens is the truth,
// as for chat.
func (Responses) Usage(answer []byte) (Usage, bool) {
	var v struct {
		Usage *struct {
			InputTokens         int `json:"input_tokens"`
			OutputTokens        int `json:"output_tokens"`
			TotalTokens         int `json:"total_tokens"`
			OutputTokensDetails struct {
				ReasoningTokens int `json:"reasoning_tokens"`
			} `json:"output_tokens_details"`
		} `json:"usage"`
	}
	if json.Unmarshal(answer, &v) != nil || v.Usage == nil {
		return Usage{}, false
	}
	u := v.Usage
	return splitUsage(u.InputTokens, u.OutputTokens, u.TotalTokens, u.OutputTokensDetails.ReasoningTokens), true
}

// Check implements Endpoint
// (https://platform.openai.com/docs/api-reference/responses/object): a
// JSON object with no error, "object" (when present) "response", status
// "completed" or "incomplete" (max_output_tokens reached), an "output"
// array (non-empty when completed), and function calls whose arguments
// parse as JSON.
func (Responses) Check(answer []byte) error {
	if err := errorMember(answer); err != nil {
		return err
	}
	var r struct {
		Object *string            `json:"object"`
		Status *string            `json:"status"`
		Output *[]json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(answer, &r); err != nil {
		return fmt.Errorf("%w: the answer is not a response object: %v", api.ErrMalformed, err)
	}
	if r.Object != nil && *r.Object != "response" {
		return fmt.Errorf("%w: the answer's object is %q, not \"response\"", api.ErrMalformed, api.Truncate(*r.Object, 64))
	}
	status := "completed"
	if r.Status != nil {
		status = *r.Status
	}
	if status != "completed" && status != "incomplete" {
		return fmt.Errorf("%w: the response's status is %q, not completed", api.ErrMalformed, api.Truncate(status, 64))
	}
	if r.Output == nil || (status == "completed" && len(*r.Output) == 0) {
		return fmt.Errorf("%w: the response has no output", api.ErrMalformed)
	}
	for i, raw := range *r.Output {
		var it struct {
			Type      string  `json:"type"`
			Name      string  `json:"name"`
			Arguments *string `json:"arguments"`
		}
		if json.Unmarshal(raw, &it) != nil {
			return fmt.Errorf("%w: output %d is not an object", api.ErrMalformed, i)
		}
		if it.Type == "function_call" && (it.Name == "" || it.Arguments == nil || !json.Valid([]byte(*it.Arguments))) {
			return fmt.Errorf("%w: output %d: a function call without a name or with arguments that do not parse as JSON", api.ErrMalformed, i)
		}
	}
	return nil
}

// StreamBody implements Streamer: "stream": true, set in place.
func (Responses) StreamBody(body []byte) ([]byte, error) {
	b, err := jsonobj.Set(body, "stream", "true")
	if err != nil {
		return nil, fmt.Errorf("endpoint: a streamed request body must be a JSON object")
	}
	return b, nil
}

// NewAssembler implements Streamer.
func (Responses) NewAssembler() api.Assembler { return &responsesAssembler{} }

// responsesAssembler keeps the response of the stream's last event, and
// the output items as they finish, in case a provider's last event leaves
// the output out.
type responsesAssembler struct {
	response json.RawMessage
	items    []json.RawMessage // by output_index
	size     int
}

// MaxEventBytes implements api.MaxEventSizer: the last event carries the
// whole response.
func (*responsesAssembler) MaxEventBytes() int { return api.MaxResponseBytes }

// Add implements api.Assembler. Every event but the lifecycle ones (which
// carry the whole response) is a delta, its data verbatim and its type
// kept; the index is its output_index.
func (a *responsesAssembler) Add(ev api.Event) ([]api.Delta, bool, error) {
	if string(ev.Data) == api.DoneData { // not sent by the Responses API; some servers do
		return nil, true, nil
	}
	var e struct {
		Type        string          `json:"type"`
		OutputIndex int             `json:"output_index"`
		Delta       json.RawMessage `json:"delta"`
		Item        json.RawMessage `json:"item"`
		Response    json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return nil, false, fmt.Errorf("%w: stream event is not a JSON object: %v", api.ErrMalformed, err)
	}
	typ := e.Type
	if typ == "" {
		typ = ev.Type
	}
	switch typ {
	case "error":
		return nil, false, api.ErrorEvent(ev.Data)
	case "response.failed":
		var r struct {
			Error json.RawMessage `json:"error"`
		}
		_ = json.Unmarshal(e.Response, &r)
		se := api.ErrorEvent(r.Error)
		if se.Code == "" && se.Message == "" {
			se.Message = "response.failed"
		}
		return nil, false, se
	case "response.completed", "response.incomplete":
		if jsonobj.KindOf(e.Response) != "object" {
			return nil, false, fmt.Errorf("%w: %s without a response object", api.ErrMalformed, typ)
		}
		a.response = append(json.RawMessage(nil), e.Response...)
		return nil, true, nil
	case "response.created", "response.in_progress", "response.queued":
		return nil, false, nil
	}
	if typ == "response.output_item.done" && e.OutputIndex >= 0 && e.OutputIndex < MaxChoices*8 {
		a.size += len(e.Item)
		if a.size > api.MaxResponseBytes {
			return nil, false, fmt.Errorf("%w: streamed answer exceeds %d bytes", api.ErrMalformed, api.MaxResponseBytes)
		}
		for len(a.items) <= e.OutputIndex {
			a.items = append(a.items, nil)
		}
		a.items[e.OutputIndex] = append(json.RawMessage(nil), e.Item...)
	}
	var text string
	token := strings.HasSuffix(typ, ".delta") && json.Unmarshal(e.Delta, &text) == nil && text != ""
	d := api.Delta{Type: typ, Index: max(e.OutputIndex, 0), Data: append(json.RawMessage(nil), ev.Data...), Token: token}
	return []api.Delta{d}, false, nil
}

// Finish implements api.Assembler: the response of the last event; its
// output, when the event left it empty, is the items that finished.
func (a *responsesAssembler) Finish(ended bool) ([]byte, error) {
	if a.response == nil {
		return nil, fmt.Errorf("%w: stream ended before response.completed (truncated)", api.ErrTransport)
	}
	var r struct {
		Output json.RawMessage `json:"output"`
	}
	_ = json.Unmarshal(a.response, &r)
	if (jsonobj.IsNull(r.Output) || string(r.Output) == "[]") && len(a.items) > 0 {
		var out []byte
		out = append(out, '[')
		n := 0
		for _, it := range a.items {
			if it == nil {
				continue
			}
			if n > 0 {
				out = append(out, ',')
			}
			out = append(out, it...)
			n++
		}
		out = append(out, ']')
		b, err := jsonobj.Set(a.response, "output", string(out))
		if err != nil {
			return nil, fmt.Errorf("%w: the streamed response is not an object", api.ErrMalformed)
		}
		return b, nil
	}
	return a.response, nil
}
