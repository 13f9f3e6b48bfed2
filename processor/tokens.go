package processor

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"sync"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/limiter"
)

// tokenEstimate is what one request is expected to cost before the call,
// the way the OpenAI cookbook's parallel processor counts: about four
// characters per prompt token plus a few tokens per message, and the
// completion's ceiling (max_tokens or max_completion_tokens, times n).
// There is no tokenizer for Grok's vocabulary in Go; the estimate only has
// to be close, because every call is reconciled with the usage the API
// reports.
type tokenEstimate struct {
	prompt int
	// reserved is n x max_tokens when the request sets a ceiling: the
	// provider may count it against the budget whatever the answer's
	// length, so it is also the least a call is charged.
	reserved int
	n        int
}

// Bounds of what a request or an answer can make the estimate: n is at
// most OpenAI's 128 choices, a ceiling at most maxCeiling tokens, a usage
// figure at most maxUsage; so no product overflows, whatever the record or
// the provider says.
const (
	maxChoices = 128
	maxCeiling = 1 << 30
	maxUsage   = 1 << 40
)

// estimateTokens reads the messages, ceiling and n of a chat-completions
// body. It never fails: an unreadable body estimates as its length. The
// result is bounded (see maxChoices, maxCeiling).
func estimateTokens(body []byte) tokenEstimate {
	var req struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		MaxTokens           *int `json:"max_tokens"`
		MaxCompletionTokens *int `json:"max_completion_tokens"`
		N                   *int `json:"n"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return tokenEstimate{prompt: len(body) / 4, n: 1}
	}
	chars := 0
	for _, m := range req.Messages {
		chars += contentChars(m.Content)
	}
	e := tokenEstimate{prompt: (chars+3)/4 + 4*len(req.Messages), n: 1}
	if req.N != nil && *req.N > 1 {
		e.n = min(*req.N, maxChoices)
	}
	ceiling := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		ceiling = req.MaxCompletionTokens
	}
	if ceiling != nil && *ceiling > 0 {
		e.reserved = e.n * min(*ceiling, maxCeiling)
	}
	return e
}

// contentChars counts the characters of a message content: a string, or
// the text of a parts array.
func contentChars(raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == 'n' {
		return 0
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return utf8.RuneCountInString(s)
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return len(raw)
	}
	n := 0
	for _, p := range parts {
		n += utf8.RuneCountInString(p.Text)
	}
	return n
}

// completionModel learns how long answers are, per model, for requests
// that set no ceiling: exponentially weighted means of the completion plus
// reasoning tokens per choice and of their absolute deviation. The guess is
// the mean plus two deviations: an answer longer than its estimate is
// charged late (when the call ends) while the provider charged it at once,
// and at a binding budget that gap is a 429; a guess on the high side only
// delays the first calls, since every call is reconciled.
type completionModel struct {
	mu    sync.Mutex
	stats map[string]*completionStats
}

type completionStats struct{ mean, dev float64 }

// initialCompletionGuess is the completion estimate before any answer of
// a model was seen: high enough that the first calls do not overrun a
// token budget, corrected within a few answers.
const initialCompletionGuess = 256

func (c *completionModel) guess(model string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.stats[model]; ok {
		return int(min(s.mean+2*s.dev+0.5, maxCeiling))
	}
	return initialCompletionGuess
}

func (c *completionModel) observe(model string, perChoice float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats == nil {
		c.stats = make(map[string]*completionStats)
	}
	s, ok := c.stats[model]
	if !ok {
		c.stats[model] = &completionStats{mean: perChoice, dev: perChoice / 2}
		return
	}
	const alpha = 0.1
	s.dev += alpha * (math.Abs(perChoice-s.mean) - s.dev)
	s.mean += alpha * (perChoice - s.mean)
}

// usage is the part of a chat.completion answer that says what it cost.
// total_tokens is the truth where present: xAI's completion_tokens leaves
// reasoning tokens out, OpenAI's includes them, both count them in the total.
type usage struct {
	PromptTokens            int `json:"prompt_tokens"`
	CompletionTokens        int `json:"completion_tokens"`
	TotalTokens             int `json:"total_tokens"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func readUsage(body []byte) (usage, bool) {
	var v struct {
		Usage *usage `json:"usage"`
	}
	if json.Unmarshal(body, &v) != nil || v.Usage == nil {
		return usage{}, false
	}
	u := *v.Usage
	bound := func(n int) int { return min(max(n, 0), maxUsage) }
	u.PromptTokens, u.CompletionTokens, u.TotalTokens = bound(u.PromptTokens), bound(u.CompletionTokens), bound(u.TotalTokens)
	u.CompletionTokensDetails.ReasoningTokens = bound(u.CompletionTokensDetails.ReasoningTokens)
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u, true
}

// outcome tells the limiter what one call's answer said, and what the
// call cost: its usage (never less than its reserved ceiling), nothing
// when the provider refused it, unknown when no answer came.
func (p *Processor) outcome(model string, est tokenEstimate, resp *api.Response, err error) limiter.Outcome {
	o := limiter.Outcome{Tokens: -1}
	if resp != nil {
		o.Header = resp.Header
	}
	var se *api.StatusError
	var ste *api.StreamError
	switch {
	case err == nil:
		o.Success = true
		if u, ok := readUsage(resp.Body); ok {
			o.Tokens = max(u.TotalTokens, est.prompt+est.reserved)
			generated := max(0, u.TotalTokens-u.PromptTokens)
			p.completions.observe(model, float64(generated)/float64(est.n))
			reasoning := u.CompletionTokensDetails.ReasoningTokens
			p.cfg.Observer.Tokens(model, u.PromptTokens, max(0, generated-reasoning), reasoning)
		}
	case errors.Is(err, api.ErrQuota):
		o.Unusable, o.Tokens = err, 0
	case errors.As(err, &ste):
		// A rate limit or an overload told inside a stream is the same
		// pushback as the answer's status would have been.
		o.RateLimited, o.Overloaded = ste.RateLimited(), ste.Overloaded()
	case errors.As(err, &se):
		switch code := se.Response.StatusCode; {
		case code == http.StatusTooManyRequests:
			o.RateLimited, o.RetryAfter, o.Tokens = true, se.RetryAfter, 0
		case code == http.StatusServiceUnavailable || code == 529:
			o.Overloaded, o.Tokens = true, 0
		case code < 500:
			o.Tokens = 0 // refused before any generation
		}
	}
	return o
}

// request is the limiter's view of a call: its model and estimated cost.
func (p *Processor) request(model string, est tokenEstimate) limiter.Request {
	completion := est.reserved
	if completion == 0 {
		completion = est.n * p.completions.guess(model)
	}
	return limiter.Request{Model: model, Tokens: est.prompt + completion}
}
