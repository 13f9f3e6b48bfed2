// Package processor turns one prompt record into one result: it parses and
// validates the record (internal/prompt), calls the chat-completions API
// through the global limiter, retries what is worth retrying, and builds the
// result record value (internal/result). It never touches Kafka offsets and
// never fails on input: every record gets a result, unless the caller's
// context ends first (then the record is abandoned and will be redone).
// Calls can be streamed (stream.go): the result is the same, and the token
// deltas go to a DeltaSink as they arrive.
//
//	p := processor.New(client, lim, processor.Config{DefaultModel: "grok-4", MaxAttempts: 6, ...})
//	res, err := p.Process(ctx, record) // err != nil only when ctx ended
package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/internal/prompt"
	"github.com/sluice-dev/sluice/internal/result"
)

// ErrAbandoned is returned by Process when its context ended before the
// record had a result. The record must not be committed.
var ErrAbandoned = errors.New("processor: record abandoned")

// Caller makes one chat-completions call. *api.Client implements it, and
// StreamCaller too: a Caller that is no StreamCaller has every record's
// body sent as it is, with Do.
type Caller interface {
	Do(ctx context.Context, body []byte) (*api.Response, error)
}

// Config tunes a Processor.
type Config struct {
	// DefaultModel is used when a request names no model.
	DefaultModel string
	// RequestTimeout bounds one attempt.
	RequestTimeout time.Duration
	// MaxAttempts bounds the attempts per record (>= 1).
	MaxAttempts int
	// RetryBase and RetryMax shape the exponential, jittered backoff.
	RetryBase, RetryMax time.Duration
	// MaxValueBytes rejects larger input values (0 = no limit).
	MaxValueBytes int
	// RecordDeadline bounds the time one record may take, attempts,
	// backoffs and limiter pauses included; 0 means none. A record past it
	// fails with code expired.
	RecordDeadline time.Duration
	// Observer, when set, is told about every call (metrics).
	Observer Observer
	// Stream streams every call; a record whose body has "stream": true
	// is streamed regardless (see stream.go).
	Stream bool
	// StreamIdleTimeout is the longest wait for the next chunk of a
	// streamed answer, the first included, so it must exceed the slowest
	// time to first token (0 = RequestTimeout only).
	StreamIdleTimeout time.Duration
	// Deltas, when set, receives the deltas of streamed answers.
	Deltas DeltaSink
}

// Observer receives what the processor sees of the API. *metrics.Metrics
// implements it.
type Observer interface {
	// APICall reports one call: its HTTP status (0 when no answer came)
	// and duration.
	APICall(model string, status int, d time.Duration)
	// Retry reports a call that retries an earlier attempt.
	Retry()
	// Tokens reports the usage of one answer.
	Tokens(model string, prompt, completion, reasoning int)
	// Stream reports a streamed call: its time to first token (0 when
	// no token came) and its completion plus reasoning tokens per second
	// after the first token (0 when unknown).
	Stream(model string, ttft time.Duration, tokensPerSecond float64)
}

type nopObserver struct{}

func (nopObserver) APICall(string, int, time.Duration)    {}
func (nopObserver) Retry()                                {}
func (nopObserver) Tokens(string, int, int, int)          {}
func (nopObserver) Stream(string, time.Duration, float64) {}

// Processor processes records; it is safe for concurrent use.
type Processor struct {
	api         Caller
	streamer    StreamCaller // api, when it can stream; else nil
	lim         *limiter.Limiter
	cfg         Config
	now         func() time.Time
	completions completionModel
}

// New returns a Processor calling c under the limits of lim.
func New(c Caller, lim *limiter.Limiter, cfg Config) *Processor {
	cfg.MaxAttempts = max(cfg.MaxAttempts, 1)
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 500 * time.Millisecond
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryBase)
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	streamer, _ := c.(StreamCaller)
	return &Processor{api: c, streamer: streamer, lim: lim, cfg: cfg, now: time.Now}
}

