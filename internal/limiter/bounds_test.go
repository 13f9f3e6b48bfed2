package limiter_test

import (
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/limiter"
)

// One server-requested wait is capped at MaxCooldown (SLUICE_RETRY_MAX):
// a 429 asking for an hour pauses calls for the cap, not the hour.
func TestCooldownCappedAtMaxCooldown(t *testing.T) {
	t.Parallel()
	const cap = 200 * time.Millisecond
	l := limiter.New(limiter.Config{MaxInFlight: 4, MaxCooldown: cap})
	acquireReq(t, l, limiter.Request{}).Done(limiter.Outcome{RateLimited: true, RetryAfter: time.Hour, Tokens: 0})
	after := time.Now()
	until := l.State().CooldownUntil
	if until.IsZero() || until.Sub(after) > cap {
		t.Fatalf("cooldown until %v, %v after the 429; want a cooldown of at most %v", until, until.Sub(after), cap)
	}
	// The next call goes once the capped cooldown is over.
	acquireReq(t, l, limiter.Request{}).Release()
}

// A request estimated far above the bucket (n=128 x max_tokens=1M under
// TPM 2M) is debited the bucket only: the request after it does not wait
// hours, and the debt is charged as what the call cost, bounded to a
// minute of refill.
func TestHugeEstimateDoesNotHoldBackTheNext(t *testing.T) {
	t.Parallel()
	l := limiter.New(limiter.Config{MaxInFlight: 4, TPM: 2_000_000})
	if got := l.TokenBudget("grok-4"); got != 2_000_000 {
		t.Fatalf("TokenBudget = %d, want 2000000", got)
	}
	big := acquireReq(t, l, limiter.Request{Model: "grok-4", Tokens: 128_000_000})
	if s := l.State(); s.TokensAvailable < -1 {
		t.Fatalf("after the huge reservation %v tokens available; want the bucket emptied, not %v in debt", s.TokensAvailable, -s.TokensAvailable)
	}
	// Refused by the provider: refunded.
	big.Done(limiter.Outcome{Tokens: 0})
	// An answer claiming an absurd cost puts the bucket at most a
	// minute of refill in debt.
	acquireReq(t, l, limiter.Request{Model: "grok-4", Tokens: 10}).Done(limiter.Outcome{Success: true, Tokens: 1 << 62})
	if s := l.State(); s.TokensAvailable < -2_000_000 {
		t.Fatalf("after an absurd usage %v tokens available; want at least -2000000 (one minute)", s.TokensAvailable)
	}
	// Per-model budgets lower TokenBudget.
	l2 := limiter.New(limiter.Config{TPM: 2_000_000, Models: map[string]limiter.Budget{"m": {TPM: 1000}}})
	if got := l2.TokenBudget("m"); got != 1000 {
		t.Errorf("TokenBudget(m) = %d, want the model's 1000", got)
	}
	if got := limiter.New(limiter.Config{}).TokenBudget("m"); got != 0 {
		t.Errorf("TokenBudget without TPM = %d, want 0", got)
	}
}
