package consumer

import (
	"context"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
)

// fatal is a member's first fatal error (an output that cannot be
// written): recording it stops the member's polling, and its Run
// returns it after the drain.
type fatal struct {
	mu         sync.Mutex // taken after partition locks
	err        error
	cancelPoll context.CancelFunc
}

// pollContext returns the context of the member's polling: cancelled by
// the first fatal error, or when the returned cancel is called.
func (f *fatal) pollContext(ctx context.Context) (context.Context, context.CancelFunc) {
	pollCtx, cancel := context.WithCancel(ctx)
	f.mu.Lock()
	f.cancelPoll = cancel
	f.mu.Unlock()
	return pollCtx, cancel
}

// fail records err unless an error was recorded before, and stops the
// polling.
func (f *fatal) fail(log zerolog.Logger, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return
	}
	log.Error().Err(err).Msg("cannot write results; stopping")
	f.err = fmt.Errorf("consumer: %w", err)
	if f.cancelPoll != nil {
		f.cancelPoll()
	}
}

// Err is the first fatal error, nil when none.
func (f *fatal) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
