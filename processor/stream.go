package processor

import (
	"context"
	"encoding/json"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/prompt"
)

// StreamCaller makes one streamed chat-completions call and returns the
// assembled answer. *api.Client implements it.
type StreamCaller interface {
	DoStream(ctx context.Context, body []byte, opt api.StreamOptions) (*api.Response, api.StreamStats, error)
}

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
	// Delta is one chunk's delta object for choice index, verbatim;
	// finishReason is set on the delta that ends the choice.
	Delta(ctx context.Context, index int, delta json.RawMessage, finishReason string)
	// End closes the call's deltas, after the last Delta: finishReason is
	// the first choice's when the call succeeded, cause the call's error
	// when it failed. It is called exactly once per Begin.
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
// the record's body has "stream": true (and the Caller is a StreamCaller).
// It is the same call as a plain one to everything but the DeltaSink: the
// limiter, the retries and the usage reconciliation are unchanged (the
// stream asks for include_usage), a stall fails with api.ErrStreamIdle,
// which is retried as a timeout, and the result's response body is the
// chat.completion assembled from the chunks, so result readers cannot tell
// the difference.
func (p *Processor) streamOf(rec *kgo.Record, req prompt.Request) *recordStream {
	if p.streamer == nil || !(p.cfg.Stream || req.Stream) {
		return nil
	}
	return &recordStream{rec: rec, customID: req.CustomID}
}

// doStream makes one streamed call bounded by RequestTimeout, passes its
// deltas to Config.Deltas and tells the Observer how fast it was. Deltas
// are written under ctx (the record's), not the call's context: a record
// still buffered when the call ends must not be cancelled with it.
func (p *Processor) doStream(ctx context.Context, req prompt.Request, rs *recordStream) (*api.Response, error) {
	rs.calls++
	var w DeltaWriter = nopWriter{}
	if p.cfg.Deltas != nil {
		w = p.cfg.Deltas.Begin(rs.rec, rs.customID, rs.calls)
	}
	var (
		finish            string
		finishIndex       = -1
		firstTok, lastTok time.Time
	)
	opt := api.StreamOptions{
		IdleTimeout: p.cfg.StreamIdleTimeout,
		OnChunk: func(c api.Chunk) {
			for _, d := range c.Choices {
				w.Delta(ctx, d.Index, d.Delta, d.FinishReason)
				if d.FinishReason != "" && (finishIndex < 0 || d.Index < finishIndex) {
					finish, finishIndex = d.FinishReason, d.Index
				}
				if hasToken(d) {
					lastTok = p.now()
					if firstTok.IsZero() {
						firstTok = lastTok
					}
				}
			}
		},
	}
	actx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	resp, st, err := p.streamer.DoStream(actx, req.Body, opt)
	if err != nil {
		finish = ""
	}
	w.End(ctx, finish, err)

	tps := 0.0
	if gen := lastTok.Sub(firstTok); err == nil && gen > 0 {
		if u, ok := readUsage(resp.Body); ok {
			tps = float64(u.TotalTokens-u.PromptTokens) / gen.Seconds()
		}
	}
	if st.TTFT > 0 || tps > 0 {
		p.cfg.Observer.Stream(req.Model, st.TTFT, tps)
	}
	return resp, err
}

// hasToken reports whether d carries generated text or a tool call, as
// api.StreamStats.TTFT counts.
func hasToken(d api.ChoiceDelta) bool {
	return d.Content != "" || d.ReasoningContent != "" || d.Refusal != "" || len(d.ToolCalls) > 0
}

type nopWriter struct{}

func (nopWriter) Delta(context.Context, int, json.RawMessage, string) {}
func (nopWriter) End(context.Context, string, error)                  {}
