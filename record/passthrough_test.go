package record_test

import (
	"bytes"
	"testing"

	"github.com/sluice-dev/sluice/internal/jsonobj"
	"github.com/sluice-dev/sluice/record"
)

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
	req, err := record.Parse([]byte(in), record.Options{DefaultModel: "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	inFields, err := jsonobj.ReadObject([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	outFields, err := jsonobj.ReadObject(req.Body)
	if err != nil {
		t.Fatalf("output is not an object: %v", err)
	}
	var want []jsonobj.Field
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
	if req.Model != "vendor/model:v1" || req.CustomID != "r-9" || req.Shape != record.ShapeBody {
		t.Errorf("got %+v", req)
	}
}
