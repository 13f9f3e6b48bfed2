package endpoint

import "testing"

func TestChatEstimate(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want Estimate
	}{
		{"string content", `{"messages":[{"role":"user","content":"12345678"}]}`, Estimate{Input: 2 + 4, Choices: 1}},
		{"parts and system", `{"messages":[{"role":"system","content":"abcd"},{"role":"user","content":[{"type":"text","text":"abcdefgh"},{"type":"image_url","image_url":{"url":"data:"}}]}]}`, Estimate{Input: 3 + 8, Choices: 1}},
		{"max_tokens times n", `{"messages":[{"role":"user","content":"abcd"}],"max_tokens":100,"n":3}`, Estimate{Input: 1 + 4, Reserved: 300, Choices: 3}},
		{"max_completion_tokens wins", `{"messages":[],"max_tokens":100,"max_completion_tokens":40}`, Estimate{Reserved: 40, Choices: 1}},
		{"runes, not bytes", `{"messages":[{"content":"日本語のテキスト"}]}`, Estimate{Input: 2 + 4, Choices: 1}},
		{"not JSON", `0123456789abcdef`, Estimate{Input: 4, Choices: 1}},
		// However a number is written, it is read and capped: no
		// spelling leaves the reservation out.
		{"exponent", `{"messages":[],"n":128,"max_tokens":1e6}`, Estimate{Reserved: 128 * 1_000_000, Choices: 128}},
		{"decimal n", `{"messages":[],"n":128.0,"max_tokens":1000000}`, Estimate{Reserved: 128 * 1_000_000, Choices: 128}},
		{"1e300", `{"messages":[],"max_tokens":1e300}`, Estimate{Reserved: MaxCeiling, Choices: 1}},
		{"past float64", `{"messages":[],"max_tokens":1e400}`, Estimate{Reserved: MaxCeiling, Choices: 1}},
		{"past int64", `{"messages":[],"n":9223372036854775807,"max_tokens":9223372036854775808}`, Estimate{Reserved: MaxChoices * MaxCeiling, Choices: MaxChoices}},
		{"huge integer", `{"messages":[],"max_completion_tokens":99999999999999999999999999999}`, Estimate{Reserved: MaxCeiling, Choices: 1}},
		{"negative", `{"messages":[],"max_tokens":-1,"n":-5}`, Estimate{Choices: 1}},
		{"not a number", `{"messages":[{"content":"abcd"}],"max_tokens":"lots","n":null}`, Estimate{Input: 1 + 4, Choices: 1}},
		{"number in a string", `{"messages":[],"max_tokens":"10000000","n":" 2 "}`, Estimate{Reserved: 2 * 10_000_000, Choices: 2}},
	} {
		if got := (Chat{}).Estimate([]byte(tc.body)); got != tc.want {
			t.Errorf("%s: Estimate = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// FuzzEstimateTokens: whatever the body, every endpoint's estimate is
// bounded and non-negative, n is in [1, MaxChoices], its usage is bounded,
// and nothing overflows.
func FuzzEstimateTokens(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}],"n":128,"max_tokens":1000000}`,
		`{"messages":[],"n":9223372036854775807,"max_tokens":9223372036854775807}`,
		`{"messages":[{"content":[{"text":"abc"},{"text":null}]}],"max_completion_tokens":-5,"n":-1}`,
		`{"messages":[{"content":123}]}`, `not json`, `{"n":1e3}`,
		`{"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"instructions":"x","max_output_tokens":99999999999}`,
		`{"input":[[1,2,3],[4]],"usage":{"prompt_tokens":-3,"total_tokens":1e30}}`,
		`{"prompt":["a","b"],"n":3,"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12,"output_tokens_details":{"reasoning_tokens":99}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, url := range URLs() {
			ep, _ := Lookup(url)
			e := ep.Estimate(body)
			if e.Choices < 1 || e.Choices > MaxChoices || e.Input < 0 || e.Reserved < 0 || e.Reserved > MaxChoices*MaxCeiling {
				t.Fatalf("%s: Estimate(%q) = %+v, out of bounds", url, body, e)
			}
			if e.Input > len(body)+4*len(body) {
				t.Fatalf("%s: Estimate(%q) input %d exceeds what the body can hold", url, body, e.Input)
			}
			u, ok := ep.Usage(body)
			if ok && (u.Total < 0 || u.Total > 2*MaxUsage || u.Input < 0 || u.Output < 0 || u.Reasoning < 0 || u.Output+u.Reasoning > 2*MaxUsage) {
				t.Fatalf("%s: Usage(%q) = %+v, out of bounds", url, body, u)
			}
		}
	})
}
