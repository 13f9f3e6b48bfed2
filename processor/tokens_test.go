package processor

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
)

func TestEstimateTokens(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want tokenEstimate
	}{
		{"string content", `{"messages":[{"role":"user","content":"12345678"}]}`, tokenEstimate{prompt: 2 + 4, n: 1}},
		{"parts and system", `{"messages":[{"role":"system","content":"abcd"},{"role":"user","content":[{"type":"text","text":"abcdefgh"},{"type":"image_url","image_url":{"url":"data:"}}]}]}`, tokenEstimate{prompt: 3 + 8, n: 1}},
		{"max_tokens times n", `{"messages":[{"role":"user","content":"abcd"}],"max_tokens":100,"n":3}`, tokenEstimate{prompt: 1 + 4, reserved: 300, n: 3}},
		{"max_completion_tokens wins", `{"messages":[],"max_tokens":100,"max_completion_tokens":40}`, tokenEstimate{reserved: 40, n: 1}},
		{"runes, not bytes", `{"messages":[{"content":"日本語のテキスト"}]}`, tokenEstimate{prompt: 2 + 4, n: 1}},
		{"not JSON", `0123456789abcdef`, tokenEstimate{prompt: 4, n: 1}},
	} {
		if got := estimateTokens([]byte(tc.body)); got != tc.want {
			t.Errorf("%s: estimateTokens = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestOutcomeCharges(t *testing.T) {
	p := New(nil, nil, Config{})
	est := tokenEstimate{prompt: 10, n: 1}
	okResp := &api.Response{StatusCode: 200, Body: []byte(`{"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":52,"completion_tokens_details":{"reasoning_tokens":20}}}`)}
	// total_tokens counts xAI's reasoning tokens, which completion_tokens leaves out.
	if o := p.outcome("m", est, okResp, nil); !o.Success || o.Tokens != 52 {
		t.Errorf("success: %+v, want Success and 52 tokens", o)
	}
	// First answer: mean 40 (20 completion + 20 reasoning), deviation 20.
	if g := p.completions.guess("m"); g != 80 {
		t.Errorf("learned completion guess %d, want 80 (mean 40 + 2 x 20)", g)
	}
	if g := p.completions.guess("other"); g != initialCompletionGuess {
		t.Errorf("guess for an unseen model %d, want %d", g, initialCompletionGuess)
	}
	// A reserved ceiling is the least a call is charged.
	if o := p.outcome("m", tokenEstimate{prompt: 10, reserved: 500, n: 1}, okResp, nil); o.Tokens != 510 {
		t.Errorf("with max_tokens 500: charged %d, want 510", o.Tokens)
	}
	h := http.Header{}
	h.Set("Retry-After", "2")
	rl := &api.StatusError{Response: &api.Response{StatusCode: 429, Header: h}, RetryAfter: 2 * time.Second}
	if o := p.outcome("m", est, rl.Response, rl); !o.RateLimited || o.RetryAfter != 2*time.Second || o.Tokens != 0 {
		t.Errorf("429: %+v", o)
	}
	quota := &api.StatusError{Response: &api.Response{StatusCode: 429}, Code: "insufficient_quota"}
	if o := p.outcome("m", est, quota.Response, quota); o.Unusable == nil || o.RateLimited {
		t.Errorf("insufficient_quota: %+v, want Unusable and not RateLimited", o)
	}
	over := &api.StatusError{Response: &api.Response{StatusCode: 503}}
	if o := p.outcome("m", est, over.Response, over); !o.Overloaded || o.Tokens != 0 {
		t.Errorf("503: %+v", o)
	}
	if o := p.outcome("m", est, nil, errors.Join(api.ErrTimeout)); o.Tokens != -1 || o.Success {
		t.Errorf("timeout: %+v, want unknown cost", o)
	}
}

// FuzzEstimateTokens: whatever the body, the estimate is bounded and
// non-negative, n is in [1, maxChoices], and nothing overflows.
func FuzzEstimateTokens(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}],"n":128,"max_tokens":1000000}`,
		`{"messages":[],"n":9223372036854775807,"max_tokens":9223372036854775807}`,
		`{"messages":[{"content":[{"text":"abc"},{"text":null}]}],"max_completion_tokens":-5,"n":-1}`,
		`{"messages":[{"content":123}]}`, `not json`, `{"n":1e3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e := estimateTokens(body)
		if e.n < 1 || e.n > maxChoices || e.prompt < 0 || e.reserved < 0 || e.reserved > maxChoices*maxCeiling {
			t.Fatalf("estimateTokens(%q) = %+v, out of bounds", body, e)
		}
		if e.prompt > len(body)+4*len(body) {
			t.Fatalf("estimateTokens(%q) prompt %d exceeds what the body can hold", body, e.prompt)
		}
		u, ok := readUsage(body)
		if ok && (u.TotalTokens < 0 || u.TotalTokens > 2*maxUsage || u.PromptTokens < 0) {
			t.Fatalf("readUsage(%q) = %+v, out of bounds", body, u)
		}
	})
}
