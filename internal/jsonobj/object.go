// Package jsonobj reads and writes the top level of JSON objects without
// re-encoding their values, so that bodies reach the API byte for byte:
// ReadObject splits an object into raw members, AppendObject writes them
// back, and Members/Edit change one member's value in place. It also holds
// the path-naming validation errors every endpoint uses
// ("invalid input: body.messages[2].role: must be a string, got number").
package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Field is one member of a JSON object, kept exactly as it appeared in the
// input so that it can be written back byte for byte.
type Field struct {
	// Key is the decoded member name (escapes resolved). It is used for
	// matching ("custom_id", "model", ...) and duplicate detection.
	Key string
	// RawKey is the member name as it appeared in the input, including
	// the quotes and any escapes, e.g. `"temp\u0065rature"`.
	RawKey []byte
	// Value is the raw member value, verbatim (nested whitespace,
	// number spelling and string escapes are untouched).
	Value json.RawMessage
}

// ReadObject splits data, which must hold exactly one JSON object, into its
// members in input order. It walks only the top level: nested values are
// returned as raw bytes without being decoded or re-encoded.
//
// Duplicate member names (compared after unescaping) are rejected: JSON
// parsers disagree on which duplicate wins, so accepting them would let the
// validated value differ from the one the API acts on.
//
// The returned error does not wrap ErrInvalidInput; callers add the path.
func ReadObject(data []byte) ([]Field, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, SyntaxErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("must be an object, got %s", KindOf(data))
	}
	var fields []Field
	seen := make(map[string]struct{})
	for dec.More() {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil, SyntaxErr(err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("malformed object: expected a member name")
		}
		// The bytes between the previous value and the end of this key
		// are optional whitespace, a comma, more whitespace and the
		// quoted key; the key starts at the first quote.
		rawKey := data[start:dec.InputOffset()]
		rawKey = rawKey[bytes.IndexByte(rawKey, '"'):]
		if _, dup := seen[key]; dup {
			return nil, fmt.Errorf("duplicate key %s", QuoteTrunc(key))
		}
		seen[key] = struct{}{}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, SyntaxErr(err)
		}
		fields = append(fields, Field{Key: key, RawKey: rawKey, Value: v})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, SyntaxErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON object")
	}
	return fields, nil
}

// AppendObject writes fields as a JSON object: each RawKey and Value is
// copied verbatim, with no whitespace between members.
func AppendObject(dst []byte, fields []Field) []byte {
	dst = append(dst, '{')
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, f.RawKey...)
		dst = append(dst, ':')
		dst = append(dst, f.Value...)
	}
	return append(dst, '}')
}

// Lookup returns the value of the member named key.
func Lookup(fields []Field, key string) (json.RawMessage, bool) {
	for _, f := range fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}

// NewField builds a Field for a member that sluice adds itself.
func NewField(key string, value []byte) Field {
	return Field{Key: key, RawKey: EncodeString(key), Value: value}
}

// EncodeString encodes s as a JSON string without HTML escaping, so that
// `<`, `>` and `&` stay as they are.
func EncodeString(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}

// KindOf names the JSON type of a raw value for error messages. raw is
// assumed to be a single valid JSON value, possibly surrounded by
// whitespace.
func KindOf(raw []byte) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// SyntaxErr turns a decoder error into a message that names the position
// but never echoes input text beyond a single offending character.
func SyntaxErr(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON at byte %d: %s", se.Offset, se.Error())
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("not valid JSON: unexpected end of input")
	}
	return fmt.Errorf("not valid JSON: %s", err.Error())
}

// MaxQuoted bounds how much of a user-controlled name or value an error
// message may quote.
const MaxQuoted = 64

// QuoteTrunc quotes s for an error message, truncating long values.
func QuoteTrunc(s string) string {
	if len(s) <= MaxQuoted {
		return fmt.Sprintf("%q", s)
	}
	// Cut on a rune boundary so %q does not print a broken rune.
	cut := MaxQuoted
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return fmt.Sprintf("%q...", s[:cut])
}
