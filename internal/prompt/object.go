package prompt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// field is one member of a JSON object, kept exactly as it appeared in the
// input so that it can be written back byte for byte.
type field struct {
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

// readObject splits data, which must hold exactly one JSON object, into its
// members in input order. It walks only the top level: nested values are
// returned as raw bytes without being decoded or re-encoded.
//
// Duplicate member names (compared after unescaping) are rejected: JSON
// parsers disagree on which duplicate wins, so accepting them would let the
// validated value differ from the one the API acts on.
//
// The returned error does not wrap ErrInvalidInput; callers add the path.
func readObject(data []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("must be an object, got %s", kindOf(data))
	}
	var fields []field
	seen := make(map[string]struct{})
	for dec.More() {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxErr(err)
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
			return nil, fmt.Errorf("duplicate key %s", quoteTrunc(key))
		}
		seen[key] = struct{}{}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, syntaxErr(err)
		}
		fields = append(fields, field{Key: key, RawKey: rawKey, Value: v})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, syntaxErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON object")
	}
	return fields, nil
}

// appendObject writes fields as a JSON object: each RawKey and Value is
// copied verbatim, with no whitespace between members.
func appendObject(dst []byte, fields []field) []byte {
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

// lookup returns the value of the member named key.
func lookup(fields []field, key string) (json.RawMessage, bool) {
	for _, f := range fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}

// newField builds a field for a member that sluice adds itself.
func newField(key string, value []byte) field {
	return field{Key: key, RawKey: encodeString(key), Value: value}
}

// encodeString encodes s as a JSON string without HTML escaping, so that
// `<`, `>` and `&` stay as they are.
func encodeString(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}

// kindOf names the JSON type of a raw value for error messages. raw is
// assumed to be a single valid JSON value, possibly surrounded by
// whitespace.
func kindOf(raw []byte) string {
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

// syntaxErr turns a decoder error into a message that names the position
// but never echoes input text beyond a single offending character.
func syntaxErr(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON at byte %d: %s", se.Offset, se.Error())
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("not valid JSON: unexpected end of input")
	}
	return fmt.Errorf("not valid JSON: %s", err.Error())
}

// maxQuoted bounds how much of a user-controlled name or value an error
// message may quote.
const maxQuoted = 64

// quoteTrunc quotes s for an error message, truncating long values.
func quoteTrunc(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	// Cut on a rune boundary so %q does not print a broken rune.
	cut := maxQuoted
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return fmt.Sprintf("%q...", s[:cut])
}
