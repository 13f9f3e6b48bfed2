// Package limiter decides when sluice may start an API call, so that a
// whole consumer group runs at the provider's limits without starting a 429
// storm:
//
//   - budgets: requests and tokens per minute (RPM, TPM), smoothed per
//     second, globally and per model; the budgets are for the whole group,
//     and SetShare gives this replica its part;
//
//   - tokens: each call is debited its estimate before it starts and
//     reconciled with what it cost (the API's usage) when it ends;
//
//   - adaptive concurrency between 1 and MaxInFlight (AIMD): multiplicative
//     decrease when the provider pushes back, additive increase on clean
//     windows;
//
//   - a 429 pauses every call until the provider's Retry-After (global
//     cooldown, at most Config.MaxCooldown), and x-ratelimit-remaining-*
//     headers correct the buckets;
//
//   - when the account cannot go on (quota exhausted, key rejected) the
//     limiter pauses all calls and lets one probe through every
//     ProbeInterval until a call succeeds.
//
//     l := limiter.New(limiter.Config{MaxInFlight: 256, RPM: 6000, TPM: 2e6})
//     p, err := l.Acquire(ctx, limiter.Request{Model: "grok-4", Tokens: est})
//     if err != nil { return err }
//     resp, err := call()
//     p.Done(limiter.Outcome{...what the answer said...})
package limiter

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// defaultMaxCooldown is Config.MaxCooldown when unset.
const defaultMaxCooldown = time.Minute

// defaultRateLimitCooldown is the pause after a 429 that named no wait.
const defaultRateLimitCooldown = time.Second

// Budget is a requests and tokens per minute budget; zero means none.
type Budget struct {
	RPM, TPM int
}

// Config sets the limits.
type Config struct {
	// MaxInFlight caps concurrent calls; the adaptive limit moves
	// between 1 and it.
	MaxInFlight int
	// RPM and TPM are the whole group's budgets; 0 means none.
	RPM, TPM int
	// Models are per-model budgets, also for the whole group, applied on
	// top of the global ones.
	Models map[string]Budget
	// ProbeInterval is how often one call is let through while the
	// account is unusable (default 5s).
	ProbeInterval time.Duration
	// MaxCooldown caps one global pause after a 429 or an exhausted
	// x-ratelimit-remaining-requests, whatever the provider asked for
	// (default 1 min). sluice sets it to SLUICE_RETRY_MAX, the cap of one
	// record's wait, so the two agree: after it, calls ask again.
	MaxCooldown time.Duration
	// Log receives one line per state change.
	Log zerolog.Logger
	// OnPause is called (outside any lock) when the limiter pauses for an
	// unusable account (true) and when it resumes (false).
	OnPause func(paused bool)
}

// Request describes the call about to be made.
type Request struct {
	Model string
	// Tokens is the estimated cost debited before the call. A token
	// bucket is debited at most its capacity (one second of its share):
	// one large request never holds back the calls after it for longer
	// than that, and what it really cost is charged when it ends.
	Tokens int
}

// Outcome is what the answer of a call said; the zero Outcome means the
// call was abandoned or told nothing (the estimate stays charged).
type Outcome struct {
	// Success: a 2xx answer.
	Success bool
	// Tokens is what the call cost; negative means unknown (the estimate
	// stays charged), zero means nothing (the provider refused it).
	Tokens int
	// Header is the answer's headers (x-ratelimit-*), nil when none.
	Header http.Header
	// RateLimited: a 429 that is about the rate, not the quota;
	// RetryAfter is the wait it asked for (zero when it did not say).
	RateLimited bool
	RetryAfter  time.Duration
	// Overloaded: the provider is overloaded (503, 529).
	Overloaded bool
	// Unusable is non-nil when the account cannot go on (quota, 401,
	// 403): the limiter pauses until a probe succeeds.
	Unusable error
}

// Limiter hands out permits to call the API. It is safe for concurrent use.
type Limiter struct {
	cfg   Config
	log   zerolog.Logger
	now   func() time.Time
	slots *aimd

	mu            sync.Mutex
	share         float64
	global        *budgetState
	models        map[string]*budgetState
	cooldownUntil time.Time
	paused        bool
	pauseReason   string
	pausedAt      time.Time
	lastSuccess   time.Time // when a call last ended with a success
	nextProbe     time.Time
	probing       bool
	changed       chan struct{} // closed and replaced when the gate opens

	inFlight atomic.Int64
}

