// Package processor turns one prompt record into one result: it parses and
// validates the record (package record), calls the record's endpoint
// through a Caller, retries what is worth retrying, and builds the result
// record value (record.Result). It never touches Kafka offsets and never
// fails on input: every record gets a result, unless the caller's context
// ends first (then the record is abandoned and will be redone). Calls can
// be streamed (stream.go): the result is the same, and the deltas go to a
// DeltaSink as they arrive.
//
// Behaviour around a call is middleware (call.go): the retry loop wraps
// Config.Middleware (sluice's limiter, internal/caller.Limit), which wrap
// the Caller.
//
//	p := processor.New(apiCaller, processor.Config{DefaultModel: "grok-4", MaxAttempts: 6,
//		Middleware: []processor.Middleware{limit}, ...})
//	res, err := p.Process(ctx, rec) // err != nil only when ctx ended
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
	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/record"
)

// ErrAbandoned is returned by Process when its context ended before the
// record had a result. The record must not be committed.
var ErrAbandoned = errors.New("processor: record abandoned")

// Config tunes a Processor.
type Config struct {
	// DefaultModel is used when a request names no model.
	DefaultModel string
	// Endpoint is the Batch url of the endpoint that bare bodies and
	// simple prompts go to (SLUICE_ENDPOINT); "" is
	// record.DefaultEndpoint.
	Endpoint string
	// Middleware wraps every call, inside the retry loop, the first
	// outermost (sluice: the limiter).
	Middleware []Middleware
	// TokenBudget, when set, returns the tokens-per-minute budget of a
	// model (0 = none): a record that alone reserves more fails with
	// exceeds_tpm, without a call.
	TokenBudget func(model string) int
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
	// Stream streams every call of an endpoint that streams; a record
	// whose body has "stream": true is streamed regardless (see
	// stream.go).
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
	api Caller
	cfg Config
	now func() time.Time
}

// New returns a Processor calling c, wrapped in cfg.Middleware.
func New(c Caller, cfg Config) *Processor {
	cfg.MaxAttempts = max(cfg.MaxAttempts, 1)
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 500 * time.Millisecond
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryBase)
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Processor{api: c, cfg: cfg, now: time.Now}
}

// Process returns the result of one record. The error is non-nil (and
// wraps ErrAbandoned) only when ctx ended before the result was known.
func (p *Processor) Process(ctx context.Context, rec *kgo.Record) (*record.Result, error) {
	start := p.now()
	res := &record.Result{
		ID:     record.NewID(),
		Source: record.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset},
	}
	req, err := record.Parse(rec.Value, record.Options{
		DefaultModel:  p.cfg.DefaultModel,
		FallbackID:    fallbackID(rec),
		MaxValueBytes: p.cfg.MaxValueBytes,
		Endpoint:      p.cfg.Endpoint,
	})
	if err != nil {
		res.CustomID = bestEffortID(rec)
		code := record.CodeInvalidInput
		if errors.Is(err, record.ErrUnsupportedURL) {
			code = record.CodeUnsupportedURL
		}
		res.Error = &record.Error{Code: code, Message: err.Error()}
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
	ep, _ := endpoint.Lookup(req.URL) // Parse found it
	e := ep.Estimate(req.Body)
	est := Estimate{Input: e.Input, Reserved: e.Reserved, Choices: max(e.Choices, 1), NoOutput: e.NoOutput}
	if p.cfg.TokenBudget != nil {
		if tpm := p.cfg.TokenBudget(req.Model); tpm > 0 && est.Input+est.Reserved > tpm {
			// It can never be served within the group's budget: fail it
			// at once, without a call, rather than hold every later record.
			res.Error = &record.Error{Code: record.CodeExceedsTPM, Message: fmt.Sprintf(
				"the request reserves about %d tokens (input estimate %d + output ceiling %d), more than the %d tokens per minute budget of model %s",
				est.Input+est.Reserved, est.Input, est.Reserved, tpm, req.Model)}
			res.LatencyMS = p.now().Sub(start).Milliseconds()
			return res, nil
		}
	}
	call := &Call{URL: req.URL, Model: req.Model, Body: req.Body, Estimate: est}
	rs := p.streamOf(rec, req, ep)
	if rs != nil {
		call.Stream, call.IdleTimeout = true, p.cfg.StreamIdleTimeout
	}
	attempts := 0
	c := p.retry(&attempts, Chain(p.once(rs), p.cfg.Middleware...))
	resp, err := c.Call(callCtx, call)
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
		var body json.RawMessage
		if json.Valid(resp.Body) {
			body = resp.Body
		}
		res.Response = &record.Response{StatusCode: resp.StatusCode, Body: body}
		if resp.RequestID != "" {
			id := resp.RequestID
			res.Response.RequestID = &id
		}
	}
	if err != nil {
		res.Error = classify(err)
	} else if u := resp.Usage; u != nil {
		p.cfg.Observer.Tokens(req.Model, u.Input, u.Output, u.Reasoning)
	}
	return res, nil
}

// once is the innermost layer of every call: it bounds the call by
// RequestTimeout, streams it when rs is set, and tells the Observer.
func (p *Processor) once(rs *recordStream) Caller {
	return CallerFunc(func(ctx context.Context, c *Call) (*Answer, error) {
		start := p.now()
		var resp *Answer
		var err error
		if rs != nil {
			resp, err = p.doStream(ctx, c, rs)
		} else {
			actx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
			resp, err = p.api.Call(actx, c)
			cancel()
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		p.cfg.Observer.APICall(c.Model, status, p.now().Sub(start))
		return resp, err
	})
}

// errExpired is the cause of a record context whose deadline passed.
var errExpired = errors.New("record deadline passed")

// expiredError is the failure of a record that ran out of time.
type expiredError struct{ msg string }

func (e *expiredError) Error() string { return e.msg }

// classify names the failure of the last attempt.
func classify(err error) *record.Error {
	code := record.CodeAPIError
	var expired *expiredError
	switch {
	case errors.As(err, &expired):
		code = record.CodeExpired
	case errors.Is(err, api.ErrTimeout):
		code = record.CodeTimeout
	case api.Retryable(err):
		code = record.CodeRetriesExhausted
	}
	return &record.Error{Code: code, Message: err.Error()}
}

// fallbackID is the custom_id of a record whose value names none: the
// custom_id header, else <topic>-<partition>-<offset>.
func fallbackID(rec *kgo.Record) string {
	for _, h := range rec.Headers {
		if h.Key == record.HeaderCustomID && len(h.Value) > 0 {
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
