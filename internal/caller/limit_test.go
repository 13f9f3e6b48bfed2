package caller

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/processor"
)

func TestOutcomeCharges(t *testing.T) {
	g := &completionModel{}
	est := &processor.Call{Model: "m", Estimate: processor.Estimate{Input: 10, Choices: 1}}
	// xAI: completion_tokens 20 leaves the 20 reasoning tokens out; total_tokens 52 counts them.
	okResp := &processor.Answer{StatusCode: 200, Usage: &processor.Usage{Input: 12, Output: 20, Reasoning: 20, Total: 52}}
	// total_tokens counts xAI's reasoning tokens, which completion_tokens leaves out.
	if o := outcome(g, est, okResp, nil); !o.Success || o.Tokens != 52 {
		t.Errorf("success: %+v, want Success and 52 tokens", o)
	}
	// First answer: mean 40 (20 completion + 20 reasoning), deviation 20.
	if g := g.guess("m"); g != 80 {
		t.Errorf("learned completion guess %d, want 80 (mean 40 + 2 x 20)", g)
	}
	if g := g.guess("other"); g != initialCompletionGuess {
		t.Errorf("guess for an unseen model %d, want %d", g, initialCompletionGuess)
	}
	// A reserved ceiling is the least a call is charged.
	if o := outcome(g, &processor.Call{Model: "m", Estimate: processor.Estimate{Input: 10, Reserved: 500, Choices: 1}}, okResp, nil); o.Tokens != 510 {
		t.Errorf("with max_tokens 500: charged %d, want 510", o.Tokens)
	}
	h := http.Header{}
	h.Set("Retry-After", "2")
	rl := &api.StatusError{Response: &api.Response{StatusCode: 429, Header: h}, RetryAfter: 2 * time.Second}
	if o := outcome(g, est, answer(rl.Response), rl); !o.RateLimited || o.RetryAfter != 2*time.Second || o.Tokens != 0 {
		t.Errorf("429: %+v", o)
	}
	quota := &api.StatusError{Response: &api.Response{StatusCode: 429}, Code: "insufficient_quota"}
	if o := outcome(g, est, answer(quota.Response), quota); o.Unusable == nil || o.RateLimited {
		t.Errorf("insufficient_quota: %+v, want Unusable and not RateLimited", o)
	}
	over := &api.StatusError{Response: &api.Response{StatusCode: 503}}
	if o := outcome(g, est, answer(over.Response), over); !o.Overloaded || o.Tokens != 0 {
		t.Errorf("503: %+v", o)
	}
	if o := outcome(g, est, nil, errors.Join(api.ErrTimeout)); o.Tokens != -1 || o.Success {
		t.Errorf("timeout: %+v, want unknown cost", o)
	}
}

// answer is the processor's view of an api.Response.
func answer(r *api.Response) *processor.Answer {
	return &processor.Answer{StatusCode: r.StatusCode, Header: r.Header, Body: r.Body}
}
