package jsonobj

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ErrInvalidInput is wrapped by every validation error of a record value;
// record.ErrInvalidInput is the same value.
var ErrInvalidInput = errors.New("invalid input")

// Invalidf returns an error wrapping ErrInvalidInput whose message starts
// with the JSON path of the offending member, e.g.
// "invalid input: messages[2].role: must be a string, got number".
func Invalidf(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path == "" {
		return fmt.Errorf("%w: %s", ErrInvalidInput, msg)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalidInput, path, msg)
}

// Join builds a member path: Join("body", "messages") == "body.messages",
// Join("", "messages") == "messages".
func Join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// Index builds an element path: Index("messages", 2) == "messages[2]".
func Index(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// StringValue decodes raw, which must be a JSON string.
func StringValue(raw json.RawMessage, path string) (string, error) {
	if KindOf(raw) != "string" {
		return "", Invalidf(path, "must be a string, got %s", KindOf(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", Invalidf(path, "%s", SyntaxErr(err))
	}
	return s, nil
}

// NonEmptyString decodes raw, which must be a non-empty JSON string.
func NonEmptyString(raw json.RawMessage, path string) (string, error) {
	if KindOf(raw) != "string" {
		return "", Invalidf(path, "must be a non-empty string, got %s", KindOf(raw))
	}
	s, err := StringValue(raw, path)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", Invalidf(path, "must be a non-empty string, got an empty string")
	}
	return s, nil
}

// BoolValue decodes raw, which must be a JSON boolean.
func BoolValue(raw json.RawMessage, path string) (bool, error) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, Invalidf(path, "must be a boolean, got %s", KindOf(raw))
}

// PositiveInt decodes raw, which must be a JSON integer >= 1; values
// beyond max are clamped to max (a bound on what a record can make sluice
// reserve, not a limit of the API).
func PositiveInt(raw json.RawMessage, path string, max int) (int, error) {
	if KindOf(raw) != "number" {
		return 0, Invalidf(path, "must be an integer, got %s", KindOf(raw))
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != float64(int64(f)) {
		return 0, Invalidf(path, "must be an integer")
	}
	if f < 1 {
		return 0, Invalidf(path, "must be at least 1")
	}
	return int(min(f, float64(max))), nil
}

// IsNull reports whether raw is absent or the JSON null.
func IsNull(raw json.RawMessage) bool {
	return len(raw) == 0 || KindOf(raw) == "null"
}
