package record_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/sluice-dev/sluice/record"
)

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"custom_id":"r-1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}}`,
		`{"url":"/chat/completions","body":{"custom_id":"b","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}}`,
		`{"url":"/v1/embeddings","body":{"input":"x"}}`,
		`{"url":"/v1/responses","body":{"model":"m","input":[{"role":"user","content":"hi"}],"instructions":"be brief","stream":true}}`,
		`{"url":"/v1/moderations","body":{"input":["a","b"]}}`,
		`{"url":"/v1/completions","body":{"model":"m","prompt":[1,2,3],"max_tokens":5}}`,
		`{"custom_id":"c","model":"m","messages":[{"role":"system","content":"s"},{"role":"assistant","content":null,"tool_calls":[]}],"stream":true,"x":1e400}`,
		`{"messages":[{"role":"user","content":"caf\u00e9 <&>"}],"big":12345678901234567890,"n":{"a" : [ 1 ]}}`,
		`{"custom_id":"s","prompt":"hello","system":"be brief","max_tokens":16,"temperature":0.2}`,
		`{"prompt":"p","system":""}`,
		`{"prompt":""}`,
		`{"custom_id":"c\u005fid","custom\u005fid":"x","prompt":"p"}`,
		`{"model":"a","mod\u0065l":"b","messages":[]}`,
		`{"messages":[{"role":"user","role":"user","content":"x"}]}`,
		`{"prompt":"x"} trailing`,
		`[{"prompt":"x"}]`,
		`{}`,
		``,
		"{\"prompt\":\"\xff\"}",
	} {
		f.Add([]byte(seed), "default-model")
		f.Add([]byte(seed), "")
	}
	f.Fuzz(func(t *testing.T, value []byte, defaultModel string) {
		orig := bytes.Clone(value)
		opts := record.Options{DefaultModel: defaultModel, FallbackID: "fb"}
		req, err := record.Parse(value, opts)
		if !bytes.Equal(value, orig) {
			t.Fatal("Parse modified its input")
		}
		verr := record.Validate(value)
		if err != nil {
			if !errors.Is(err, record.ErrInvalidInput) {
				t.Fatalf("error %v does not wrap ErrInvalidInput", err)
			}
			if req.Body != nil || req.Shape != record.ShapeUnknown {
				t.Fatalf("non-zero Request with error: %+v", req)
			}
			// Validate is Parse minus the model requirement, so the
			// only error Validate may not share is a missing model.
			if verr == nil && defaultModel != "" {
				t.Fatalf("Validate accepts what Parse rejects with a default model: %v", err)
			}
			return
		}
		if verr != nil {
			t.Fatalf("Parse accepts but Validate rejects: %v", verr)
		}
		if req.Shape == record.ShapeUnknown {
			t.Fatal("Shape unknown on success")
		}
		if !json.Valid(req.Body) {
			t.Fatalf("Body is not valid JSON: %q", req.Body)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(req.Body, &top); err != nil {
			t.Fatalf("Body is not an object: %v", err)
		}
		if _, ok := top["custom_id"]; ok {
			t.Fatalf("Body has custom_id: %s", req.Body)
		}
		if _, ok := top["messages"]; !ok && req.URL == record.DefaultEndpoint {
			t.Fatalf("Body has no messages: %s", req.Body)
		}
		rawModel, ok := top["model"]
		if !ok && req.URL == "/v1/moderations" {
			return // the model is optional
		}
		if !ok {
			t.Fatalf("Body has no model: %s", req.Body)
		}
		var model string
		if err := json.Unmarshal(rawModel, &model); err != nil || model == "" || model != req.Model {
			t.Fatalf("Body model %s does not match Model %q (err %v)", rawModel, req.Model, err)
		}
		if s, ok := top["stream"]; req.Stream != (ok && string(s) == "true") {
			t.Fatalf("Stream = %v but body stream is %s", req.Stream, s)
		}
		if req.CustomID == "" {
			t.Fatal("CustomID empty despite FallbackID")
		}
		// Parsing the body again as a body of its endpoint must succeed
		// and be a fixed point (unless a batch body carries members that
		// make it look like a batch line).
		for _, k := range []string{"body", "url", "method"} {
			if _, ok := top[k]; ok {
				return
			}
		}
		again, err := record.Parse(req.Body, record.Options{Endpoint: req.URL})
		if err != nil {
			t.Fatalf("re-parsing Body failed: %v (body %s)", err, req.Body)
		}
		if !bytes.Equal(again.Body, req.Body) {
			t.Fatalf("re-parse changed Body:\n%s\n%s", req.Body, again.Body)
		}
	})
}
