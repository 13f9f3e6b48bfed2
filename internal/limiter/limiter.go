// Package limiter decides when sluice may start an API call: at most
// MaxInFlight calls at once and, when a budget is set, no more than RPM
// requests per minute, smoothed per second the way providers enforce it
// (RPS = RPM/60).
//
//	l := limiter.New(limiter.Config{MaxInFlight: 256, RPM: 600})
//	permit, err := l.Acquire(ctx)
//	if err != nil { return err }
//	defer permit.Release()
package limiter

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"
)

// Config sets the limits.
type Config struct {
	// MaxInFlight caps concurrent calls; must be positive.
	MaxInFlight int
	// RPM is the requests-per-minute budget; 0 means none.
	RPM int
}

// Limiter hands out permits to call the API. It is safe for concurrent use.
type Limiter struct {
	slots    *semaphore.Weighted
	rate     *rate.Limiter // nil when there is no budget
	inFlight atomic.Int64
	max      int
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	l := &Limiter{slots: semaphore.NewWeighted(int64(max(cfg.MaxInFlight, 1))), max: max(cfg.MaxInFlight, 1)}
	if cfg.RPM > 0 {
		// Burst 1: requests are spaced evenly, so no one-second window
		// ever sees more than RPM/60 (rounded up).
		l.rate = rate.NewLimiter(rate.Limit(float64(cfg.RPM)/60), 1)
	}
	return l
}

// Permit is the right to make one call; Release it when the call is done.
type Permit struct {
	l        *Limiter
	released atomic.Bool
}

// Acquire blocks until a call may start or ctx is done. A concurrency slot
// is taken first, then a rate token, so waiting for the rate never wastes
// budget.
func (l *Limiter) Acquire(ctx context.Context) (*Permit, error) {
	if err := l.slots.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("limiter: %w", err)
	}
	if l.rate != nil {
		if err := l.rate.Wait(ctx); err != nil {
			l.slots.Release(1)
			return nil, fmt.Errorf("limiter: %w", err)
		}
	}
	l.inFlight.Add(1)
	return &Permit{l: l}, nil
}

// Release returns the permit's slot. Calling it twice is harmless.
func (p *Permit) Release() {
	if p == nil || !p.released.CompareAndSwap(false, true) {
		return
	}
	p.l.inFlight.Add(-1)
	p.l.slots.Release(1)
}

// InFlight returns how many permits are held now.
func (l *Limiter) InFlight() int { return int(l.inFlight.Load()) }

// MaxInFlight returns the concurrency cap.
func (l *Limiter) MaxInFlight() int { return l.max }
