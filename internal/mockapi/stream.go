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

// piece is one content or reasoning delta of a choice.
type piece struct {
	choice    int
	text      string
	tokens    int
	reasoning bool
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

// event sends v as one "data:" event.
func (e *sseWriter) event(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		e.err = err
		return
	}
	e.raw("data: " + string(b) + "\n\n")
}

// stream serves a streamed answer: role chunks, reasoning then content
// deltas paced by timing, finish chunks, the optional usage chunk and
// [DONE]. Fault f may be FaultMalformed or FaultStreamStall.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, r *http.Request, p *parsedRequest, a *answerPlan, id string, f Fault) {
	var pieces []piece
	totalTokens := 0
	for i, c := range a.choices {
		for _, t := range splitDeltas(c.reasoning, wordsPerDelta) {
			pieces = append(pieces, piece{choice: i, text: t, tokens: len(strings.Fields(t)), reasoning: true})
		}
		for _, t := range splitDeltas(c.content, wordsPerDelta) {
			pieces = append(pieces, piece{choice: i, text: t, tokens: len(strings.Fields(t))})
		}
	}
	for _, pc := range pieces {
		totalTokens += pc.tokens
	}
	first, rest := s.timing(a, len(pieces))

	e := &sseWriter{w: w, rc: http.NewResponseController(w)}
	if s.cfg.KeepAlive > 0 {
		e.start()
	}
	created := s.now().Unix()
	mk := func(choices []chunkChoice, u *usage) chunk {
		return chunk{ID: "chatcmpl-" + id, Object: "chat.completion.chunk", Created: created,
			Model: p.model, SystemFingerprint: systemFingerprint, Choices: choices, Usage: u}
	}

	if !s.pause(ctx, e, first) {
		abort(r)
		return
	}
	empty := ""
	for i := range a.choices {
		e.event(mk([]chunkChoice{{Index: i, Delta: delta{Role: "assistant", Content: &empty}}}, nil))
	}
	if f == FaultMalformed {
		b, _ := json.Marshal(mk([]chunkChoice{{Index: 0, Delta: delta{Content: &a.choices[0].content}}}, nil))
		e.raw("data: " + string(b[:1+s.randIntN(len(b)-1)]) + "\n\n")
		e.raw("data: [DONE]\n\n")
		return
	}
	for k := 0; k <= len(pieces); k++ {
		if f == FaultStreamStall && k == min(stallAfterPieces, len(pieces)) {
			<-ctx.Done()
			abort(r)
			return
		}
		if k == len(pieces) {
			break
		}
		pc := pieces[k]
		if totalTokens > 0 && !s.pause(ctx, e, time.Duration(float64(rest)*float64(pc.tokens)/float64(totalTokens))) {
			abort(r)
			return
		}
		d := delta{Content: &pc.text}
		if pc.reasoning {
			d = delta{ReasoningContent: &pc.text}
		}
		e.event(mk([]chunkChoice{{Index: pc.choice, Delta: d}}, nil))
		if e.err != nil {
			return // client gone
		}
	}
	for i, c := range a.choices {
		e.event(mk([]chunkChoice{{Index: i, FinishReason: &c.finishReason}}, nil))
	}
	u := a.usage()
	if p.includeUsage {
		e.event(mk([]chunkChoice{}, u))
	}
	e.raw("data: [DONE]\n\n")
	if e.err == nil {
		s.stats.usage(u)
	}
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
