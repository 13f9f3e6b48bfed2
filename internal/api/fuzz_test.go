package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// FuzzRetryAfter: whatever Retry-After and retry-after-ms say, the wait
// is in [0, MaxRetryAfter] and a plain number of seconds is honoured.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range [][2]string{
		{"3600", ""}, {"", "250"}, {"1e300", ""}, {"", "1e300"}, {"NaN", "NaN"}, {"-1", "-1"},
		{"Fri, 31 Dec 9999 23:59:59 GMT", ""}, {"Mon, 01 Jan 2024 00:00:00 GMT", ""}, {"0.5", "Inf"}, {" 7 ", ""},
	} {
		f.Add(s[0], s[1])
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ra, ms string) {
		h := http.Header{}
		h.Set("Retry-After", ra)
		h.Set("retry-after-ms", ms)
		d := retryAfter(h, now)
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("retryAfter(%q, %q) = %s, outside [0, %s]", ra, ms, d, MaxRetryAfter)
		}
	})
}

// FuzzAnswer decodes untrusted answer bytes the three ways sluice does: a
// plain 2xx (CheckAnswer), an error answer (parseErrorBody), and a stream
// whose lines are events. Nothing panics, and a stream that assembles
// without error is an answer CheckAnswer accepts: a stream is never a
// malformed success.
func FuzzAnswer(f *testing.F) {
	f.Add([]byte(`{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"total_tokens":5}}`))
	f.Add([]byte(`{"error":{"message":"x","type":"server_error","code":500}}`))
	f.Add([]byte(`{"code":"Client specified an invalid argument","error":"Incorrect API key provided"}`))
	f.Add([]byte(`{"choices":[{"message":{"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{"}}]}}]}`))
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\"\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"error\":{\"code\":\"rate_limit_exceeded\"}}\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := CheckAnswer(b); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("CheckAnswer error %v is not ErrMalformed", err)
		}
		_, _, _ = parseErrorBody(b)

		asm := newAssembler("", &Response{StatusCode: 200})
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		done := false
		for sc.Scan() {
			line, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
			if !ok {
				continue
			}
			if string(line) == doneData {
				done = true
				break
			}
			if _, err := asm.add(line); err != nil {
				return
			}
		}
		if !done && asm.complete() != nil || done && len(asm.choices) == 0 {
			return
		}
		body, err := asm.body()
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("assembled body is not JSON: %s", body)
		}
		if err := CheckAnswer(body); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("CheckAnswer(assembled) = %v", err)
		}
	})
}

// FuzzStreamBody: the streamed body differs from the record's only in
// "stream" and stream_options.include_usage, whatever the object holds.
func FuzzStreamBody(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"model":"m","stream":false}`, `{"stream_options":null}`, `{"stream_options":{"include_usage":false,"x":1}}`,
		`{ "a" : 1.50e0 , "b":"\u003c" }`, `{"stream_options":[1]}`, `[]`, `{"a":{"stream":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var in map[string]any
		if json.Unmarshal(body, &in) != nil || in == nil {
			return
		}
		out, err := streamBody(body)
		if err != nil {
			if so, ok := in["stream_options"]; ok && so != nil {
				if _, isObj := so.(map[string]any); !isObj {
					return // refused, as it must be
				}
			}
			t.Fatalf("streamBody(%s): %v", body, err)
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("streamBody(%s) = %s, not JSON: %v", body, out, err)
		}
		want := in
		want["stream"] = true
		so, _ := want["stream_options"].(map[string]any)
		if so == nil {
			so = map[string]any{}
		}
		so["include_usage"] = true
		want["stream_options"] = so
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("streamBody(%s) = %s", body, out)
		}
	})
}
