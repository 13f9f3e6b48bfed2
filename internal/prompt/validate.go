package prompt

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// invalidf returns an error wrapping ErrInvalidInput whose message starts
// with the JSON path of the offending field, e.g.
// "invalid input: messages[2].role: must be a string, got number".
func invalidf(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path == "" {
		return fmt.Errorf("%w: %s", ErrInvalidInput, msg)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalidInput, path, msg)
}

// join builds a member path: join("body", "messages") == "body.messages",
// join("", "messages") == "messages".
func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func index(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// stringValue decodes raw, which must be a JSON string.
func stringValue(raw json.RawMessage, path string) (string, error) {
	if kindOf(raw) != "string" {
		return "", invalidf(path, "must be a string, got %s", kindOf(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalidf(path, "%s", syntaxErr(err))
	}
	return s, nil
}

// nonEmptyString decodes raw, which must be a non-empty JSON string.
func nonEmptyString(raw json.RawMessage, path string) (string, error) {
	if kindOf(raw) != "string" {
		return "", invalidf(path, "must be a non-empty string, got %s", kindOf(raw))
	}
	s, err := stringValue(raw, path)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", invalidf(path, "must be a non-empty string, got an empty string")
	}
	return s, nil
}

// boolValue decodes raw, which must be a JSON boolean.
func boolValue(raw json.RawMessage, path string) (bool, error) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, invalidf(path, "must be a boolean, got %s", kindOf(raw))
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
	if kindOf(raw) != "array" {
		return invalidf(path, "must be an array, got %s", kindOf(raw))
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return invalidf(path, "%s", syntaxErr(err))
	}
	if len(elems) == 0 {
		return invalidf(path, "must not be empty")
	}
	for i, elem := range elems {
		if err := validateMessage(elem, index(path, i)); err != nil {
			return err
		}
	}
	return nil
}

func validateMessage(raw json.RawMessage, path string) error {
	if kindOf(raw) != "object" {
		return invalidf(path, "must be an object, got %s", kindOf(raw))
	}
	fields, err := readObject(raw)
	if err != nil {
		return invalidf(path, "%s", err)
	}

	rawRole, ok := lookup(fields, "role")
	if !ok {
		return invalidf(join(path, "role"), "required")
	}
	role, err := stringValue(rawRole, join(path, "role"))
	if err != nil {
		return err
	}
	if !validRoles[role] {
		return invalidf(join(path, "role"),
			"unsupported role %s (want system, developer, user, assistant, tool or function)",
			quoteTrunc(role))
	}

	hasCalls := false
	if role == "assistant" {
		for _, k := range []string{"tool_calls", "function_call"} {
			if v, ok := lookup(fields, k); ok && kindOf(v) != "null" {
				hasCalls = true
			}
		}
	}

	contentPath := join(path, "content")
	content, ok := lookup(fields, "content")
	if !ok {
		if hasCalls {
			return nil
		}
		return invalidf(contentPath, "required")
	}
	switch kindOf(content) {
	case "string":
		return nil
	case "array":
		return validateContentParts(content, contentPath)
	case "null":
		if hasCalls {
			return nil
		}
		return invalidf(contentPath,
			"must be a string or an array, got null (null is allowed only for assistant messages with tool_calls)")
	default:
		return invalidf(contentPath, "must be a string or an array, got %s", kindOf(content))
	}
}

// validateContentParts checks an array-valued content: every part must be
// an object with a string "type". The parts' other members are not
// inspected.
func validateContentParts(raw json.RawMessage, path string) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return invalidf(path, "%s", syntaxErr(err))
	}
	for i, part := range parts {
		p := index(path, i)
		if kindOf(part) != "object" {
			return invalidf(p, "must be an object, got %s", kindOf(part))
		}
		fields, err := readObject(part)
		if err != nil {
			return invalidf(p, "%s", err)
		}
		typ, ok := lookup(fields, "type")
		if !ok {
			return invalidf(join(p, "type"), "required")
		}
		if _, err := stringValue(typ, join(p, "type")); err != nil {
			return err
		}
	}
	return nil
}
