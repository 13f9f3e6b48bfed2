package record_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/record"
)

// secret is placed in prompt text in the invalid cases; no error message
// may contain it.
const secret = "SECRET-PROMPT-TEXT"

func TestParseValid(t *testing.T) {
	defOpts := record.Options{DefaultModel: "def-model", FallbackID: "topic-3-17"}
	tests := []struct {
		name   string
		value  string
		opts   record.Options
		want   record.Request
		wantBy string // expected Body, exact bytes
	}{
		// Shape 1: batch line.
		{
			name:   "batch v1 url",
			value:  `{"custom_id":"r-1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "r-1", Model: "gpt-4o", Shape: record.ShapeBatch},
			wantBy: `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`,
		},
		{
			name:   "batch short url no method default model",
			value:  `{"custom_id":"r-2","url":"/chat/completions","body":{"messages":[{"role":"user","content":"hi"}]}}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "r-2", Model: "def-model", Shape: record.ShapeBatch},
			wantBy: `{"model":"def-model","messages":[{"role":"user","content":"hi"}]}`,
		},
		{
			name:   "batch without custom_id uses fallback",
			value:  `{"url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "topic-3-17", Model: "m", Stream: true, Shape: record.ShapeBatch},
			wantBy: `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		},
		{
			name:   "batch custom_id only inside body",
			value:  `{"url":"/v1/chat/completions","body":{"custom_id":"in-body","model":"m","messages":[{"role":"user","content":"hi"}]}}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "in-body", Model: "m", Shape: record.ShapeBatch},
			wantBy: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		},
		{
			name:   "batch same custom_id top and body",
			value:  `{"custom_id":"same","url":"/v1/chat/completions","body":{"custom_id":"same","model":"m","messages":[{"role":"user","content":"hi"}]}}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "same", Model: "m", Shape: record.ShapeBatch},
			wantBy: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		},
		// Shape 2: bare chat body.
		{
			name:   "chat custom_id removed from middle",
			value:  `{"model":"m","custom_id":"c-1","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "c-1", Model: "m", Shape: record.ShapeBody},
			wantBy: `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`,
		},
		{
			name:   "chat default model inserted first",
			value:  `{"messages":[{"role":"user","content":"hi"}],"stream":false}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "topic-3-17", Model: "def-model", Shape: record.ShapeBody},
			wantBy: `{"model":"def-model","messages":[{"role":"user","content":"hi"}],"stream":false}`,
		},
		{
			name:   "chat default model with html chars not escaped",
			value:  `{"messages":[{"role":"user","content":"hi"}]}`,
			opts:   record.Options{DefaultModel: "a<b>&c"},
			want:   record.Request{Model: "a<b>&c", Shape: record.ShapeBody},
			wantBy: `{"model":"a<b>&c","messages":[{"role":"user","content":"hi"}]}`,
		},
		{
			name:   "chat all roles and content forms",
			value:  `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"data:x"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},{"role":"assistant","tool_calls":[]},{"role":"assistant","content":null,"function_call":{"name":"f"}},{"role":"tool","tool_call_id":"1","content":"r"},{"role":"function","name":"f","content":"r"},{"role":"assistant","content":[]}]}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "topic-3-17", Model: "m", Shape: record.ShapeBody},
			wantBy: `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"data:x"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},{"role":"assistant","tool_calls":[]},{"role":"assistant","content":null,"function_call":{"name":"f"}},{"role":"tool","tool_call_id":"1","content":"r"},{"role":"function","name":"f","content":"r"},{"role":"assistant","content":[]}]}`,
		},
		{
			name:   "chat with prompt member is chat shape and passes prompt through",
			value:  `{"messages":[{"role":"user","content":"hi"}],"prompt":"x"}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "topic-3-17", Model: "def-model", Shape: record.ShapeBody},
			wantBy: `{"model":"def-model","messages":[{"role":"user","content":"hi"}],"prompt":"x"}`,
		},
		{
			name:   "chat body needing no edit passes as it came",
			value:  " {\n \"model\" : \"m\" ,\n\t\"messages\" : [ {\"role\":\"user\", \"content\":\"hi\"} ]\n} \n",
			opts:   defOpts,
			want:   record.Request{CustomID: "topic-3-17", Model: "m", Shape: record.ShapeBody},
			wantBy: "{\n \"model\" : \"m\" ,\n\t\"messages\" : [ {\"role\":\"user\", \"content\":\"hi\"} ]\n}",
		},
		{
			name:   "chat edited body loses whitespace between members",
			value:  " {\n \"custom_id\" : \"c\" ,\n\t\"messages\" : [ {\"role\":\"user\", \"content\":\"hi\"} ]\n} \n",
			opts:   defOpts,
			want:   record.Request{CustomID: "c", Model: "def-model", Shape: record.ShapeBody},
			wantBy: `{"model":"def-model","messages":[ {"role":"user", "content":"hi"} ]}`,
		},
		// Shape 3: simple.
		{
			name:   "simple prompt only",
			value:  `{"custom_id":"s-1","prompt":"hello"}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "s-1", Model: "def-model", Shape: record.ShapeSimple},
			wantBy: `{"model":"def-model","messages":[{"role":"user","content":"hello"}]}`,
		},
		{
			name:   "simple with system model and extras",
			value:  `{"custom_id":"s-2","model":"m","system":"be \"terse\"","prompt":"hi \u00e9 <&>","max_tokens":10,"temperature":0.5,"stream":true}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "s-2", Model: "m", Stream: true, Shape: record.ShapeSimple},
			wantBy: `{"model":"m","messages":[{"role":"system","content":"be \"terse\""},{"role":"user","content":"hi \u00e9 <&>"}],"max_tokens":10,"temperature":0.5,"stream":true}`,
		},
		{
			name:   "simple system after prompt",
			value:  `{"prompt":"p","system":"s"}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "topic-3-17", Model: "def-model", Shape: record.ShapeSimple},
			wantBy: `{"model":"def-model","messages":[{"role":"system","content":"s"},{"role":"user","content":"p"}]}`,
		},
		{
			name:   "simple empty system adds no system message",
			value:  `{"prompt":"p","system":""}`,
			opts:   defOpts,
			want:   record.Request{CustomID: "topic-3-17", Model: "def-model", Shape: record.ShapeSimple},
			wantBy: `{"model":"def-model","messages":[{"role":"user","content":"p"}]}`,
		},
		{
			name:   "no fallback and no custom_id gives empty id",
			value:  `{"prompt":"p","model":"m"}`,
			opts:   record.Options{},
			want:   record.Request{Model: "m", Shape: record.ShapeSimple},
			wantBy: `{"messages":[{"role":"user","content":"p"}],"model":"m"}`,
		},
		{
			name:   "within size limit",
			value:  `{"prompt":"p","model":"m"}`,
			opts:   record.Options{MaxValueBytes: len(`{"prompt":"p","model":"m"}`)},
			want:   record.Request{Model: "m", Shape: record.ShapeSimple},
			wantBy: `{"messages":[{"role":"user","content":"p"}],"model":"m"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := record.Parse([]byte(tt.value), tt.opts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if string(got.Body) != tt.wantBy {
				t.Errorf("Body\n got %s\nwant %s", got.Body, tt.wantBy)
			}
			got.Body = nil
			if tt.want.URL == "" {
				tt.want.URL = record.DefaultEndpoint
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Request = %+v, want %+v", got, tt.want)
			}
			if err := record.Validate([]byte(tt.value)); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	defOpts := record.Options{DefaultModel: "def-model", FallbackID: "fb"}
	chat := func(messages string) string {
		return `{"model":"m","messages":` + messages + `}`
	}
	batch := func(body string) string {
		return `{"custom_id":"b","url":"/v1/chat/completions","body":` + body + `}`
	}
	user := `{"role":"user","content":"` + secret + `"}`
	tests := []struct {
		name     string
		value    string
		opts     *record.Options // nil means defOpts
		sentinel error
		wantMsg  string // substring of err.Error(), names the field
	}{
		// Whole-value problems.
		{"empty", ``, nil, record.ErrInvalidInput, "value is empty"},
		{"whitespace only", " \n\t", nil, record.ErrInvalidInput, "value is empty"},
		{"not json", `{"prompt":"` + secret + `"`, nil, record.ErrInvalidInput, "not valid JSON"},
		{"bare word", `hello`, nil, record.ErrInvalidInput, "not valid JSON"},
		{"trailing garbage", `{"prompt":"` + secret + `"} x`, nil, record.ErrInvalidInput, "not valid JSON"},
		{"trailing second object", `{"prompt":"` + secret + `"}{}`, nil, record.ErrInvalidInput, "not valid JSON"},
		{"array", `[` + user + `]`, nil, record.ErrInvalidInput, "must be a JSON object, got array"},
		{"string", `"` + secret + `"`, nil, record.ErrInvalidInput, "must be a JSON object, got string"},
		{"null", `null`, nil, record.ErrInvalidInput, "must be a JSON object, got null"},
		{"number", `12`, nil, record.ErrInvalidInput, "must be a JSON object, got number"},
		{"invalid utf8", "{\"prompt\":\"\xff\xfe" + secret + "\"}", nil, record.ErrInvalidInput, "not valid UTF-8"},
		{"too large", `{"prompt":"` + secret + `"}`, &record.Options{DefaultModel: "m", MaxValueBytes: 10}, record.ErrInvalidInput, "over the limit of 10"},
		{"duplicate top-level key", `{"prompt":"` + secret + `","prompt":"b"}`, nil, record.ErrInvalidInput, `duplicate key "prompt"`},
		{"duplicate key via escape", `{"model":"a","mod\u0065l":"b","prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, `duplicate key "model"`},
		{"unknown shape", `{"custom_id":"x","text":"` + secret + `"}`, nil, record.ErrInvalidInput, "cannot tell its shape"},
		{"empty object", `{}`, nil, record.ErrInvalidInput, "cannot tell its shape"},

		// custom_id.
		{"custom_id number", `{"custom_id":1,"prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, "custom_id: must be a non-empty string, got number"},
		{"custom_id null", `{"custom_id":null,"prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, "custom_id: must be a non-empty string, got null"},
		{"custom_id empty", `{"custom_id":"","prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, "custom_id: must be a non-empty string, got an empty string"},
		{"custom_id array chat", `{"custom_id":[],"messages":[` + user + `]}`, nil, record.ErrInvalidInput, "custom_id: must be a non-empty string, got array"},
		{"custom_id number batch", `{"custom_id":7,"url":"/v1/chat/completions","body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrInvalidInput, "custom_id: must be a non-empty string, got number"},
		{"custom_id in body empty", batch(`{"custom_id":"","messages":[` + user + `]}`), nil, record.ErrInvalidInput, "body.custom_id: must be a non-empty string"},
		{"custom_id conflict", batch(`{"custom_id":"other","messages":[` + user + `]}`), nil, record.ErrInvalidInput, "body.custom_id: differs from the top-level custom_id"},

		// messages.
		{"messages object", chat(`{}`), nil, record.ErrInvalidInput, "messages: must be an array, got object"},
		{"messages string", chat(`"` + secret + `"`), nil, record.ErrInvalidInput, "messages: must be an array, got string"},
		{"messages null", chat(`null`), nil, record.ErrInvalidInput, "messages: must be an array, got null"},
		{"messages empty", chat(`[]`), nil, record.ErrInvalidInput, "messages: must not be empty"},
		{"message string", chat(`[` + user + `,"` + secret + `"]`), nil, record.ErrInvalidInput, "messages[1]: must be an object, got string"},
		{"message null", chat(`[null]`), nil, record.ErrInvalidInput, "messages[0]: must be an object, got null"},
		{"message array", chat(`[[]]`), nil, record.ErrInvalidInput, "messages[0]: must be an object, got array"},
		{"message duplicate key", chat(`[{"role":"user","role":"system","content":"` + secret + `"}]`), nil, record.ErrInvalidInput, `messages[0]: duplicate key "role"`},
		{"role missing", chat(`[` + user + `,{"content":"` + secret + `"}]`), nil, record.ErrInvalidInput, "messages[1].role: required"},
		{"role number", chat(`[` + user + `,` + user + `,{"role":3,"content":"` + secret + `"}]`), nil, record.ErrInvalidInput, "messages[2].role: must be a string, got number"},
		{"role null", chat(`[{"role":null,"content":"` + secret + `"}]`), nil, record.ErrInvalidInput, "messages[0].role: must be a string, got null"},
		{"role unknown", chat(`[{"role":"bot","content":"` + secret + `"}]`), nil, record.ErrInvalidInput, `messages[0].role: unsupported role "bot"`},
		{"role wrong case", chat(`[{"role":"User","content":"` + secret + `"}]`), nil, record.ErrInvalidInput, `messages[0].role: unsupported role "User"`},
		{"role long truncated", chat(`[{"role":"` + strings.Repeat("r", 500) + `","content":"x"}]`), nil, record.ErrInvalidInput, `messages[0].role: unsupported role "rrrr`},
		{"content missing user", chat(`[{"role":"user"}]`), nil, record.ErrInvalidInput, "messages[0].content: required"},
		{"content missing assistant", chat(`[` + user + `,{"role":"assistant"}]`), nil, record.ErrInvalidInput, "messages[1].content: required"},
		{"content number", chat(`[{"role":"user","content":42}]`), nil, record.ErrInvalidInput, "messages[0].content: must be a string or an array, got number"},
		{"content object", chat(`[{"role":"user","content":{"text":"` + secret + `"}}]`), nil, record.ErrInvalidInput, "messages[0].content: must be a string or an array, got object"},
		{"content bool", chat(`[{"role":"system","content":true}]`), nil, record.ErrInvalidInput, "messages[0].content: must be a string or an array, got boolean"},
		{"content null user", chat(`[{"role":"user","content":null}]`), nil, record.ErrInvalidInput, "messages[0].content: must be a string or an array, got null"},
		{"content null assistant no tool_calls", chat(`[` + user + `,{"role":"assistant","content":null}]`), nil, record.ErrInvalidInput, "messages[1].content: must be a string or an array, got null"},
		{"content null assistant null tool_calls", chat(`[{"role":"assistant","content":null,"tool_calls":null}]`), nil, record.ErrInvalidInput, "messages[0].content: must be a string or an array, got null"},
		{"content null tool with tool_calls", chat(`[{"role":"tool","content":null,"tool_calls":[]}]`), nil, record.ErrInvalidInput, "messages[0].content: must be a string or an array, got null"},
		{"content part string", chat(`[{"role":"user","content":["` + secret + `"]}]`), nil, record.ErrInvalidInput, "messages[0].content[0]: must be an object, got string"},
		{"content part no type", chat(`[{"role":"user","content":[{"type":"text","text":"a"},{"text":"` + secret + `"}]}]`), nil, record.ErrInvalidInput, "messages[0].content[1].type: required"},
		{"content part type number", chat(`[{"role":"user","content":[{"type":1,"text":"` + secret + `"}]}]`), nil, record.ErrInvalidInput, "messages[0].content[0].type: must be a string, got number"},
		{"content part duplicate key", chat(`[{"role":"user","content":[{"type":"text","type":"image_url"}]}]`), nil, record.ErrInvalidInput, `messages[0].content[0]: duplicate key "type"`},

		// model.
		{"model number chat", `{"model":4,"messages":[` + user + `]}`, nil, record.ErrInvalidInput, "model: must be a non-empty string, got number"},
		{"model empty chat", `{"model":"","messages":[` + user + `]}`, nil, record.ErrInvalidInput, "model: must be a non-empty string, got an empty string"},
		{"model null simple", `{"model":null,"prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, "model: must be a non-empty string, got null"},
		{"model in body", batch(`{"model":{},"messages":[` + user + `]}`), nil, record.ErrInvalidInput, "body.model: must be a non-empty string, got object"},
		{"model missing no default chat", `{"messages":[` + user + `]}`, &record.Options{}, record.ErrInvalidInput, "model: required"},
		{"model missing no default simple", `{"prompt":"` + secret + `"}`, &record.Options{}, record.ErrInvalidInput, "model: required"},
		{"model missing no default batch", batch(`{"messages":[` + user + `]}`), &record.Options{}, record.ErrInvalidInput, "body.model: required"},

		// prompt / system.
		{"prompt empty", `{"prompt":""}`, nil, record.ErrInvalidInput, "prompt: must be a non-empty string, got an empty string"},
		{"prompt number", `{"prompt":5}`, nil, record.ErrInvalidInput, "prompt: must be a non-empty string, got number"},
		{"prompt null", `{"prompt":null}`, nil, record.ErrInvalidInput, "prompt: must be a non-empty string, got null"},
		{"prompt array", `{"prompt":["` + secret + `"]}`, nil, record.ErrInvalidInput, "prompt: must be a non-empty string, got array"},
		{"system number", `{"prompt":"` + secret + `","system":1}`, nil, record.ErrInvalidInput, "system: must be a string, got number"},
		{"system null", `{"prompt":"` + secret + `","system":null}`, nil, record.ErrInvalidInput, "system: must be a string, got null"},

		// stream.
		{"stream string chat", `{"stream":"true","messages":[` + user + `]}`, nil, record.ErrInvalidInput, "stream: must be a boolean, got string"},
		{"stream number simple", `{"stream":1,"prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, "stream: must be a boolean, got number"},
		{"stream null", `{"stream":null,"prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, "stream: must be a boolean, got null"},
		{"stream in body", batch(`{"stream":{},"messages":[` + user + `]}`), nil, record.ErrInvalidInput, "body.stream: must be a boolean, got object"},

		// Batch line.
		{"batch method GET", `{"method":"GET","url":"/v1/chat/completions","body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrInvalidInput, `method: must be "POST", got "GET"`},
		{"batch method lower", `{"method":"post","url":"/v1/chat/completions","body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrInvalidInput, `method: must be "POST", got "post"`},
		{"batch method number", `{"method":1,"url":"/v1/chat/completions","body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrInvalidInput, "method: must be a string, got number"},
		{"batch url missing", `{"method":"POST","body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrInvalidInput, "url: required"},
		{"batch url number", `{"url":1,"body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrInvalidInput, "url: must be a string, got number"},
		{"batch url images", `{"url":"/v1/images/generations","body":{"model":"m","prompt":"` + secret + `"}}`, nil, record.ErrUnsupportedURL, `url: "/v1/images/generations"`},
		{"batch url with query", `{"url":"/v1/chat/completions?x=1","body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrUnsupportedURL, `url: "/v1/chat/completions?x=1"`},
		{"batch url only", `{"url":"/v1/chat/completions"}`, nil, record.ErrInvalidInput, "body: required"},
		{"batch body string", `{"url":"/v1/chat/completions","body":"` + secret + `"}`, nil, record.ErrInvalidInput, "body: must be an object, got string"},
		{"batch body null", `{"url":"/v1/chat/completions","body":null}`, nil, record.ErrInvalidInput, "body: must be an object, got null"},
		{"batch body no messages", batch(`{"model":"m","prompt":"` + secret + `"}`), nil, record.ErrInvalidInput, "body.messages: required"},
		{"batch body messages invalid", batch(`{"messages":[` + user + `,{"role":"x","content":"` + secret + `"}]}`), nil, record.ErrInvalidInput, `body.messages[1].role: unsupported role "x"`},
		{"batch body duplicate key", batch(`{"messages":[` + user + `],"messages":[]}`), nil, record.ErrInvalidInput, `body: duplicate key "messages"`},
		{"batch unexpected member", `{"url":"/v1/chat/completions","messages":[` + user + `],"body":` + chat(`[`+user+`]`) + `}`, nil, record.ErrInvalidInput, `unexpected member "messages" in a batch line`},
		{"batch method only", `{"method":"POST","prompt":"` + secret + `"}`, nil, record.ErrInvalidInput, `unexpected member "prompt"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := defOpts
			if tt.opts != nil {
				opts = *tt.opts
			}
			req, err := record.Parse([]byte(tt.value), opts)
			if err == nil {
				t.Fatalf("Parse succeeded with %+v (body %s), want error", req, req.Body)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("error %q does not wrap %v", err, tt.sentinel)
			}
			if !errors.Is(err, record.ErrInvalidInput) {
				t.Errorf("error %q does not wrap ErrInvalidInput", err)
			}
			if !strings.HasPrefix(err.Error(), "invalid input: ") {
				t.Errorf("error %q does not start with %q", err, "invalid input: ")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks prompt text", err)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error message is %d bytes long: %q", len(err.Error()), err)
			}
			if !reflect.DeepEqual(req, record.Request{}) {
				t.Errorf("Parse returned non-zero Request %+v with an error", req)
			}
		})
	}
}

func TestUnsupportedURLOnlyForURL(t *testing.T) {
	_, err := record.Parse([]byte(`{"prompt":""}`), record.Options{DefaultModel: "m"})
	if errors.Is(err, record.ErrUnsupportedURL) {
		t.Errorf("error %q wraps ErrUnsupportedURL", err)
	}
}

// TestPassthroughExact checks that unknown members reach the body byte for
// byte: odd numbers, unicode, escapes, HTML characters, nested objects with
// internal whitespace, and escaped member names.
func TestPassthroughExact(t *testing.T) {
	members := []string{
		`"big":12345678901234567890`,
		`"huge":1e400`,
		`"neg":-0.000000000000000000001E-5`,
		`"html":"<script>a && b</script>"`,
		`"esc":"\u003c\u003e\u0026 \/ \ud83d\ude00 \t"`,
		`"uni":"héllo 世界 😀"`,
		`"nested":{"a" : [1, 2.50, {"b":null, "c" : "<&>"}],  "d":{"e":1e400}}`,
		`"temp\u0065rature":0.70`,
		`"arr":[ ]`,
		`"x-provider":{"safe_prompt":true,"top_k":40,"repetition_penalty":1.10}`,
		`"empty":{}`,
		`"t":true`,
		`"n":null`,
	}
	rest := strings.Join(members, ",")
	msgs := `"messages":[{"role":"user","content":"caf\u00e9 <b>","name":"n" , "extra" : {"k":1e400}}]`

	t.Run("chat", func(t *testing.T) {
		in := `{"custom_id":"c",` + rest + `,` + msgs + `}`
		want := `{"model":"dm",` + rest + `,` + msgs + `}`
		checkBody(t, in, want)
	})
	t.Run("chat spaced", func(t *testing.T) {
		in := "{\n  " + strings.Join(members, " ,\n  ") + ",\n  " + msgs + ",\n  \"custom_id\" : \"c\"\n}\n"
		want := `{"model":"dm",` + rest + `,` + msgs + `}`
		checkBody(t, in, want)
	})
	t.Run("batch", func(t *testing.T) {
		in := `{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{` + rest + `,` + msgs + `,"model":"mm"}}`
		want := `{` + rest + `,` + msgs + `,"model":"mm"}`
		checkBody(t, in, want)
	})
	t.Run("simple", func(t *testing.T) {
		in := `{"custom_id":"c",` + rest + `,"system":"sys \u0026 <x>","prompt":"p\u00e9 \"q\" <&>"}`
		want := `{"model":"dm",` + rest + `,"messages":[{"role":"system","content":"sys \u0026 <x>"},{"role":"user","content":"p\u00e9 \"q\" <&>"}]}`
		checkBody(t, in, want)
	})
}

func checkBody(t *testing.T, in, want string) {
	t.Helper()
	req, err := record.Parse([]byte(in), record.Options{DefaultModel: "dm"})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if string(req.Body) != want {
		t.Errorf("Body\n got %s\nwant %s", req.Body, want)
	}
	if req.CustomID != "c" {
		t.Errorf("CustomID = %q, want c", req.CustomID)
	}
}

func TestValidate(t *testing.T) {
	// Validate accepts a missing model (the consumer has a default) but
	// otherwise applies Parse's rules.
	if err := record.Validate([]byte(`{"prompt":"hi"}`)); err != nil {
		t.Errorf("Validate without model: %v", err)
	}
	if err := record.Validate([]byte(`{"url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}]}}`)); err != nil {
		t.Errorf("Validate batch without model: %v", err)
	}
	for _, v := range []string{
		`{"prompt":"hi","model":""}`,
		`{"messages":[]}`,
		`{"url":"/v1/embeddings","body":{}}`,
		`not json`,
	} {
		if err := record.Validate([]byte(v)); !errors.Is(err, record.ErrInvalidInput) {
			t.Errorf("Validate(%s) = %v, want ErrInvalidInput", v, err)
		}
	}
}

func TestShapeString(t *testing.T) {
	for s, want := range map[record.Shape]string{
		record.ShapeUnknown: "unknown",
		record.ShapeBatch:   "batch",
		record.ShapeBody:    "body",
		record.ShapeSimple:  "simple",
		record.Shape(9):     "Shape(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Shape(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

func TestParseDoesNotAliasInput(t *testing.T) {
	in := []byte(`{"custom_id":"c","model":"m","messages":[{"role":"user","content":"hi"}]}`)
	req, err := record.Parse(in, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := string(req.Body)
	for i := range in {
		in[i] = 'x'
	}
	if string(req.Body) != want {
		t.Errorf("Body changed after the input was overwritten: %s", req.Body)
	}
}
