package endpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

// Chat is POST /chat/completions
// (https://platform.openai.com/docs/api-reference/chat/create,
// https://docs.x.ai/docs/api-reference#chat-completions): "messages" in,
// a chat.completion out, streamed as chat.completion.chunk events ending
// in [DONE] (chatstream.go).
type Chat struct{}

func init() { Register(Chat{}) }

// Path implements Endpoint.
func (Chat) Path() string { return "/chat/completions" }

// Validate implements Endpoint: "messages" is required (see
// validateMessages).
func (Chat) Validate(fields []jsonobj.Field, path string) error {
	msgs, err := required(fields, path, "messages")
	if err != nil {
		return err
	}
	return validateMessages(msgs, jsonobj.Join(path, "messages"))
}

// Simple implements Endpoint: {"role":"system","content":system} (when
// given) and {"role":"user","content":prompt} become "messages"; the
// strings are copied raw, escapes and all.
func (Chat) Simple(prompt, system json.RawMessage) ([]jsonobj.Field, error) {
	var msgs []byte
	msgs = append(msgs, '[')
	if system != nil {
		msgs = append(msgs, `{"role":"system","content":`...)
		msgs = append(msgs, system...)
		msgs = append(msgs, "},"...)
	}
	msgs = append(msgs, `{"role":"user","content":`...)
	msgs = append(msgs, prompt...)
	msgs = append(msgs, "}]"...)
	return []jsonobj.Field{jsonobj.NewField("messages", msgs)}, nil
}

