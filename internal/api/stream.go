package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"
)

// ErrStreamIdle: a streamed answer sent no event for StreamOptions.IdleTimeout.
// It is a kind of timeout: errors.Is(err, ErrTimeout) is also true, so
// Retryable reports it as worth another attempt.
var ErrStreamIdle error = streamIdleError{}

type streamIdleError struct{}

func (streamIdleError) Error() string { return "api: stream idle" }

// Is makes a stall match ErrTimeout, the class Retryable retries.
func (streamIdleError) Is(target error) bool { return target == ErrTimeout }

// Event is one server-sent event of a streamed answer.
type Event struct {
	// Type is the event's "event:" field (the Responses API's typed
	// events), "" when it had none (chat-completions chunks).
	Type string
	// Data is the event's data, valid until the next event is read.
	Data []byte
}

// Delta is what one event adds to the answer, as passed to OnDelta.
type Delta struct {
	// Seq numbers the deltas of one call from 0.
	Seq int
	// Type is the event type of a typed stream (e.g.
	// "response.output_text.delta"), "" for a chat-completions chunk.
	Type string
	// Index is the choice (chat) or the output item (responses).
	Index int
	// Data is verbatim: a chunk choice's delta object ({} when it had
	// none), or a typed event's whole data object.
	Data json.RawMessage
	// FinishReason is set on a chat choice's last delta, else "".
	FinishReason string
	// Token reports whether the delta carries generated text, reasoning,
	// a refusal or a tool call (what time to first token waits for).
	Token bool
}

// Assembler folds the events of one streamed answer into the body a plain
// call returns. Each endpoint that streams has one (internal/endpoint); a
// new one is made for every call.
type Assembler interface {
	// Add folds one event in and returns its deltas; done reports that
	// the event ends the stream (chat's [DONE], response.completed).
	// Errors wrap ErrMalformed (an event that does not parse or grows
	// the answer past MaxResponseBytes) or are a *StreamError (an error
	// event).
	Add(ev Event) (deltas []Delta, done bool, err error)
	// Finish returns the assembled body once the stream is over: ended
	// is true after an event that ended it, false when the body ended
	// first (an error wrapping ErrTransport when that leaves the answer
	// truncated).
	Finish(ended bool) ([]byte, error)
}

// MaxEventSizer is implemented by an Assembler whose events may be larger
// than MaxEventBytes (the Responses API sends the whole response in its
// last event); the limit is then the one it returns.
type MaxEventSizer interface{ MaxEventBytes() int }

// StreamOptions tunes one DoStream call.
type StreamOptions struct {
	// IdleTimeout, when positive, is the longest wait for the next event:
	// from the response headers to the first event, and between events.
	// Only events with data count: SSE comments (": keep-alive") do not, so
	// a server that merely keeps the connection open is still a stall. The
	// call's total time is bounded by ctx's deadline, as for Do.
	IdleTimeout time.Duration
	// OnDelta, when set, is called with every delta, in order, from
	// DoStream's goroutine. It should be quick: the stream is not read
	// while it runs (that time does not count as idle).
	OnDelta func(Delta)
}

// StreamStats describes one streamed call, for metrics.
type StreamStats struct {
	// TTFT is the time from the start of the call to the first delta
	// that carries a token; zero when none came.
	TTFT time.Duration
	// Deltas counts the deltas passed to OnDelta.
	Deltas int
}

// drainGrace bounds the wait for the end of the body after the last
// event, read so that an HTTP/1.1 connection can be reused.
const drainGrace = 100 * time.Millisecond

