package endpoint

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/sluice-dev/sluice/internal/api"
)

// FuzzAnswer decodes untrusted answer bytes the three ways sluice does: a
// plain 2xx (Chat.Check) and a stream
// whose lines are events. Nothing panics, and a stream that assembles
// without error is an answer Check accepts: a stream is never a
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
		if err := (Chat{}).Check(b); err != nil && !errors.Is(err, api.ErrMalformed) {
			t.Fatalf("Check error %v is not ErrMalformed", err)
		}

		asm := Chat{}.NewAssembler().(*chatAssembler)
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		done := false
		for sc.Scan() {
			line, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
			if !ok {
				continue
			}
			_, end, err := asm.Add(api.Event{Data: line})
			if err != nil {
				return
			}
			if end {
				done = true
				break
			}
		}
		body, err := asm.Finish(done)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("assembled body is not JSON: %s", body)
		}
		if err := (Chat{}).Check(body); err != nil && !errors.Is(err, api.ErrMalformed) {
			t.Fatalf("Check(assembled) = %v", err)
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
		out, err := Chat{}.StreamBody(body)
		if err != nil {
			if so, ok := in["stream_options"]; ok && so != nil {
				if _, isObj := so.(map[string]any); !isObj {
					return // refused, as it must be
				}
			}
			t.Fatalf("StreamBody(%s): %v", body, err)
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("StreamBody(%s) = %s, not JSON: %v", body, out, err)
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
			t.Fatalf("StreamBody(%s) = %s", body, out)
		}
	})
}