// budgetState is one budget's buckets; a nil bucket is no limit.
type budgetState struct {
	budget   Budget
	requests *rate.Limiter
	tokens   *tokenBucket
}

func newBudgetState(b Budget, share float64, now time.Time) *budgetState {
	s := &budgetState{budget: b}
	if b.RPM > 0 {
		// Burst 1: requests are spaced evenly, so no window ever sees
		// more than its share of RPM (rounded up).
		s.requests = rate.NewLimiter(rate.Limit(float64(b.RPM)*share/60), 1)
	}
	if b.TPM > 0 {
		s.tokens = newTokenBucket(float64(b.TPM)*share, now)
	}
	return s
}

func (s *budgetState) setShare(share float64, now time.Time) {
	if s.requests != nil {
		s.requests.SetLimitAt(now, rate.Limit(float64(s.budget.RPM)*share/60))
	}
	if s.tokens != nil {
		s.tokens.advance(now)
		s.tokens.setRate(float64(s.budget.TPM) * share / 60)
	}
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 5 * time.Second
	}
	if cfg.MaxCooldown <= 0 {
		cfg.MaxCooldown = defaultMaxCooldown
	}
	l := &Limiter{
		cfg:     cfg,
		log:     cfg.Log,
		now:     time.Now,
		slots:   newAIMD(cfg.MaxInFlight),
		share:   1,
		models:  make(map[string]*budgetState),
		changed: make(chan struct{}),
	}
	now := l.now()
	l.global = newBudgetState(Budget{RPM: cfg.RPM, TPM: cfg.TPM}, 1, now)
	for m, b := range cfg.Models {
		l.models[m] = newBudgetState(b, 1, now)
	}
	return l
}

// Permit is the right to make one call; end it with Done (or Release).
type Permit struct {
	l       *Limiter
	req     Request
	model   *budgetState
	charged [2]float64 // tokens debited from the global and the model's bucket
	probe   bool
	started time.Time
	done    atomic.Bool
}

// Acquire blocks until a call may start or ctx is done: past any global
// cooldown or pause, then a concurrency slot, then the request and token
// budgets. Waiting for a budget never holds back calls that would not
// have to wait for it longer.
func (l *Limiter) Acquire(ctx context.Context, req Request) (*Permit, error) {
	probe, err := l.passGate(ctx)
	if err != nil {
		return nil, fmt.Errorf("limiter: %w", err)
	}
	if err := l.slots.acquire(ctx); err != nil {
		l.endProbe(probe)
		return nil, fmt.Errorf("limiter: %w", err)
	}
	p := &Permit{l: l, req: req, probe: probe}
	if err := l.takeBudgets(ctx, p); err != nil {
		l.slots.release()
		l.endProbe(probe)
		return nil, fmt.Errorf("limiter: %w", err)
	}
	l.inFlight.Add(1)
	p.started = l.now()
	return p, nil
}

// passGate waits while a cooldown runs or the account is unusable; while
// unusable, one caller per ProbeInterval passes as the probe.
func (l *Limiter) passGate(ctx context.Context) (probe bool, err error) {
	for {
		l.mu.Lock()
		now := l.now()
		var wait time.Duration
		switch {
		case l.paused && !l.probing && !now.Before(l.nextProbe):
			l.probing = true
			l.nextProbe = now.Add(l.cfg.ProbeInterval)
			l.mu.Unlock()
			return true, nil
		case l.paused:
			wait = max(l.nextProbe.Sub(now), time.Millisecond)
		case now.Before(l.cooldownUntil):
			wait = l.cooldownUntil.Sub(now)
		default:
			l.mu.Unlock()
			return false, nil
		}
		changed := l.changed
		l.mu.Unlock()
		if err := sleep(ctx, wait, changed); err != nil {
			return false, err
		}
	}
}

