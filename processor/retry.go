package processor

import (
	"context"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/sluice-dev/sluice/internal/api"
)

// retry is the retry loop of one record, as a middleware around next: up
// to MaxAttempts calls, counted in *attempts, honouring Retry-After when
// the API asks for a longer wait than the backoff would take, up to
// RetryMax: a longer server-requested wait is cut there, and the record
// asks again.
func (p *Processor) retry(attempts *int, next Caller) Caller {
	return CallerFunc(func(ctx context.Context, c *Call) (resp *Answer, err error) {
		var hint time.Duration
		err = retryDo(ctx, p.backoff(&hint), func(ctx context.Context) error {
			*attempts++
			if *attempts > 1 {
				p.cfg.Observer.Retry()
			}
			resp, err = next.Call(ctx, c)
			hint = api.RetryAfter(err)
			return err
		})
		return resp, err
	})
}

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