// Process returns the result of one record. The error is non-nil (and
// wraps ErrAbandoned) only when ctx ended before the result was known.
func (p *Processor) Process(ctx context.Context, rec *kgo.Record) (*result.Result, error) {
	start := p.now()
	res := &result.Result{
		ID:     result.NewID(),
		Source: result.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset},
	}
	req, err := prompt.Parse(rec.Value, prompt.Options{
		DefaultModel:  p.cfg.DefaultModel,
		FallbackID:    fallbackID(rec),
		MaxValueBytes: p.cfg.MaxValueBytes,
	})
	if err != nil {
		res.CustomID = bestEffortID(rec)
		code := result.CodeInvalidInput
		if errors.Is(err, prompt.ErrUnsupportedURL) {
			code = result.CodeUnsupportedURL
		}
		res.Error = &result.Error{Code: code, Message: err.Error()}
		res.LatencyMS = p.now().Sub(start).Milliseconds()
		return res, nil
	}
	res.CustomID = req.CustomID

	callCtx := ctx
	if p.cfg.RecordDeadline > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeoutCause(ctx, p.cfg.RecordDeadline, errExpired)
		defer cancel()
	}
	est := estimateTokens(req.Body)
	if tpm := p.lim.TokenBudget(req.Model); tpm > 0 && est.prompt+est.reserved > tpm {
		// It can never be served within the group's budget: fail it at
		// once, without a call, rather than hold every later record.
		res.Error = &result.Error{Code: result.CodeExceedsTPM, Message: fmt.Sprintf(
			"the request reserves about %d tokens (prompt estimate %d + n x max_tokens %d), more than the %d tokens per minute budget of model %s",
			est.prompt+est.reserved, est.prompt, est.reserved, tpm, req.Model)}
		res.LatencyMS = p.now().Sub(start).Milliseconds()
		return res, nil
	}
	resp, attempts, err := p.call(callCtx, req, est, p.streamOf(rec, req))
	res.Attempts = attempts
	res.LatencyMS = p.now().Sub(start).Milliseconds()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ErrAbandoned, context.Cause(ctx))
	}
	if callCtx.Err() != nil {
		// The deadline ended the attempts: a failure of its own, whatever
		// the last attempt said.
		msg := fmt.Sprintf("the record did not finish within %s (retries and pauses included)", p.cfg.RecordDeadline)
		if err != nil && !errors.Is(err, errExpired) {
			msg += "; last error: " + err.Error()
		}
		err = &expiredError{msg: msg}
	}
	if resp != nil {
		res.Response = &result.Response{StatusCode: resp.StatusCode, Body: resp.JSONBody()}
		if resp.RequestID != "" {
			id := resp.RequestID
			res.Response.RequestID = &id
		}
	}
	if err != nil {
		res.Error = classify(err)
	}
	return res, nil
}

// call makes up to MaxAttempts attempts, honouring Retry-After when the
// API asks for a longer wait than the backoff would take, up to RetryMax:
// a longer server-requested wait is cut there, and the record asks again.
// rs is nil unless the record is streamed.
func (p *Processor) call(ctx context.Context, req prompt.Request, est tokenEstimate, rs *recordStream) (resp *api.Response, attempts int, err error) {
	var hint time.Duration
	err = retryDo(ctx, p.backoff(&hint), func(ctx context.Context) error {
		attempts++
		if attempts > 1 {
			p.cfg.Observer.Retry()
		}
		resp, err = p.attempt(ctx, req, est, rs)
		hint = api.RetryAfter(err)
		return err
	})
	return resp, attempts, err
}

// attempt makes one call under the limiter and tells it what the answer
// said. An answer saying the account cannot go on (quota, 401) is not
// this record's failure: the limiter pauses every call until a probe
// succeeds, and the record waits for that instead of using up attempts.
// When other calls succeeded meanwhile the limiter does not pause, and the
// refusal is this record's own (a model or permission its key lacks): it
// is returned.
func (p *Processor) attempt(ctx context.Context, req prompt.Request, est tokenEstimate, rs *recordStream) (*api.Response, error) {
	for {
		permit, err := p.lim.Acquire(ctx, p.request(req.Model, est))
		if err != nil {
			return nil, err
		}
		start := p.now()
		resp, err := p.do(ctx, req, rs)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		p.cfg.Observer.APICall(req.Model, status, p.now().Sub(start))
		permit.Done(p.outcome(req.Model, est, resp, err))
		if errors.Is(err, api.ErrQuota) && ctx.Err() == nil && p.lim.Paused() {
			continue
		}
		return resp, err
	}
}

// do makes one call, bounded by RequestTimeout; streamed when rs is set.
func (p *Processor) do(ctx context.Context, req prompt.Request, rs *recordStream) (*api.Response, error) {
	if rs != nil {
		return p.doStream(ctx, req, rs)
	}
	actx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	return p.api.Do(actx, req.Body)
}

// errExpired is the cause of a record context whose deadline passed.
var errExpired = errors.New("record deadline passed")

// expiredError is the failure of a record that ran out of time.
type expiredError struct{ msg string }

func (e *expiredError) Error() string { return e.msg }

// classify names the failure of the last attempt.
func classify(err error) *result.Error {
	code := result.CodeAPIError
	var expired *expiredError
	switch {
	case errors.As(err, &expired):
		code = result.CodeExpired
	case errors.Is(err, api.ErrTimeout):
		code = result.CodeTimeout
	case api.Retryable(err):
		code = result.CodeRetriesExhausted
	}
	return &result.Error{Code: code, Message: err.Error()}
}

// fallbackID is the custom_id of a record whose value names none: the
// custom_id header, else <topic>-<partition>-<offset>.
func fallbackID(rec *kgo.Record) string {
	for _, h := range rec.Headers {
		if h.Key == result.HeaderCustomID && len(h.Value) > 0 {
			return string(h.Value)
		}
	}
	return rec.Topic + "-" + strconv.Itoa(int(rec.Partition)) + "-" + strconv.FormatInt(rec.Offset, 10)
}

// bestEffortID finds the custom_id of an invalid record so its error result
// can still be joined to the request.
func bestEffortID(rec *kgo.Record) string {
	var v struct {
		CustomID any `json:"custom_id"`
	}
	if json.Unmarshal(rec.Value, &v) == nil {
		if s, ok := v.CustomID.(string); ok && s != "" {
			return s
		}
	}
	return fallbackID(rec)
}
