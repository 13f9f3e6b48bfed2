package prompt

import (
	"bytes"
	"strings"
	"testing"
)

func TestReadObject(t *testing.T) {
	in := " {\n \"a\" : 1e400 , \"b\\u0063\":{ \"x\" : [1, 2] },\"c\":\"<&>\\u0026\",\"d\":12345678901234567890 ,\"\":null}\n"
	fields, err := readObject([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ key, rawKey, value string }{
		{"a", `"a"`, `1e400`},
		{"bc", `"b\u0063"`, `{ "x" : [1, 2] }`},
		{"c", `"c"`, `"<&>\u0026"`},
		{"d", `"d"`, `12345678901234567890`},
		{"", `""`, `null`},
	}
	if len(fields) != len(want) {
		t.Fatalf("got %d fields, want %d", len(fields), len(want))
	}
	for i, w := range want {
		f := fields[i]
		if f.Key != w.key || string(f.RawKey) != w.rawKey || string(f.Value) != w.value {
			t.Errorf("field %d = {%q %s %s}, want {%q %s %s}", i, f.Key, f.RawKey, f.Value, w.key, w.rawKey, w.value)
		}
	}
	got := string(appendObject(nil, fields))
	wantOut := `{"a":1e400,"b\u0063":{ "x" : [1, 2] },"c":"<&>\u0026","d":12345678901234567890,"":null}`
	if got != wantOut {
		t.Errorf("appendObject\n got %s\nwant %s", got, wantOut)
	}
}

func TestReadObjectErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`[]`, "must be an object, got array"},
		{`"s"`, "must be an object, got string"},
		{`{"a":1,"a":2}`, `duplicate key "a"`},
		{`{"a":1,"\u0061":2}`, `duplicate key "a"`},
		{`{"a":1} {}`, "unexpected data after the JSON object"},
		{`{"a":1`, "not valid JSON"},
		{`{"a":}`, "not valid JSON"},
		{``, "not valid JSON"},
		{`{"` + strings.Repeat("k", 200) + `":1,"` + strings.Repeat("k", 200) + `":2}`, `duplicate key "kkkk`},
	} {
		_, err := readObject([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("readObject(%.40s) = %v, want error containing %q", tt.in, err, tt.want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("readObject(%.40s) error too long: %d bytes", tt.in, len(err.Error()))
		}
	}
}

// TestPassthroughFieldByField compares the raw bytes of every member of the
// output body with the same member of the input.
func TestPassthroughFieldByField(t *testing.T) {
	in := `{
	  "custom_id": "r-9",
	  "frequency_penalty" : -0.0,
	  "logit_bias": {"50256": -100, "1234":  1e2},
	  "seed": 12345678901234567890,
	  "huge": 1e400,
	  "stop": ["\n\n", "</s>", "a&b"],
	  "response_format": {"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"<k>":{"type":"string","description":"caf\u00e9 😀"}}}}},
	  "messages": [ {"role":"developer","content":"d"}, {"role":"user","content":[{"type":"text","text":"\u2028 line"}]} ],
	  "x_vendor": {"nested": [ {"deep": [[[null]]]} ]},
	  "model":"vendor/model:v1"
	}`
	req, err := Parse([]byte(in), Options{DefaultModel: "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	inFields, err := readObject([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	outFields, err := readObject(req.Body)
	if err != nil {
		t.Fatalf("output is not an object: %v", err)
	}
	var want []field
	for _, f := range inFields {
		if f.Key != "custom_id" {
			want = append(want, f)
		}
	}
	if len(outFields) != len(want) {
		t.Fatalf("output has %d members, want %d: %s", len(outFields), len(want), req.Body)
	}
	for i := range want {
		if !bytes.Equal(outFields[i].RawKey, want[i].RawKey) || !bytes.Equal(outFields[i].Value, want[i].Value) {
			t.Errorf("member %d: got %s:%s, want %s:%s", i, outFields[i].RawKey, outFields[i].Value, want[i].RawKey, want[i].Value)
		}
		// And each value appears verbatim in the input.
		if !bytes.Contains([]byte(in), outFields[i].Value) {
			t.Errorf("member %s: value %s not found verbatim in input", outFields[i].Key, outFields[i].Value)
		}
	}
	if req.Model != "vendor/model:v1" || req.CustomID != "r-9" || req.Shape != ShapeChat {
		t.Errorf("got %+v", req)
	}
}

func TestQuoteTrunc(t *testing.T) {
	if got := quoteTrunc("abc"); got != `"abc"` {
		t.Errorf("got %s", got)
	}
	long := strings.Repeat("é", 100) // 2 bytes each
	got := quoteTrunc(long)
	if !strings.HasSuffix(got, `"...`) || strings.Contains(got, `\x`) || len(got) > maxQuoted+10 {
		t.Errorf("quoteTrunc(long) = %s", got)
	}
}

func TestEncodeString(t *testing.T) {
	if got := string(encodeString(`a<b>&"c`)); got != `"a<b>&\"c"` {
		t.Errorf("got %s", got)
	}
}
