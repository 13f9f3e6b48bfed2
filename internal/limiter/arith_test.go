package limiter

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestTokenBucketArithmetic(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newTokenBucket(6000, t0) // 100 tokens/s, burst 100, starts full
	if got, _ := b.reserve(t0, 60); got != 0 {
		t.Fatalf("reserve 60 of 100 waits %v, want 0", got)
	}
	// 40 left; 90 more puts it 50 in debt: half a second at 100/s.
	if got, _ := b.reserve(t0, 90); got != 500*time.Millisecond {
		t.Fatalf("reserve into debt waits %v, want 500ms", got)
	}
	// The call cost 30, not 90: 60 come back, the debt is gone.
	b.credit(t0, 60)
	if got := b.available(t0); got != 10 {
		t.Fatalf("after the credit %v available, want 10", got)
	}
	// Refill over 0.2s adds 20; the level never passes the burst.
	if got := b.available(t0.Add(200 * time.Millisecond)); got != 30 {
		t.Fatalf("after 200ms %v available, want 30", got)
	}
	if got := b.available(t0.Add(time.Hour)); got != 100 {
		t.Fatalf("after an hour %v available, want the burst 100", got)
	}
	// A request larger than the burst is debited the burst only: it
	// goes at once, and the next one waits one refill, not 2.5.
	t1 := t0.Add(time.Hour)
	if got, charged := b.reserve(t1, 250); got != 0 || charged != 100 {
		t.Fatalf("reserve 250 from a full bucket waits %v and charges %v, want 0 and the burst 100", got, charged)
	}
	if got, _ := b.reserve(t1, 100); got != time.Second {
		t.Fatalf("the next request of 100 waits %v, want 1s", got)
	}
	// Whatever a call cost, the debt stays within a minute of refill.
	b.credit(t1, -1e18)
	if got := b.available(t1); got != -6000 {
		t.Fatalf("after an absurd cost %v available, want the floor -6000", got)
	}
	if got, _ := b.reserve(t1, 1e18); got != time.Minute {
		t.Fatalf("reserve at the floor waits %v, want 1m", got)
	}
	// The provider says 40 remain: the level cannot stay above it, and
	// clamp never raises it.
	b2 := newTokenBucket(6000, t0)
	b2.clamp(t0, 40)
	if got := b2.available(t0); got != 40 {
		t.Fatalf("after clamp(40) %v available, want 40", got)
	}
	b2.clamp(t0, 90)
	if got := b2.available(t0); got != 40 {
		t.Fatalf("clamp raised the level to %v", got)
	}
	// Half the share: half the rate and half the burst.
	b2.setRate(50)
	if got, charged := b2.reserve(t0, 90); got != 200*time.Millisecond || charged != 50 {
		t.Fatalf("at 50/s, 90 tokens from 40 wait %v and charge %v, want 200ms and the burst 50", got, charged)
	}
}

func TestProviderLimitHeaders(t *testing.T) {
	h := http.Header{}
	h.Set("x-ratelimit-remaining-requests", "0")
	h.Set("x-ratelimit-reset-requests", "1.5s")
	h.Set("x-ratelimit-remaining-tokens", "1234")
	h.Set("x-ratelimit-reset-tokens", "120ms")
	pl := readProviderLimits(h)
	want := providerLimits{remainingRequests: 0, remainingTokens: 1234, resetRequests: 1500 * time.Millisecond, resetTokens: 120 * time.Millisecond}
	if pl != want {
		t.Fatalf("readProviderLimits = %+v, want %+v", pl, want)
	}
	for v, want := range map[string]time.Duration{
		"6m0s":    6 * time.Minute, // Config.MaxCooldown caps the pause it causes
		"100000h": maxHeaderDuration,
		"1e400":   maxHeaderDuration,
		"NaN":     0,
		"-Inf":    0,
		"2":       2 * time.Second,
		"0.25":    250 * time.Millisecond,
		"soon":    0,
		"-1s":     0,
		"":        0,
	} {
		if got := headerDuration(v); got != want {
			t.Errorf("headerDuration(%q) = %v, want %v", v, got, want)
		}
	}
	if pl := readProviderLimits(nil); pl.remainingRequests != -1 || pl.remainingTokens != -1 {
		t.Errorf("no headers read as %+v, want -1 counts", pl)
	}
	h2 := http.Header{}
	h2.Set("x-ratelimit-remaining-tokens", "lots")
	if pl := readProviderLimits(h2); pl.remainingTokens != -1 {
		t.Errorf("unparsable count read as %d, want -1", pl.remainingTokens)
	}
}

func TestAIMD(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := newAIMD(16)
	if lim, _ := a.state(); lim != 16 {
		t.Fatalf("starts at %d, want the max 16", lim)
	}
	if !a.pushback(t0) {
		t.Fatal("first pushback did not lower the limit")
	}
	if lim, _ := a.state(); lim != 12 {
		t.Fatalf("after one pushback the limit is %d, want 12 (x0.75)", lim)
	}
	// The rest of the same burst of 429s changes nothing.
	if a.pushback(t0.Add(500 * time.Millisecond)) {
		t.Fatal("a second pushback within decreaseGap lowered the limit again")
	}
	a.pushback(t0.Add(2 * time.Second))
	if lim, _ := a.state(); lim != 9 {
		t.Fatalf("after two pushbacks the limit is %d, want 9", lim)
	}
	// One slot per clean window of limit/4 = 2 successes.
	a.success()
	if lim, _ := a.state(); lim != 9 {
		t.Fatalf("one success raised the limit to %d", lim)
	}
	a.success()
	if lim, _ := a.state(); lim != 10 {
		t.Fatalf("a clean window left the limit at %d, want 10", lim)
	}
	// Never below 1, never above the max.
	for i := range 50 {
		a.pushback(t0.Add(time.Duration(10+i) * 2 * time.Second))
	}
	if lim, _ := a.state(); lim != 1 {
		t.Fatalf("floor: limit %d, want 1", lim)
	}
	for range 1000 {
		a.success()
	}
	if lim, _ := a.state(); lim != 16 {
		t.Fatalf("ceiling: limit %d, want 16", lim)
	}
}

func TestAIMDSlotsFollowTheLimit(t *testing.T) {
	a := newAIMD(2)
	ctx := context.Background()
	if err := a.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	a.pushback(time.Now()) // limit 1 with 2 held
	a.release()
	// 1 held at limit 1: a third caller must wait.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := a.acquire(wctx); err == nil {
		t.Fatal("acquired a slot above the lowered limit")
	}
	got := make(chan error, 1)
	go func() { got <- a.acquire(ctx) }()
	a.release()
	if err := <-got; err != nil {
		t.Fatalf("waiter after release: %v", err)
	}
	if _, inFlight := a.state(); inFlight != 1 {
		t.Fatalf("inFlight %d, want 1", inFlight)
	}
}
