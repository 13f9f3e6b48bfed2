package processor

import (
	"context"
	"encoding/json"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/record"
)

// DeltaSink receives the deltas of streamed answers, e.g. to publish them
// to a stream topic. It must be safe for concurrent use.
type DeltaSink interface {
	// Begin starts the deltas of one streamed call for the record rec
	// whose custom_id is customID. attempt counts the record's streamed
	// calls from 1: a retry gets the next number, so readers can discard
	// the deltas of a failed call. (A call repeated after a quota pause
	// gets one too, so it can exceed the result's attempts.)
	Begin(rec *kgo.Record, customID string, attempt int) DeltaWriter
}

// DeltaWriter takes the deltas of one streamed call, in order, from one
// goroutine. It must not block on its destination: the stream is not read
// while Delta runs.
type DeltaWriter interface {
	// Delta is one delta of the call: a chat chunk's delta object for
	// a choice, or a typed event of the Responses API, verbatim.
	Delta(ctx context.Context, d Delta)
	// End closes the call's deltas, after the last Delta: finishReason is
	// the first choice's (chat) or the response's status (responses)
	// when the call succeeded, cause the call's error when it failed. It
	// is called exactly once per Begin.
	End(ctx context.Context, finishReason string, cause error)
}

// recordStream is the streaming state of one record across its calls.
type recordStream struct {
	rec      *kgo.Record
	customID string
	calls    int // streamed calls made so far
}

// streamOf returns the streaming state of the calls of req, or nil when
// they are not streamed. A call is streamed when Config.Stream is set or
// the record's body has "stream": true, and its endpoint streams. It is
// the same call as a plain one to everything but the DeltaSink: the
// limiter, the retries and the usage reconciliation are unchanged, a stall
// fails with api.ErrStreamIdle, which is retried as a timeout, and the
// result's response body is the answer assembled from the stream, so
// result readers cannot tell the difference.
func (p *Processor) streamOf(rec *kgo.Record, req record.Request, ep endpoint.Endpoint) *recordStream {
	if _, ok := ep.(endpoint.Streamer); !ok || !(p.cfg.Stream || req.Stream) {
		return nil
	}
	return &recordStream{rec: rec, customID: req.CustomID}
}

// doStream makes one streamed call bounded by RequestTimeout, passes its
// deltas to Config.Deltas and tells the Observer how fast it was. Deltas
// are written under ctx (the record's), not the call's context: a record
// still buffered when the call ends must not be cancelled with it.
func (p *Processor) doStream(ctx context.Context, c *Call, rs *recordStream) (*Answer, error) {
	rs.calls++
	var w DeltaWriter = nopWriter{}
	if p.cfg.Deltas != nil {
		w = p.cfg.Deltas.Begin(rs.rec, rs.customID, rs.calls)
	}
	var (
		finish      string
		finishIndex = -1
		firstTok    time.Time
		lastTok     time.Time
	)
	call := *c
	call.OnDelta = func(d Delta) {
		w.Delta(ctx, d)
		if d.FinishReason != "" && (finishIndex < 0 || d.Index < finishIndex) {
			finish, finishIndex = d.FinishReason, d.Index
		}
		if d.Token {
			lastTok = p.now()
			if firstTok.IsZero() {
				firstTok = lastTok
			}
		}
	}
	actx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	resp, err := p.api.Call(actx, &call)
	switch {
	case err != nil:
		finish = ""
	case finishIndex < 0:
		finish = responseStatus(resp.Body)
	}
	w.End(ctx, finish, err)

	tps := 0.0
	if gen := lastTok.Sub(firstTok); err == nil && gen > 0 && resp.Usage != nil {
		tps = float64(resp.Usage.Total-resp.Usage.Input) / gen.Seconds()
	}
	ttft := time.Duration(0)
	if resp != nil {
		ttft = resp.TTFT
	}
	if ttft > 0 || tps > 0 {
		p.cfg.Observer.Stream(c.Model, ttft, tps)
	}
	return resp, err
}

// responseStatus is the "status" of a Responses API answer, "" for others.
func responseStatus(body []byte) string {
	var r struct {
		Object string `json:"object"`
		Status string `json:"status"`
	}
	if json.Unmarshal(body, &r) != nil || r.Object != "response" {
		return ""
	}
	return r.Status
}

type nopWriter struct{}

func (nopWriter) Delta(context.Context, Delta)       {}
func (nopWriter) End(context.Context, string, error) {}