// Estimate implements Endpoint: the messages' characters / 4 plus four
// tokens a message, and n x (max_completion_tokens or max_tokens).
func (Chat) Estimate(body []byte) Estimate {
	var req struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		MaxTokens           *count `json:"max_tokens"`
		MaxCompletionTokens *count `json:"max_completion_tokens"`
		N                   *count `json:"n"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return Estimate{Input: len(body) / 4, Choices: 1}
	}
	chars := 0
	for _, m := range req.Messages {
		chars += contentChars(m.Content)
	}
	e := Estimate{Input: textTokens(chars) + 4*len(req.Messages), Choices: 1}
	if req.N != nil && *req.N > 1 {
		e.Choices = min(int(*req.N), MaxChoices)
	}
	ceiling := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		ceiling = req.MaxCompletionTokens
	}
	if ceiling != nil && *ceiling > 0 {
		e.Reserved = e.Choices * min(int(*ceiling), MaxCeiling)
	}
	return e
}

// contentChars counts the characters of a message content: a string, or
// the text of a parts array.
func contentChars(raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == 'n' {
		return 0
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return utf8.RuneCountInString(s)
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return len(raw)
	}
	n := 0
	for _, p := range parts {
		n += utf8.RuneCountInString(p.Text)
	}
	return n
}

// Usage implements Endpoint: prompt_tokens, completion_tokens,
// total_tokens and completion_tokens_details.reasoning_tokens.
// total_tokens is the truth where present: xAI's completion_tokens leaves
// reasoning tokens out, OpenAI's includes them, both count them in the
// total.
func (Chat) Usage(answer []byte) (Usage, bool) { return completionUsage(answer) }

// completionUsage reads the usage object of chat and legacy completions.
func completionUsage(answer []byte) (Usage, bool) {
	var v struct {
		Usage *struct {
			PromptTokens            int `json:"prompt_tokens"`
			CompletionTokens        int `json:"completion_tokens"`
			TotalTokens             int `json:"total_tokens"`
			CompletionTokensDetails struct {
				ReasoningTokens int `json:"reasoning_tokens"`
			} `json:"completion_tokens_details"`
		} `json:"usage"`
	}
	if json.Unmarshal(answer, &v) != nil || v.Usage == nil {
		return Usage{}, false
	}
	return splitUsage(v.Usage.PromptTokens, v.Usage.CompletionTokens, v.Usage.TotalTokens,
		v.Usage.CompletionTokensDetails.ReasoningTokens), true
}

// splitUsage bounds the figures of a usage object and splits what was
// generated (total - input) into output and reasoning.
func splitUsage(input, output, total, reasoning int) Usage {
	input, output, total, reasoning = bound(input), bound(output), bound(total), bound(reasoning)
	if total == 0 {
		total = input + output
	}
	generated := max(0, total-input)
	reasoning = min(reasoning, generated)
	return Usage{Input: input, Output: generated - reasoning, Reasoning: reasoning, Total: total}
}

// Check implements Endpoint
// (https://platform.openai.com/docs/api-reference/chat/object): a JSON
// object with no error member and a non-empty choices array, every choice
// an object with a message object whose tool calls, if any, each name a
// function and carry arguments that parse as JSON.
func (Chat) Check(answer []byte) error {
	if err := errorMember(answer); err != nil {
		return err
	}
	var a struct {
		Choices *[]json.RawMessage `json:"choices"`
	}
	_ = json.Unmarshal(answer, &a) // an object: errorMember read it
	if a.Choices == nil || len(*a.Choices) == 0 {
		return fmt.Errorf("%w: the answer has no choices", api.ErrMalformed)
	}
	for i, raw := range *a.Choices {
		if err := checkChoice(raw); err != nil {
			return fmt.Errorf("%w: choice %d: %s", api.ErrMalformed, i, err)
		}
	}
	return nil
}

// checkChoice checks one element of choices; the error is a plain text.
func checkChoice(raw json.RawMessage) error {
	var c struct {
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return fmt.Errorf("not an object")
	}
	if jsonobj.KindOf(c.Message) != "object" {
		return fmt.Errorf("no message object")
	}
	var m struct {
		ToolCalls []struct {
			Type     string `json:"type"`
			Function *struct {
				Name      string  `json:"name"`
				Arguments *string `json:"arguments"`
			} `json:"function"`
		} `json:"tool_calls"`
	}
	if err := json.Unmarshal(c.Message, &m); err != nil {
		return fmt.Errorf("message: %v", err)
	}
	for j, tc := range m.ToolCalls {
		if tc.Type != "" && tc.Type != "function" {
			continue // a tool kind this check does not know
		}
		switch f := tc.Function; {
		case f == nil || f.Name == "":
			return fmt.Errorf("tool call %d names no function", j)
		case f.Arguments == nil || !json.Valid([]byte(*f.Arguments)):
			return fmt.Errorf("tool call %d (%s): arguments do not parse as JSON", j, api.Truncate(f.Name, 64))
		}
	}
	return nil
}

// StreamBody sets "stream": true and stream_options.include_usage in the
// JSON object body by editing its bytes: every other byte, including key
// order, number spelling, escapes and the other members of stream_options,
// reaches the server as the record had it. A "stream" member's value is
// replaced by true, or the member appended; the same for include_usage
// inside stream_options (a null stream_options becomes
// {"include_usage":true}).
func (Chat) StreamBody(body []byte) ([]byte, error) {
	top, err := jsonobj.Members(body)
	if err != nil {
		return nil, fmt.Errorf("endpoint: a streamed request body must be a JSON object")
	}
	var edits []jsonobj.Edit
	var add []string
	if !top.Replace("stream", "true", 0, &edits) {
		add = append(add, `"stream":true`)
	}
	hasOptions := false
	for _, m := range top.Members {
		if m.Key != "stream_options" {
			continue
		}
		hasOptions = true
		raw := body[m.Start:m.End]
		if jsonobj.IsNull(raw) {
			edits = append(edits, jsonobj.Edit{Start: m.Start, End: m.End, Text: `{"include_usage":true}`})
			continue
		}
		so, err := jsonobj.Members(raw)
		if err != nil {
			return nil, fmt.Errorf("endpoint: stream_options must be a JSON object")
		}
		if !so.Replace("include_usage", "true", m.Start, &edits) {
			edits = append(edits, so.Append(m.Start, `"include_usage":true`))
		}
	}
	if !hasOptions {
		add = append(add, `"stream_options":{"include_usage":true}`)
	}
	if len(add) > 0 {
		edits = append(edits, top.Append(0, strings.Join(add, ",")))
	}
	return jsonobj.Apply(body, edits), nil
}

// validRoles are the chat-completions message roles sluice accepts.
var validRoles = map[string]bool{
	"system":    true,
	"developer": true,
	"user":      true,
	"assistant": true,
	"tool":      true,
	"function":  true,
}

// validateMessages checks the "messages" member of a chat body. path is the
// member's path ("messages" or "body.messages").
//
// Rules: an array with at least one element; each element an object
// without duplicate keys; "role" a string naming a known role; "content" a
// string or an array of content parts (objects with a string "type"). An
// assistant message that carries "tool_calls" (or the legacy
// "function_call") may have its content null or omitted. All other
// members of a message are left to the API.
func validateMessages(raw json.RawMessage, path string) error {
	if jsonobj.KindOf(raw) != "array" {
		return jsonobj.Invalidf(path, "must be an array, got %s", jsonobj.KindOf(raw))
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return jsonobj.Invalidf(path, "%s", jsonobj.SyntaxErr(err))
	}
	if len(elems) == 0 {
		return jsonobj.Invalidf(path, "must not be empty")
	}
	for i, elem := range elems {
		if err := validateMessage(elem, jsonobj.Index(path, i)); err != nil {
			return err
		}
	}
	return nil
}

func validateMessage(raw json.RawMessage, path string) error {
	if jsonobj.KindOf(raw) != "object" {
		return jsonobj.Invalidf(path, "must be an object, got %s", jsonobj.KindOf(raw))
	}
	fields, err := jsonobj.ReadObject(raw)
	if err != nil {
		return jsonobj.Invalidf(path, "%s", err)
	}

	rawRole, ok := jsonobj.Lookup(fields, "role")
	if !ok {
		return jsonobj.Invalidf(jsonobj.Join(path, "role"), "required")
	}
	role, err := jsonobj.StringValue(rawRole, jsonobj.Join(path, "role"))
	if err != nil {
		return err
	}
	if !validRoles[role] {
		return jsonobj.Invalidf(jsonobj.Join(path, "role"),
			"unsupported role %s (want system, developer, user, assistant, tool or function)",
			jsonobj.QuoteTrunc(role))
	}

	hasCalls := false
	if role == "assistant" {
		for _, k := range []string{"tool_calls", "function_call"} {
			if v, ok := jsonobj.Lookup(fields, k); ok && jsonobj.KindOf(v) != "null" {
				hasCalls = true
			}
		}
	}

	contentPath := jsonobj.Join(path, "content")
	content, ok := jsonobj.Lookup(fields, "content")
	if !ok {
		if hasCalls {
			return nil
		}
		return jsonobj.Invalidf(contentPath, "required")
	}
	switch jsonobj.KindOf(content) {
	case "string":
		return nil
	case "array":
		return validateContentParts(content, contentPath)
	case "null":
		if hasCalls {
			return nil
		}
		return jsonobj.Invalidf(contentPath,
			"must be a string or an array, got null (null is allowed only for assistant messages with tool_calls)")
	default:
		return jsonobj.Invalidf(contentPath, "must be a string or an array, got %s", jsonobj.KindOf(content))
	}
}

// validateContentParts checks an array-valued content: every part must be
// an object with a string "type". The parts' other members are not
// inspected.
func validateContentParts(raw json.RawMessage, path string) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return jsonobj.Invalidf(path, "%s", jsonobj.SyntaxErr(err))
	}
	for i, part := range parts {
		p := jsonobj.Index(path, i)
		if jsonobj.KindOf(part) != "object" {
			return jsonobj.Invalidf(p, "must be an object, got %s", jsonobj.KindOf(part))
		}
		fields, err := jsonobj.ReadObject(part)
		if err != nil {
			return jsonobj.Invalidf(p, "%s", err)
		}
		typ, ok := jsonobj.Lookup(fields, "type")
		if !ok {
			return jsonobj.Invalidf(jsonobj.Join(p, "type"), "required")
		}
		if _, err := jsonobj.StringValue(typ, jsonobj.Join(p, "type")); err != nil {
			return err
		}
	}
	return nil
}

var _ Streamer = Chat{}
