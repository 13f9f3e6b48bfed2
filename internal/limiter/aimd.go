package limiter

import (
	"context"
	"math"
	"sync"
	"time"
)

// aimd is a counting semaphore whose size adapts between 1 and max:
// multiplicative decrease when the provider pushes back (429, overload),
// additive increase of one slot per clean window of successes (a window is
// a quarter of the current limit, about a quarter of a round of calls).
// It starts at max: with the rate budgets doing the pacing, concurrency
// only has to shrink when the provider limits it by other means.
type aimd struct {
	mu       sync.Mutex
	max      float64
	limit    float64
	inFlight int
	clean    int             // successes since the last change
	cooled   time.Time       // no second decrease before this
	waiters  []chan struct{} // FIFO; a closed channel owns a slot
}

const (
	decreaseFactor = 0.75
	// decreaseGap stops one burst of 429s (all the calls in flight when
	// the provider pushed back) from collapsing the limit to 1.
	decreaseGap = time.Second
)

func newAIMD(maxInFlight int) *aimd {
	m := float64(max(maxInFlight, 1))
	return &aimd{max: m, limit: m}
}

// acquire takes a slot, waiting in FIFO order until one frees or ctx ends.
func (a *aimd) acquire(ctx context.Context) error {
	a.mu.Lock()
	if len(a.waiters) == 0 && a.inFlight < a.slots() {
		a.inFlight++
		a.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	a.waiters = append(a.waiters, ch)
	a.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		select {
		case <-ch: // granted meanwhile: hand the slot on
			a.inFlight--
			a.grantLocked()
		default:
			for i, w := range a.waiters {
				if w == ch {
					a.waiters = append(a.waiters[:i], a.waiters[i+1:]...)
					break
				}
			}
		}
		return ctx.Err()
	}
}

// release frees a slot.
func (a *aimd) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight--
	a.grantLocked()
}

// grantLocked hands free slots to waiters in order.
func (a *aimd) grantLocked() {
	for len(a.waiters) > 0 && a.inFlight < a.slots() {
		close(a.waiters[0])
		a.waiters[0] = nil
		a.waiters = a.waiters[1:]
		a.inFlight++
	}
}

func (a *aimd) slots() int { return int(math.Floor(a.limit)) }

// success counts a clean call; every clean window adds one slot.
func (a *aimd) success() (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.limit >= a.max {
		return false
	}
	a.clean++
	if a.clean < max(1, a.slots()/4) {
		return false
	}
	a.clean = 0
	a.limit = math.Min(a.max, a.limit+1)
	a.grantLocked()
	return true
}

// pushback shrinks the limit after a 429 or an overload answer, at most
// once per decreaseGap.
func (a *aimd) pushback(now time.Time) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clean = 0
	if now.Before(a.cooled) || a.limit <= 1 {
		return false
	}
	a.limit = math.Max(1, math.Floor(a.limit*decreaseFactor))
	a.cooled = now.Add(decreaseGap)
	return true
}

func (a *aimd) state() (limit, inFlight int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.slots(), a.inFlight
}
