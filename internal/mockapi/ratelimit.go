package mockapi

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// bucket is one per-minute limit enforced per second by a token bucket
// holding one second's worth (at least 1).
type bucket struct {
	perMinute int
	lim       *rate.Limiter
}

func newBucket(perMinute int) *bucket {
	if perMinute <= 0 {
		return nil
	}
	return &bucket{
		perMinute: perMinute,
		lim:       rate.NewLimiter(rate.Limit(float64(perMinute)/60), max(1, perMinute/60)),
	}
}

// cost clamps n to the burst: a request larger than the bucket needs a
// full bucket and then drives it into debt.
func (b *bucket) cost(n int) int { return min(n, b.lim.Burst()) }

// wait reports how long until n units are available at now (0 = now).
func (b *bucket) wait(now time.Time, n int) time.Duration {
	missing := float64(b.cost(n)) - b.lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return tokensDuration(missing, b.lim.Limit())
}

// tokensDuration is the time to refill n units at limit per second,
// rounded up to the nanosecond while ignoring float noise.
func tokensDuration(n float64, limit rate.Limit) time.Duration {
	return time.Duration(math.Ceil(n/float64(limit)*float64(time.Second) - 1e-3))
}

// take consumes n units at now, going into debt beyond the burst.
func (b *bucket) take(now time.Time, n int) {
	for burst := b.lim.Burst(); n > 0; n -= burst {
		b.lim.ReserveN(now, min(n, burst)) // never canceled: debt is intended
	}
}

// state reports the whole units left and the time until the bucket is full.
func (b *bucket) state(now time.Time) (remaining int, reset time.Duration) {
	t := b.lim.TokensAt(now)
	remaining = max(0, int(math.Floor(t)))
	if missing := float64(b.lim.Burst()) - t; missing > 0 {
		reset = tokensDuration(missing, b.lim.Limit())
	}
	return remaining, reset
}

// limiter applies the request and token buckets atomically.
type limiter struct {
	mu       sync.Mutex
	requests *bucket // nil = unlimited
	tokens   *bucket // nil = unlimited
	now      func() time.Time
}

func newLimiter(rpm, tpm int, now func() time.Time) *limiter {
	return &limiter{requests: newBucket(rpm), tokens: newBucket(tpm), now: now}
}

// limitState is the header view of one bucket.
type limitState struct {
	limit, remaining int
	reset            time.Duration
}

// decision is the outcome of admit.
type decision struct {
	ok bool
	// kind is "requests" or "tokens" when denied.
	kind string
	// retryAfter is how long until the request would be admitted.
	retryAfter time.Duration
	// requested is the amount asked of the denying bucket.
	requested int
	requests  *limitState
	tokens    *limitState
}

// admit checks both buckets for one request of n tokens and consumes from
// both only when both allow it.
func (l *limiter) admit(n int) decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	d := decision{ok: true}
	if l.requests != nil {
		if w := l.requests.wait(now, 1); w > 0 {
			d = decision{kind: "requests", retryAfter: w, requested: 1}
		}
	}
	if l.tokens != nil {
		if w := l.tokens.wait(now, n); w > 0 && w > d.retryAfter {
			d = decision{kind: "tokens", retryAfter: w, requested: n}
		}
	}
	if d.ok {
		if l.requests != nil {
			l.requests.take(now, 1)
		}
		if l.tokens != nil {
			l.tokens.take(now, n)
		}
	}
	d.requests = snapshot(l.requests, now)
	d.tokens = snapshot(l.tokens, now)
	return d
}

func snapshot(b *bucket, now time.Time) *limitState {
	if b == nil {
		return nil
	}
	rem, reset := b.state(now)
	return &limitState{limit: b.perMinute, remaining: rem, reset: reset}
}

// setHeaders writes the x-ratelimit-* headers of the configured limits.
func (d *decision) setHeaders(h http.Header) {
	for _, s := range []struct {
		kind string
		st   *limitState
	}{{"requests", d.requests}, {"tokens", d.tokens}} {
		if s.st == nil {
			continue
		}
		h.Set("x-ratelimit-limit-"+s.kind, strconv.Itoa(s.st.limit))
		h.Set("x-ratelimit-remaining-"+s.kind, strconv.Itoa(s.st.remaining))
		h.Set("x-ratelimit-reset-"+s.kind, formatReset(s.st.reset))
	}
}

// rateLimitError is the 429 answer for a denied decision.
func (d *decision) rateLimitError() *apiError {
	st, unit := d.requests, "requests per min (RPM)"
	if d.kind == "tokens" {
		st, unit = d.tokens, "tokens per min (TPM)"
	}
	msg := fmt.Sprintf("Rate limit reached for %s in organization org-mock on %s: Limit %d, Remaining %d, Requested %d. Please try again in %s.",
		d.kind, unit, st.limit, st.remaining, d.requested, formatReset(d.retryAfter))
	return newError(http.StatusTooManyRequests, d.kind, "rate_limit_exceeded", "", msg)
}

// setRetryAfter writes Retry-After (whole seconds, rounded up, >= 1) and
// retry-after-ms (rounded up, >= 1).
func setRetryAfter(h http.Header, d time.Duration) {
	secs := max(1, int64(math.Ceil(d.Seconds())))
	ms := max(1, int64(math.Ceil(float64(d)/float64(time.Millisecond))))
	h.Set("Retry-After", strconv.FormatInt(secs, 10))
	h.Set("retry-after-ms", strconv.FormatInt(ms, 10))
}

// formatReset formats a duration the way OpenAI's x-ratelimit-reset-*
// headers do: "120ms" below a second, else e.g. "1s" or "6m0s".
func formatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	ms := int64(math.Ceil(float64(d) / float64(time.Millisecond)))
	if ms < 1000 {
		return strconv.FormatInt(ms, 10) + "ms"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}
