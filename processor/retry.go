package processor

import (
	"context"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/sluice-dev/sluice/internal/api"
)

// backoff is the retry schedule of one record: exponential from RetryBase,
// ±20% jitter, capped at RetryMax, MaxAttempts attempts in all. When the
// last answer asked for a longer wait (*hint, from Retry-After), that
// wins, up to RetryMax too: a server asking for an hour is asked again
// after RetryMax (the limiter's global cooldown has the same cap).
func (p *Processor) backoff(hint *time.Duration) retry.Backoff {
	b := retry.NewExponential(p.cfg.RetryBase)
	b = retry.WithJitterPercent(20, b)
	b = retry.WithCappedDuration(p.cfg.RetryMax, b)
	b = retry.WithMaxRetries(uint64(p.cfg.MaxAttempts-1), b)
	return retry.BackoffFunc(func() (time.Duration, bool) {
		d, stop := b.Next()
		if stop {
			return 0, true
		}
		return max(d, min(*hint, p.cfg.RetryMax)), false
	})
}

// retryDo runs f under b; the retryability of f's error is decided in one
// place, api.Retryable.
func retryDo(ctx context.Context, b retry.Backoff, f func(context.Context) error) error {
	return retry.Do(ctx, b, func(ctx context.Context) error {
		err := f(ctx)
		if ctx.Err() == nil && api.Retryable(err) {
			return retry.RetryableError(err)
		}
		return err
	})
}
