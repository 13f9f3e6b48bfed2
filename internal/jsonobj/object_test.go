package jsonobj

import (
	"strings"
	"testing"
)

func TestReadObject(t *testing.T) {
	in := " {\n \"a\" : 1e400 , \"b\\u0063\":{ \"x\" : [1, 2] },\"c\":\"<&>\\u0026\",\"d\":12345678901234567890 ,\"\":null}\n"
	fields, err := ReadObject([]byte(in))
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
	got := string(AppendObject(nil, fields))
	wantOut := `{"a":1e400,"b\u0063":{ "x" : [1, 2] },"c":"<&>\u0026","d":12345678901234567890,"":null}`
	if got != wantOut {
		t.Errorf("AppendObject\n got %s\nwant %s", got, wantOut)
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
		_, err := ReadObject([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ReadObject(%.40s) = %v, want error containing %q", tt.in, err, tt.want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("ReadObject(%.40s) error too long: %d bytes", tt.in, len(err.Error()))
		}
	}
}

// TestPassthroughFieldByField compares the raw bytes of every member of the
// output body with the same member of the input.
func TestQuoteTrunc(t *testing.T) {
	if got := QuoteTrunc("abc"); got != `"abc"` {
		t.Errorf("got %s", got)
	}
	long := strings.Repeat("é", 100) // 2 bytes each
	got := QuoteTrunc(long)
	if !strings.HasSuffix(got, `"...`) || strings.Contains(got, `\x`) || len(got) > MaxQuoted+10 {
		t.Errorf("QuoteTrunc(long) = %s", got)
	}
}

func TestEncodeString(t *testing.T) {
	if got := string(EncodeString(`a<b>&"c`)); got != `"a<b>&\"c"` {
		t.Errorf("got %s", got)
	}
}
