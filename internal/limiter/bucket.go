package limiter

import (
	"math"
	"time"
)

// tokenBucket is the token budget (TPM) of the limiter: it refills at rate
// tokens per second up to burst (one second's worth, so the budget is
// smoothed per second the way providers enforce it) and may go into debt.
// Unlike golang.org/x/time/rate it can credit tokens back: a request is
// debited its estimate before the call and reconciled with the usage the
// API reports afterwards, and rate.Limiter cannot return tokens once a
// reservation's time has passed. Not safe for concurrent use; the Limiter's
// mutex guards it.
type tokenBucket struct {
	rate  float64 // tokens per second
	burst float64
	level float64 // may be negative: debt that later reservations wait out
	last  time.Time
}

func newTokenBucket(perMinute float64, now time.Time) *tokenBucket {
	b := &tokenBucket{last: now}
	b.setRate(perMinute / 60)
	b.level = b.burst
	return b
}

// setRate changes the refill rate (the fleet share changed); the burst
// follows it.
func (b *tokenBucket) setRate(perSecond float64) {
	b.rate = perSecond
	b.burst = math.Max(1, perSecond)
	b.level = math.Max(math.Min(b.level, b.burst), b.floor())
}

func (b *tokenBucket) advance(now time.Time) {
	if now.After(b.last) {
		b.level = math.Min(b.burst, b.level+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
}

// maxDebtSeconds bounds the bucket's debt to this many seconds of refill:
// whatever one call cost (or an answer claimed it cost), the calls after
// it wait at most that long for tokens.
const maxDebtSeconds = 60

// reserve debits n tokens at now, but never more than the bucket holds
// when full (burst), and returns how long the caller must wait before
// acting (zero while the bucket covers the debit, else the time to refill
// the debt) and the tokens debited. Waiters are served in reservation
// order.
func (b *tokenBucket) reserve(now time.Time, n float64) (wait time.Duration, charged float64) {
	b.advance(now)
	charged = math.Min(math.Max(n, 0), b.burst)
	b.level = math.Max(b.level-charged, b.floor())
	if b.level >= 0 {
		return 0, charged
	}
	return time.Duration(math.Ceil(-b.level / b.rate * float64(time.Second))), charged
}

// credit adds n tokens (a negative n debits): the difference between what
// a request was charged and what it cost. The level stays between the
// floor (maxDebtSeconds of refill in debt) and the burst.
func (b *tokenBucket) credit(now time.Time, n float64) {
	if math.IsNaN(n) {
		return
	}
	b.advance(now)
	b.level = math.Max(math.Min(b.burst, b.level+n), b.floor())
}

// floor is the lowest level: maxDebtSeconds of refill in debt.
func (b *tokenBucket) floor() float64 { return -maxDebtSeconds * b.burst }

// clamp lowers the level to at most n: the provider said fewer tokens
// remain than the bucket believes.
func (b *tokenBucket) clamp(now time.Time, n float64) {
	b.advance(now)
	b.level = math.Min(b.level, n)
}

// available returns the whole tokens available now (negative in debt).
func (b *tokenBucket) available(now time.Time) float64 {
	b.advance(now)
	return math.Floor(b.level)
}
