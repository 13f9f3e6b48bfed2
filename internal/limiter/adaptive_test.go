package limiter_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/limiter"
)

func acquireReq(t *testing.T, l *limiter.Limiter, req limiter.Request) *limiter.Permit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := l.Acquire(ctx, req)
	if err != nil {
		t.Fatalf("Acquire(%+v): %v", req, err)
	}
	return p
}

// blocks asserts that Acquire(req) is still waiting after a short deadline.
func blocks(t *testing.T, l *limiter.Limiter, req limiter.Request) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if p, err := l.Acquire(ctx, req); err == nil {
		p.Release()
		t.Fatalf("Acquire(%+v) passed; want it to wait", req)
	}
}

func TestTokensAreReconciledWithUsage(t *testing.T) {
	t.Parallel()
	// TPM 60: one token per second, so any wait for tokens is long and a
	// pass is unmistakable.
	l := limiter.New(limiter.Config{MaxInFlight: 8, TPM: 60})
	// The bucket holds one second (1 token); a 1-token estimate passes.
	p := acquireReq(t, l, limiter.Request{Tokens: 1})
	blocks(t, l, limiter.Request{Tokens: 1})
	// The provider refused the call (cost 0): the token comes back.
	p.Done(limiter.Outcome{Tokens: 0})
	p = acquireReq(t, l, limiter.Request{Tokens: 1})
	// This one cost more than estimated: the bucket goes into debt.
	p.Done(limiter.Outcome{Success: true, Tokens: 30})
	if s := l.State(); s.TokensAvailable > -29 {
		t.Fatalf("after a 30-token call estimated at 1, %v tokens available; want about -29", s.TokensAvailable)
	}
	blocks(t, l, limiter.Request{Tokens: 1})
	// An abandoned call keeps its estimate charged.
	l2 := limiter.New(limiter.Config{MaxInFlight: 8, TPM: 60})
	acquireReq(t, l2, limiter.Request{Tokens: 1}).Release()
	blocks(t, l2, limiter.Request{Tokens: 1})
}

func TestRateLimitedAnswerPausesEveryone(t *testing.T) {
	t.Parallel()
	l := limiter.New(limiter.Config{MaxInFlight: 8})
	a := acquireReq(t, l, limiter.Request{})
	b := acquireReq(t, l, limiter.Request{})
	start := time.Now()
	a.Done(limiter.Outcome{RateLimited: true, RetryAfter: 300 * time.Millisecond, Tokens: 0})
	if s := l.State(); s.CooldownUntil.IsZero() || s.Concurrency != 6 {
		t.Fatalf("after a 429: cooldown until %v, concurrency %d; want a cooldown and 6 (8 x 0.75)", s.CooldownUntil, s.Concurrency)
	}
	blocks(t, l, limiter.Request{})
	acquireReq(t, l, limiter.Request{}).Release()
	if d := time.Since(start); d < 290*time.Millisecond {
		t.Fatalf("a call started %v after a 429 asking for 300ms", d)
	}
	b.Done(limiter.Outcome{Success: true, Tokens: -1})
}

func TestRemainingRequestsZeroStartsCooldown(t *testing.T) {
	t.Parallel()
	l := limiter.New(limiter.Config{MaxInFlight: 8})
	h := http.Header{}
	h.Set("x-ratelimit-remaining-requests", "0")
	h.Set("x-ratelimit-reset-requests", "250ms")
	start := time.Now()
	acquireReq(t, l, limiter.Request{}).Done(limiter.Outcome{Success: true, Tokens: -1, Header: h})
	acquireReq(t, l, limiter.Request{}).Release()
	if d := time.Since(start); d < 240*time.Millisecond {
		t.Fatalf("next call after %v; the provider said none remain for 250ms", d)
	}
}

func TestRemainingTokensLowerTheBucket(t *testing.T) {
	t.Parallel()
	l := limiter.New(limiter.Config{MaxInFlight: 8, TPM: 600_000}) // 10k/s
	l.SetShare(0.5)
	h := http.Header{}
	h.Set("x-ratelimit-remaining-tokens", "100")
	acquireReq(t, l, limiter.Request{Tokens: 10}).Done(limiter.Outcome{Success: true, Tokens: 10, Header: h})
	// 100 remain for the group, this replica has half of them.
	if s := l.State(); s.TokensAvailable > 50+200 { // + refill while the test runs
		t.Fatalf("%v tokens available after the provider said 100 remain (share 1/2)", s.TokensAvailable)
	}
}

func TestUnusableAccountPausesAndProbes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []bool
	l := limiter.New(limiter.Config{
		MaxInFlight:   8,
		ProbeInterval: 50 * time.Millisecond,
		OnPause: func(p bool) {
			mu.Lock()
			events = append(events, p)
			mu.Unlock()
		},
	})
	quota := errors.New("status 429 (insufficient_quota)")
	inflight := acquireReq(t, l, limiter.Request{})
	acquireReq(t, l, limiter.Request{}).Done(limiter.Outcome{Unusable: quota, Tokens: 0})
	if !l.Paused() || l.State().Reason == "" {
		t.Fatalf("not paused after an unusable answer: %+v", l.State())
	}
	// A call in flight from before the pause answers the same: no new event.
	inflight.Done(limiter.Outcome{Unusable: quota, Tokens: 0})

	// One probe per interval: the first waiter passes, the next waits.
	probe := acquireReq(t, l, limiter.Request{})
	blocks(t, l, limiter.Request{})
	probe.Done(limiter.Outcome{Unusable: quota, Tokens: 0})
	if !l.Paused() {
		t.Fatal("a failed probe resumed the limiter")
	}
	// Waiters queue up; the next probe succeeds and lets them all go.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			p, err := l.Acquire(context.Background(), limiter.Request{})
			if err != nil {
				t.Error(err)
				return
			}
			p.Done(limiter.Outcome{Success: true, Tokens: -1})
		})
	}
	wg.Wait()
	if l.Paused() {
		t.Fatal("still paused after a successful probe")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || !events[0] || events[1] {
		t.Fatalf("OnPause events %v, want [true false]", events)
	}
}

func TestShareSplitsTheBudget(t *testing.T) {
	t.Parallel()
	// RPM 6000 for the group; with 2 members this replica gets 50/s, so 11
	// calls take at least 10 intervals of 20ms.
	l := limiter.New(limiter.Config{MaxInFlight: 8, RPM: 6000})
	l.SetShare(0.5)
	if s := l.State(); s.Share != 0.5 {
		t.Fatalf("share %v, want 0.5", s.Share)
	}
	start := time.Now()
	for range 11 {
		acquireReq(t, l, limiter.Request{}).Release()
	}
	if d := time.Since(start); d < 190*time.Millisecond {
		t.Fatalf("11 calls at half of 100/s took %v, want >= 200ms", d)
	}
}

func TestModelBudgets(t *testing.T) {
	t.Parallel()
	l := limiter.New(limiter.Config{MaxInFlight: 8, Models: map[string]limiter.Budget{"small": {RPM: 6}}})
	acquireReq(t, l, limiter.Request{Model: "small"}).Release()
	blocks(t, l, limiter.Request{Model: "small"}) // next in 10s
	acquireReq(t, l, limiter.Request{Model: "big"}).Release()
	acquireReq(t, l, limiter.Request{Model: "big"}).Release()
}
