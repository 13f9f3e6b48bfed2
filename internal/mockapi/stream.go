package mockapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// wordsPerDelta is the number of words (tokens) per streamed content delta.
const wordsPerDelta = 3

// stallAfterPieces is how many content deltas a stalling stream sends.
const stallAfterPieces = 2

// chunk is an OpenAI chat.completion.chunk object.
type chunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	SystemFingerprint string        `json:"system_fingerprint"`
	Choices           []chunkChoice `json:"choices"`
	Usage             *usage        `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        delta     `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type delta struct {
	Role             string  `json:"role,omitempty"`
	Content          *string `json:"content,omitempty"`
	ReasoningContent *string `json:"reasoning_content,omitempty"`
}

// splitDeltas cuts text into deltas of n words whose concatenation is text.
func splitDeltas(text string, n int) []string {
	if text == "" {
		return nil
	}
	ws := strings.Split(text, " ")
	var out []string
	for i := 0; i < len(ws); i += n {
		d := strings.Join(ws[i:min(i+n, len(ws))], " ")
		if i > 0 {
			d = " " + d
		}
		out = append(out, d)
	}
	return out
}

// sseWriter writes server-sent events and flushes after each one.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	err     error
}

// start sends the 200 event-stream headers once.
func (e *sseWriter) start() {
	if e.started {
		return
	}
	e.started = true
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	e.w.WriteHeader(http.StatusOK)
	e.flush()
}

func (e *sseWriter) raw(s string) {
	if e.err != nil {
		return
	}
	e.start()
	if _, err := e.w.Write([]byte(s)); err != nil {
		e.err = err
		return
	}
	e.flush()
}

func (e *sseWriter) flush() {
	if err := e.rc.Flush(); err != nil && e.err == nil {
		e.err = err
	}
}

// outEvent is one server-sent event of a streamed answer.
type outEvent struct {
	// name is its "event:" line (the Responses API's typed events), "" for
	// none.
	name string
	// data is JSON-encoded as its "data:" line.
	data any
	// tokens is the generated tokens it carries: an event with tokens
	// (a piece) is paced by the generation time.
	tokens int
}

// send writes ev; data is its JSON encoding, cut to cut bytes when cut > 0.
func (e *sseWriter) send(ev outEvent, cut func(n int) int) {
	b, err := json.Marshal(ev.data)
	if err != nil {
		e.err = err
		return
	}
	if cut != nil {
		b = b[:cut(len(b))]
	}
	var out []byte
	if ev.name != "" {
		out = append(append(append(out, "event: "...), ev.name...), '\n')
	}
	out = append(append(append(out, "data: "...), b...), "\n\n"...)
	e.raw(string(out))
}

// stream serves a streamed answer: the first events after the time to
// first token, the pieces paced by the generation time, then done as the
// data of a last event ("[DONE]"; "" sends none). Fault f may be
// FaultMalformed (the first piece is cut short, the stream ends) or
// FaultStreamStall (the stream stalls after stallAfterPieces pieces, until
// the client gives up).
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, r *http.Request, a *answerPlan, events []outEvent, done string, f Fault) {
	pieces, totalTokens, firstPiece, stallAt := 0, 0, -1, len(events)
	for i, ev := range events {
		if ev.tokens <= 0 {
			continue
		}
		if firstPiece < 0 {
			firstPiece = i
		}
		if pieces == stallAfterPieces {
			stallAt = i
		}
		pieces++
		totalTokens += ev.tokens
	}
	if stallAt == len(events) { // fewer pieces: stall after the last one
		for i := len(events) - 1; i >= 0 && events[i].tokens <= 0; i-- {
			stallAt = i
		}
	}
	first, rest := s.timing(a, pieces)

	e := &sseWriter{w: w, rc: http.NewResponseController(w)}
	if s.cfg.KeepAlive > 0 {
		e.start()
	}
	if !s.pause(ctx, e, first) {
		abort(r)
		return
	}
	for i, ev := range events {
		if f == FaultStreamStall && i == stallAt {
			<-ctx.Done()
			abort(r)
			return
		}
		if f == FaultMalformed && (i == firstPiece || (firstPiece < 0 && i == len(events)-1)) {
			e.send(ev, func(n int) int { return 1 + s.randIntN(n-1) })
			break
		}
		if ev.tokens > 0 && totalTokens > 0 && !s.pause(ctx, e, time.Duration(float64(rest)*float64(ev.tokens)/float64(totalTokens))) {
			abort(r)
			return
		}
		e.send(ev, nil)
		if e.err != nil {
			return // client gone
		}
	}
	if f == FaultStreamStall && stallAt == len(events) {
		<-ctx.Done()
		abort(r)
		return
	}
	if done != "" {
		e.raw("data: " + done + "\n\n")
	}
	if e.err == nil && f == "" {
		s.stats.usage(a.usage())
	}
}

// chatEvents is a streamed chat completion
// (https://platform.openai.com/docs/api-reference/chat-streaming): role
// chunks, reasoning then content deltas, finish chunks and, with
// stream_options.include_usage, a usage chunk.
func chatEvents(p *parsedRequest, a *answerPlan, id string, created int64) []outEvent {
	mk := func(choices []chunkChoice, u *usage) outEvent {
		return outEvent{data: chunk{ID: "chatcmpl-" + id, Object: "chat.completion.chunk", Created: created,
			Model: p.model, SystemFingerprint: systemFingerprint, Choices: choices, Usage: u}}
	}
	var evs []outEvent
	empty := ""
	for i := range a.choices {
		evs = append(evs, mk([]chunkChoice{{Index: i, Delta: delta{Role: "assistant", Content: &empty}}}, nil))
	}
	for i, c := range a.choices {
		for _, t := range splitDeltas(c.reasoning, wordsPerDelta) {
			ev := mk([]chunkChoice{{Index: i, Delta: delta{ReasoningContent: &t}}}, nil)
			ev.tokens = len(strings.Fields(t))
			evs = append(evs, ev)
		}
		for _, t := range splitDeltas(c.content, wordsPerDelta) {
			ev := mk([]chunkChoice{{Index: i, Delta: delta{Content: &t}}}, nil)
			ev.tokens = len(strings.Fields(t))
			evs = append(evs, ev)
		}
	}
	for i, c := range a.choices {
		evs = append(evs, mk([]chunkChoice{{Index: i, FinishReason: &c.finishReason}}, nil))
	}
	if p.includeUsage {
		evs = append(evs, mk([]chunkChoice{}, a.usage()))
	}
	return evs
}

// pause waits d, sending ": keep-alive" comments every KeepAlive when
// enabled. It reports false when ctx ended first.
func (s *Server) pause(ctx context.Context, e *sseWriter, d time.Duration) bool {
	if ka := s.cfg.KeepAlive; ka > 0 {
		for ; d > ka; d -= ka {
			if !sleep(ctx, ka) {
				return false
			}
			e.raw(": keep-alive\n\n")
		}
	}
	return sleep(ctx, d)
}
