package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/limiter"
)

// mustBlock asserts that Acquire does not hand out a permit now: it must
// still be waiting when a short deadline passes. (Only a broken limiter can
// fail this, however loaded the machine is.)
func mustBlock(t *testing.T, l *limiter.Limiter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if p, err := l.Acquire(ctx, limiter.Request{}); err == nil {
		p.Release()
		t.Fatalf("Acquire succeeded with %d of %d permits held", l.InFlight()-1, l.MaxInFlight())
	}
}

func acquire(t *testing.T, l *limiter.Limiter) *limiter.Permit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := l.Acquire(ctx, limiter.Request{})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return p
}

func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{1, 3, 16} {
		t.Run(fmt.Sprint("max=", limit), func(t *testing.T) {
			t.Parallel()
			l := limiter.New(limiter.Config{MaxInFlight: limit})
			if l.MaxInFlight() != limit {
				t.Fatalf("MaxInFlight() = %d, want %d", l.MaxInFlight(), limit)
			}
			const workers, rounds = 48, 20
			var held, peak atomic.Int64
			var over atomic.Int64 // InFlight() observed above max
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range rounds {
						p, err := l.Acquire(context.Background(), limiter.Request{})
						if err != nil {
							t.Errorf("Acquire: %v", err)
							return
						}
						n := held.Add(1)
						for {
							m := peak.Load()
							if n <= m || peak.CompareAndSwap(m, n) {
								break
							}
						}
						if l.InFlight() > limit {
							over.Add(1)
						}
						runtime.Gosched() // let others try to get in
						held.Add(-1)
						p.Release()
					}
				}()
			}
			wg.Wait()
			if got := peak.Load(); got > int64(limit) {
				t.Errorf("peak permits held = %d, want <= %d", got, limit)
			}
			if over.Load() > 0 {
				t.Errorf("InFlight() exceeded %d %d times", limit, over.Load())
			}
			if l.InFlight() != 0 {
				t.Errorf("InFlight() = %d after all releases, want 0", l.InFlight())
			}
		})
	}
}

func TestFullLimiterBlocks(t *testing.T) {
	t.Parallel()
	const limit = 4
	l := limiter.New(limiter.Config{MaxInFlight: limit})
	var permits []*limiter.Permit
	for range limit {
		permits = append(permits, acquire(t, l))
	}
	if l.InFlight() != limit {
		t.Fatalf("InFlight() = %d, want %d", l.InFlight(), limit)
	}
	mustBlock(t, l)

	// A release frees exactly one slot for a waiter.
	got := make(chan *limiter.Permit)
	go func() {
		p, err := l.Acquire(context.Background(), limiter.Request{})
		if err != nil {
			t.Errorf("Acquire: %v", err)
		}
		got <- p
	}()
	permits[0].Release()
	permits[0] = <-got
	if l.InFlight() != limit {
		t.Errorf("InFlight() = %d, want %d", l.InFlight(), limit)
	}
	mustBlock(t, l)
	for _, p := range permits {
		p.Release()
	}
}

func TestNonPositiveMaxMeansOne(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{0, -3} {
		l := limiter.New(limiter.Config{MaxInFlight: limit})
		if l.MaxInFlight() != 1 {
			t.Errorf("MaxInFlight(%d) = %d, want 1", limit, l.MaxInFlight())
		}
		p := acquire(t, l)
		mustBlock(t, l)
		p.Release()
	}
}

func TestReleaseTwiceIsHarmless(t *testing.T) {
	t.Parallel()
	l := limiter.New(limiter.Config{MaxInFlight: 2})
	a := acquire(t, l)
	b := acquire(t, l)
	a.Release()
	a.Release() // must neither panic nor free b's slot
	if l.InFlight() != 1 {
		t.Fatalf("InFlight() = %d after a double release, want 1", l.InFlight())
	}
	c := acquire(t, l)
	mustBlock(t, l) // b and c hold both slots; the double release added none
	b.Release()
	c.Release()
	if l.InFlight() != 0 {
		t.Errorf("InFlight() = %d, want 0", l.InFlight())
	}
	var nilPermit *limiter.Permit
	nilPermit.Release() // harmless too
}

func TestAcquireCanceledWhileWaiting(t *testing.T) {
	t.Parallel()
	t.Run("for a slot", func(t *testing.T) {
		t.Parallel()
		l := limiter.New(limiter.Config{MaxInFlight: 1})
		held := acquire(t, l)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			p, err := l.Acquire(ctx, limiter.Request{})
			if err == nil {
				p.Release()
			}
			errc <- err
		}()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire = %v, want context.Canceled", err)
		}
		if l.InFlight() != 1 {
			t.Errorf("InFlight() = %d, want 1", l.InFlight())
		}
		held.Release()
		acquire(t, l).Release() // the canceled waiter took nothing
	})
	t.Run("already canceled", func(t *testing.T) {
		t.Parallel()
		l := limiter.New(limiter.Config{MaxInFlight: 1})
		held := acquire(t, l)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := l.Acquire(ctx, limiter.Request{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire = %v, want context.Canceled", err)
		}
		held.Release()
	})
	t.Run("for the rate", func(t *testing.T) {
		t.Parallel()
		// 10/s: the second call must wait ~100ms for a token, longer
		// than its 5ms deadline; the slot it took must be given back.
		l := limiter.New(limiter.Config{MaxInFlight: 1, RPM: 600})
		acquire(t, l).Release()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		if p, err := l.Acquire(ctx, limiter.Request{}); err == nil {
			p.Release()
			t.Fatal("Acquire succeeded before a rate token was due")
		}
		if l.InFlight() != 0 {
			t.Errorf("InFlight() = %d, want 0", l.InFlight())
		}
		acquire(t, l).Release() // would hang (and fail at 10s) had the slot leaked
	})
}

func TestRPM(t *testing.T) {
	t.Parallel()
	// RPM 6000 = 100/s with burst 1: 21 permits need >= 20 intervals of
	// 10ms. Only a lower bound is asserted; a loaded box is only slower.
	const rpm, n = 6000, 21
	const minElapsed = 190 * time.Millisecond
	t.Run("sequential", func(t *testing.T) {
		t.Parallel()
		l := limiter.New(limiter.Config{MaxInFlight: 8, RPM: rpm})
		start := time.Now()
		for range n {
			acquire(t, l).Release()
		}
		if d := time.Since(start); d < minElapsed {
			t.Errorf("%d acquisitions at RPM %d took %v, want >= %v", n, rpm, d, minElapsed)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		l := limiter.New(limiter.Config{MaxInFlight: 64, RPM: rpm})
		start := time.Now()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				p, err := l.Acquire(context.Background(), limiter.Request{})
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				p.Release()
			})
		}
		wg.Wait()
		if d := time.Since(start); d < minElapsed {
			t.Errorf("%d concurrent acquisitions at RPM %d took %v, want >= %v", n, rpm, d, minElapsed)
		}
	})
}

func Example() {
	l := limiter.New(limiter.Config{MaxInFlight: 2})
	a, _ := l.Acquire(context.Background(), limiter.Request{})
	b, _ := l.Acquire(context.Background(), limiter.Request{})
	fmt.Println(l.InFlight(), "of", l.MaxInFlight())
	a.Release()
	a.Release() // harmless
	b.Release()
	fmt.Println(l.InFlight(), "of", l.MaxInFlight())
	// Output:
	// 2 of 2
	// 0 of 2
}