// takeBudgets reserves a request and the estimated tokens in the global
// and the model's budgets and waits until they are due.
func (l *Limiter) takeBudgets(ctx context.Context, p *Permit) error {
	l.mu.Lock()
	now := l.now()
	p.model = l.models[p.req.Model]
	var delay time.Duration
	var reservations []*rate.Reservation
	for i, b := range []*budgetState{l.global, p.model} {
		if b == nil {
			continue
		}
		if b.requests != nil {
			r := b.requests.ReserveN(now, 1)
			reservations = append(reservations, r)
			delay = max(delay, r.DelayFrom(now))
		}
		if b.tokens != nil {
			var wait time.Duration
			wait, p.charged[i] = b.tokens.reserve(now, float64(p.req.Tokens))
			delay = max(delay, wait)
		}
	}
	l.mu.Unlock()
	if err := sleep(ctx, delay, nil); err != nil {
		l.mu.Lock()
		now := l.now()
		for _, r := range reservations {
			r.CancelAt(now)
		}
		l.reconcileLocked(p, now, 0)
		l.mu.Unlock()
		return err
	}
	// A cooldown that began while this call waited applies to it too.
	l.mu.Lock()
	wait := l.cooldownUntil.Sub(l.now())
	l.mu.Unlock()
	return sleep(ctx, wait, nil)
}

// reconcileLocked charges the buckets p was debited in what the call
// cost instead of what they were charged.
func (l *Limiter) reconcileLocked(p *Permit, now time.Time, cost float64) {
	for i, b := range []*budgetState{l.global, p.model} {
		if b != nil && b.tokens != nil {
			b.tokens.credit(now, p.charged[i]-cost)
		}
	}
}

func (l *Limiter) endProbe(probe bool) {
	if !probe {
		return
	}
	l.mu.Lock()
	l.probing = false
	l.mu.Unlock()
}

// Release ends a permit whose call told nothing (abandoned): the estimate
// stays charged. Calling it after Done, or twice, is harmless.
func (p *Permit) Release() { p.Done(Outcome{Tokens: -1}) }

// Done ends the permit with what the call's answer said. Only the first
// Done or Release of a permit counts.
func (p *Permit) Done(o Outcome) {
	if p == nil || !p.done.CompareAndSwap(false, true) {
		return
	}
	l := p.l
	l.inFlight.Add(-1)
	l.slots.release()
	switch {
	case o.RateLimited || o.Overloaded:
		if l.slots.pushback(l.now()) {
			limit, _ := l.slots.state()
			l.log.Info().Int("concurrency", limit).Bool("rate_limited", o.RateLimited).Msg("limiter: provider pushed back; concurrency lowered")
		}
	case o.Success:
		if l.slots.success() {
			limit, _ := l.slots.state()
			l.log.Debug().Int("concurrency", limit).Msg("limiter: concurrency raised")
		}
	}

	var paused, resumed bool
	l.mu.Lock()
	now := l.now()
	if o.Tokens >= 0 {
		l.reconcileLocked(p, now, float64(o.Tokens))
	}
	l.learnLocked(now, readProviderLimits(o.Header))
	if o.RateLimited {
		wait := o.RetryAfter
		if wait <= 0 {
			wait = defaultRateLimitCooldown
		}
		l.cooldownLocked(now, wait, "429 from the provider")
	}
	if p.probe {
		l.probing = false
	}
	if o.Success {
		l.lastSuccess = now
	}
	switch {
	case o.Unusable != nil && !l.paused && l.lastSuccess.After(p.started):
		// Another call succeeded while this one was under way: the
		// account works, so the refusal is about this request (a model
		// or a permission the key lacks), not the account.
		l.log.Warn().Str("reason", o.Unusable.Error()).
			Msg("limiter: an account-wide refusal while other calls succeed; not pausing (the request's own error)")
	case o.Unusable != nil && !l.paused:
		l.paused, l.pausedAt = true, now
		l.pauseReason = o.Unusable.Error()
		l.nextProbe = now.Add(l.cfg.ProbeInterval)
		l.log.Error().Str("reason", l.pauseReason).Stringer("probe_every", l.cfg.ProbeInterval).
			Msg("limiter: the API account cannot go on; pausing all calls until a probe succeeds")
		paused = true
	case o.Success && p.probe && l.paused:
		l.paused = false
		l.log.Info().Stringer("paused_for", now.Sub(l.pausedAt).Round(time.Millisecond)).Msg("limiter: the API account works again; resuming")
		l.pauseReason = ""
		l.broadcastLocked()
		resumed = true
	}
	l.mu.Unlock()
	if (paused || resumed) && l.cfg.OnPause != nil {
		l.cfg.OnPause(paused)
	}
}

