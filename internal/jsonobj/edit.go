package jsonobj

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"slices"
)

// Edit replaces b[Start:End] of an object's bytes by Text.
type Edit struct {
	Start, End int
	Text       string
}

// Object is where the members of one JSON object sit in its bytes.
type Object struct {
	Members []Member
	Close   int // offset of the closing '}'
}

// Member locates the value of one top-level member.
type Member struct {
	Key        string
	Start, End int // the value's bytes
}

// Members locates the top-level members of the JSON object b.
func Members(b []byte) (Object, error) {
	var o Object
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return o, errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return o, err
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return o, err
		}
		end := int(dec.InputOffset())
		o.Members = append(o.Members, Member{Key: key, Start: end - len(raw), End: end})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return o, errors.New("not a JSON object")
	}
	o.Close = int(dec.InputOffset()) - 1
	if _, err := dec.Token(); err != io.EOF {
		return o, errors.New("data after the JSON object")
	}
	return o, nil
}

// Replace adds an edit setting the value of every member named key to
// text (offsets shifted by base) and reports whether there was one.
func (o Object) Replace(key, text string, base int, edits *[]Edit) bool {
	found := false
	for _, m := range o.Members {
		if m.Key == key {
			*edits = append(*edits, Edit{base + m.Start, base + m.End, text})
			found = true
		}
	}
	return found
}

// Append returns the edit inserting the member text before the closing
// brace, after a comma when the object has members.
func (o Object) Append(base int, text string) Edit {
	if len(o.Members) > 0 {
		text = "," + text
	}
	at := base + o.Close
	return Edit{at, at, text}
}

// Apply returns a copy of b with edits made; edits must not overlap.
func Apply(b []byte, edits []Edit) []byte {
	edits = slices.Clone(edits)
	slices.SortFunc(edits, func(x, y Edit) int { return cmp.Compare(y.Start, x.Start) })
	out := slices.Clone(b)
	for _, e := range edits { // back to front: earlier offsets stay valid
		out = slices.Replace(out, e.Start, e.End, []byte(e.Text)...)
	}
	return out
}

// Set returns a copy of the object b with member key's value set to text
// (appended when absent), every other byte as it was.
func Set(b []byte, key, text string) ([]byte, error) {
	o, err := Members(b)
	if err != nil {
		return nil, err
	}
	var edits []Edit
	if !o.Replace(key, text, 0, &edits) {
		edits = append(edits, o.Append(0, string(EncodeString(key))+":"+text))
	}
	return Apply(b, edits), nil
}

// Marshal encodes v without escaping <, > and &, so JSON strings reach
// readers as written.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