// DoStream makes the call of Do as a streamed request and returns what Do
// would have. req.Body must already ask for a stream (the endpoint sets
// "stream": true); asm reads the server-sent events, OnDelta gets their
// deltas, and the assembled answer, checked with req.Check, is returned as
// Response.Body with status 200.
//
// Errors are Do's: a non-2xx answer is read whole and returns the same
// *StatusError (Retry-After, key redaction); a 2xx JSON answer (a server
// that does not stream) is returned as Do would. Beyond them:
//   - ErrStreamIdle (also ErrTimeout) when no event came for IdleTimeout,
//   - ErrTransport when the stream broke or ended before the answer did,
//   - *StreamError (also ErrTransport, or ErrQuota) for an error event,
//   - ErrMalformed for an event that does not parse, an event over
//     MaxEventBytes, an answer over MaxResponseBytes, or an assembled
//     answer that req.Check refuses: a stream is the plain answer or a
//     failure, never a malformed success.
//
// The Response is returned whenever an HTTP answer arrived; after a
// failed stream its Body is nil. The stats are valid also on error.
func (c *Client) DoStream(ctx context.Context, req Request, asm Assembler, opt StreamOptions) (*Response, StreamStats, error) {
	var st StreamStats
	start := time.Now()
	// sctx is cancelled with ErrStreamIdle by the idle timer.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hreq, k, err := c.newRequest(sctx, req, "text/event-stream")
	if err != nil {
		return nil, st, err
	}
	hr, err := c.hc.Do(hreq)
	if err != nil {
		return nil, st, transportError(sctx, err)
	}
	defer hr.Body.Close()
	if hr.StatusCode < 200 || hr.StatusCode > 299 || isJSON(hr.Header) {
		resp, err := readAnswer(sctx, hr, req, k)
		return resp, st, err
	}
	resp := &Response{StatusCode: hr.StatusCode, RequestID: hr.Header.Get("x-request-id"), Header: hr.Header}

	var idle *time.Timer
	if opt.IdleTimeout > 0 {
		idle = time.AfterFunc(opt.IdleTimeout, func() { cancel(ErrStreamIdle) })
		defer idle.Stop()
	}
	fail := func(err error) (*Response, StreamStats, error) {
		return resp, st, streamFailure(err, resp, k)
	}
	maxEvent := MaxEventBytes
	if m, ok := asm.(MaxEventSizer); ok {
		maxEvent = m.MaxEventBytes()
	}
	events := newSSEReader(hr.Body, maxEvent)
	ended := false
	for !ended {
		ev, err := events.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(readError(sctx, opt.IdleTimeout, maxEvent, err))
		}
		if idle != nil {
			idle.Stop() // OnDelta's time is not the server's
		}
		deltas, done, err := asm.Add(ev)
		if err != nil {
			return fail(err)
		}
		for _, d := range deltas {
			d.Seq = st.Deltas
			st.Deltas++
			if st.TTFT == 0 && d.Token {
				st.TTFT = time.Since(start)
			}
			if opt.OnDelta != nil {
				opt.OnDelta(d)
			}
		}
		if done {
			drain(hr.Body, cancel)
			ended = true
		} else if idle != nil {
			idle.Reset(opt.IdleTimeout)
		}
	}
	b, err := asm.Finish(ended)
	if err == nil {
		err = check(req, b) // e.g. tool call arguments that do not parse
	}
	if err != nil {
		return fail(err)
	}
	resp.Body = b
	return resp, st, nil
}

// streamFailure completes an assembler's error: a *StreamError gets the
// answer's status and headers, and the key is redacted from every text.
func streamFailure(err error, resp *Response, k string) error {
	var se *StreamError
	if errors.As(err, &se) {
		se.Response = resp
		se.Type, se.Code, se.Message = redact(se.Type, k), redact(se.Code, k), redact(se.Message, k)
	}
	return redactErr(err, k)
}

// readError names a failure to read the stream.
func readError(ctx context.Context, idle time.Duration, maxEvent int, err error) error {
	switch {
	case errors.Is(context.Cause(ctx), ErrStreamIdle):
		return fmt.Errorf("%w: no event for %s", ErrStreamIdle, idle)
	case errors.Is(err, errEventTooLarge):
		return fmt.Errorf("%w: %w (over %d bytes)", ErrMalformed, err, maxEvent)
	}
	return transportError(ctx, err)
}

// drain reads what follows the last event, briefly, so that the
// connection can be reused; cancel aborts a server that keeps the body
// open.
func drain(body io.Reader, cancel context.CancelCauseFunc) {
	t := time.AfterFunc(drainGrace, func() { cancel(errDrained) })
	defer t.Stop()
	_, _ = io.CopyN(io.Discard, body, 64<<10)
}

var errDrained = errors.New("api: stream drained")

// isJSON reports whether the answer is a JSON document rather than an
// event stream (a server that ignored "stream": true).
func isJSON(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == "application/json"
}
