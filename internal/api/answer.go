package api

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// CheckAnswer reports whether body is a well-formed answer of the
// chat-completions endpoint (https://platform.openai.com/docs/api-reference/chat/object):
// a JSON object with no error member and a non-empty choices array, every
// choice an object with a message object whose tool calls, if any, each
// name a function and carry arguments that parse as JSON. It is the check
// every 2xx answer passes before it counts as a success, plain or
// assembled from a stream; the error wraps ErrMalformed and, for a 2xx
// that carries an error object, names its code.
func CheckAnswer(body []byte) error { return checkAnswer(body, "") }

// checkAnswer is CheckAnswer with key k redacted from the error.
func checkAnswer(body []byte, k string) error {
	var a struct {
		Error   json.RawMessage    `json:"error"`
		Choices *[]json.RawMessage `json:"choices"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("%w: the answer is not a JSON object", ErrMalformed)
	}
	if !isNull(a.Error) {
		typ, code, msg := parseErrorObject(a.Error)
		typ, code, msg = redact(typ, k), redact(code, k), redact(msg, k)
		s := "a 2xx answer carries an error object"
		if c := cmpOr(code, typ); c != "" {
			s += " (" + truncate(c, 100) + ")"
		}
		if msg != "" {
			s += ": " + truncate(msg, 200)
		}
		return fmt.Errorf("%w: %s", ErrMalformed, s)
	}
	if a.Choices == nil || len(*a.Choices) == 0 {
		return fmt.Errorf("%w: the answer has no choices", ErrMalformed)
	}
	for i, raw := range *a.Choices {
		if err := checkChoice(raw); err != nil {
			return fmt.Errorf("%w: choice %d: %s", ErrMalformed, i, err)
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
	if isNull(c.Message) || bytes.TrimSpace(c.Message)[0] != '{' {
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
			return fmt.Errorf("tool call %d (%s): arguments do not parse as JSON", j, truncate(f.Name, 64))
		}
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
