package caller

import (
	"context"
	"errors"
	"math"
	"net/http"
	"sync"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/processor"
)

// Limit is the middleware that makes every call under l: it acquires a
// permit for the call's model and estimated tokens, and tells l what the
// answer said and what the call cost. An answer saying the account cannot
// go on (quota, 401) is not this record's failure: l pauses every call
// until a probe succeeds, and the call waits for that (trying again)
// instead of using up the record's attempts. When other calls succeeded
// meanwhile l does not pause, and the refusal is this call's own (a model
// or permission the key lacks): it is returned.
func Limit(l *limiter.Limiter) processor.Middleware {
	g := &completionModel{}
	return func(next processor.Caller) processor.Caller {
		return processor.CallerFunc(func(ctx context.Context, c *processor.Call) (*processor.Answer, error) {
			for {
				permit, err := l.Acquire(ctx, limiter.Request{Model: c.Model, Tokens: tokens(g, c)})
				if err != nil {
					return nil, err
				}
				resp, err := next.Call(ctx, c)
				permit.Done(outcome(g, c, resp, err))
				if errors.Is(err, api.ErrQuota) && ctx.Err() == nil && l.Paused() {
					continue
				}
				return resp, err
			}
		})
	}
}

// tokens is the limiter's estimate of a call: its input and reserved
// output, or, when the body sets no ceiling, n times the model's usual
// answer length.
func tokens(g *completionModel, c *processor.Call) int {
	e := c.Estimate
	out := e.Reserved
	if out == 0 && !e.NoOutput {
		out = max(e.Choices, 1) * g.guess(c.Model)
	}
	return e.Input + out
}

// outcome tells the limiter what one call's answer said, and what the
// call cost: its usage (never less than its estimate with the reserved
// ceiling), nothing when the provider refused it, unknown when no answer
// came.
func outcome(g *completionModel, c *processor.Call, resp *processor.Answer, err error) limiter.Outcome {
	o := limiter.Outcome{Tokens: -1}
	if resp != nil {
		o.Header = resp.Header
	}
	var se *api.StatusError
	var ste *api.StreamError
	switch {
	case err == nil:
		o.Success = true
		if u := resp.Usage; u != nil {
			o.Tokens = max(u.Total, c.Estimate.Input+c.Estimate.Reserved)
			if !c.Estimate.NoOutput {
				g.observe(c.Model, float64(u.Output+u.Reasoning)/float64(max(c.Estimate.Choices, 1)))
			}
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

// completionModel learns how long answers are, per model, for requests
// that set no ceiling: exponentially weighted means of the output plus
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

// initialCompletionGuess is the output estimate before any answer of a
// model was seen: high enough that the first calls do not overrun a token
// budget, corrected within a few answers.
const initialCompletionGuess = 256

func (c *completionModel) guess(model string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.stats[model]; ok {
		return int(min(s.mean+2*s.dev+0.5, endpoint.MaxCeiling))
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