// learnLocked corrects the buckets with what the provider reported: no
// more tokens than it says remain (this replica's share of them), and no
// requests until its reset when none remain.
func (l *Limiter) learnLocked(now time.Time, pl providerLimits) {
	if pl.remainingTokens >= 0 && l.global.tokens != nil {
		l.global.tokens.clamp(now, float64(pl.remainingTokens)*l.share)
	}
	if pl.remainingRequests == 0 && pl.resetRequests > 0 {
		l.cooldownLocked(now, pl.resetRequests, "x-ratelimit-remaining-requests is 0")
	}
}

// cooldownLocked pauses all calls until now+d (extending, never
// shortening, a running cooldown).
func (l *Limiter) cooldownLocked(now time.Time, d time.Duration, why string) {
	until := now.Add(min(d, l.cfg.MaxCooldown))
	if !until.After(l.cooldownUntil) {
		return
	}
	if !now.Before(l.cooldownUntil) {
		l.log.Info().Stringer("cooldown", until.Sub(now).Round(time.Millisecond)).Str("reason", why).Msg("limiter: pausing all calls")
	}
	l.cooldownUntil = until
}

func (l *Limiter) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// TokenBudget returns the smallest tokens-per-minute budget that applies
// to calls of model: the group's SLUICE_TPM or the model's, whichever is
// lower; 0 when none does. A request estimated above it can never be
// served within a minute by the whole group.
func (l *Limiter) TokenBudget(model string) int {
	tpm := l.cfg.TPM
	if b, ok := l.cfg.Models[model]; ok && b.TPM > 0 && (tpm == 0 || b.TPM < tpm) {
		tpm = b.TPM
	}
	return tpm
}

// SetShare sets this replica's share of the group's budgets, in (0, 1]
// (values outside are clamped).
func (l *Limiter) SetShare(share float64) {
	share = min(max(share, 1e-3), 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if share == l.share {
		return
	}
	now := l.now()
	l.share = share
	l.global.setShare(share, now)
	for _, m := range l.models {
		m.setShare(share, now)
	}
	l.log.Info().Float64("share", share).Int("rpm_share", int(float64(l.cfg.RPM)*share)).
		Int("tpm_share", int(float64(l.cfg.TPM)*share)).Msg("limiter: budget share changed")
}

// State is a snapshot of the limiter for operators.
type State struct {
	// Concurrency is the adaptive limit; InFlight the permits held.
	Concurrency, InFlight, MaxInFlight int
	// Share is this replica's share of the group's budgets.
	Share float64
	// TokensAvailable is the global token bucket's level (negative in
	// debt); -1 when there is no TPM budget.
	TokensAvailable float64
	// RequestsAvailable is the global request bucket's tokens; -1 when
	// there is no RPM budget.
	RequestsAvailable float64
	// CooldownUntil is the end of the running global cooldown (zero when
	// none).
	CooldownUntil time.Time
	// Paused is set while the account is unusable; Reason says why.
	Paused bool
	Reason string
}

// State returns a snapshot.
func (l *Limiter) State() State {
	limit, _ := l.slots.state()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := State{
		Concurrency: limit, InFlight: l.InFlight(), MaxInFlight: l.MaxInFlight(),
		Share: l.share, TokensAvailable: -1, RequestsAvailable: -1,
		Paused: l.paused, Reason: l.pauseReason,
	}
	if now.Before(l.cooldownUntil) {
		s.CooldownUntil = l.cooldownUntil
	}
	if l.global.tokens != nil {
		s.TokensAvailable = l.global.tokens.available(now)
	}
	if l.global.requests != nil {
		s.RequestsAvailable = l.global.requests.TokensAt(now)
	}
	return s
}

// Paused reports whether calls are paused because the account is unusable.
func (l *Limiter) Paused() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.paused
}

// InFlight returns how many permits are held now.
func (l *Limiter) InFlight() int { return int(l.inFlight.Load()) }

// MaxInFlight returns the concurrency cap.
func (l *Limiter) MaxInFlight() int { return int(l.slots.max) }

// sleep waits d, or until wake is closed (nil never is), or ctx ends.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
