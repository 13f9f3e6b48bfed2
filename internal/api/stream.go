package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// ErrStreamIdle: a streamed answer sent no chunk for StreamOptions.IdleTimeout.
// It is a kind of timeout: errors.Is(err, ErrTimeout) is also true, so
// Retryable reports it as worth another attempt.
var ErrStreamIdle error = streamIdleError{}

type streamIdleError struct{}

func (streamIdleError) Error() string { return "api: stream idle" }

// Is makes a stall match ErrTimeout, the class Retryable retries.
func (streamIdleError) Is(target error) bool { return target == ErrTimeout }

// StreamOptions tunes one DoStream call.
type StreamOptions struct {
	// IdleTimeout, when positive, is the longest wait for the next chunk:
	// from the response headers to the first chunk, and between chunks.
	// Only events with data count: SSE comments (": keep-alive") do not, so
	// a server that merely keeps the connection open is still a stall. The
	// call's total time is bounded by ctx's deadline, as for Do.
	IdleTimeout time.Duration
	// OnChunk, when set, is called with every chunk that carries a choice
	// or usage, in order, from DoStream's goroutine. It should be quick: the
	// stream is not read while it runs (that time does not count as idle).
	OnChunk func(Chunk)
}

// Chunk is one chat.completion.chunk event of a stream.
type Chunk struct {
	// Seq numbers the chunks passed to OnChunk, from 0.
	Seq int
	// Choices are the chunk's choice deltas, in the order received.
	Choices []ChoiceDelta
	// Usage is the chunk's usage object, verbatim, or nil. With
	// include_usage the last chunk carries it, with no choices.
	Usage json.RawMessage
}

// ChoiceDelta is what one chunk adds to one choice.
type ChoiceDelta struct {
	// Index is the choice's index (0 unless the request asked for n > 1).
	Index int
	// Delta is the delta object verbatim, e.g. {"content":" world"}; {}
	// when the chunk had none.
	Delta json.RawMessage
	// Role, Content, ReasoningContent and Refusal are the delta's fields
	// ("" when absent); ToolCalls its tool-call fragments.
	Role, Content, ReasoningContent, Refusal string
	ToolCalls                                []ToolCallDelta
	// FinishReason is set on the choice's last chunk ("stop", "length",
	// "tool_calls", ...), else "".
	FinishReason string
}

// ToolCallDelta is a fragment of one tool call: ID, Type and Name usually
// come in its first fragment, Arguments in pieces to be concatenated.
type ToolCallDelta struct {
	Index                     int
	ID, Type, Name, Arguments string
}

// hasToken reports whether d carries generated text or a tool call.
func (d ChoiceDelta) hasToken() bool {
	return d.Content != "" || d.ReasoningContent != "" || d.Refusal != "" || len(d.ToolCalls) > 0
}

// StreamStats describes one streamed call, for metrics.
type StreamStats struct {
	// TTFT is the time from the start of the call to the first chunk with
	// content, reasoning, refusal or a tool call; zero when none came.
	TTFT time.Duration
	// Chunks counts the chunks received (those passed to OnChunk).
	Chunks int
}

// drainGrace bounds the wait for the end of the body after [DONE], read so
// that an HTTP/1.1 connection can be reused.
const drainGrace = 100 * time.Millisecond

// DoStream makes the call of Do as a streamed request and returns what Do
// would have: it sets "stream": true and "stream_options.include_usage"
// in body (a JSON object; its other bytes are kept as they are), reads the
// server-sent chat.completion.chunk events, passes each to opt.OnChunk,
// and assembles them into the chat.completion a non-streamed call returns
// (id, created, model, system_fingerprint, every choice's message with
// content, reasoning_content, tool_calls and refusal, finish_reason,
// logprobs, and the usage object verbatim), as Response.Body with status
// 200.
//
// Errors are Do's: a non-2xx answer is read whole and returns the same
// *StatusError (Retry-After, key redaction); a 2xx JSON answer (a server
// that does not stream) is returned as Do would. Beyond them:
//   - ErrStreamIdle (also ErrTimeout) when no chunk came for IdleTimeout,
//   - ErrTransport when the stream ended before [DONE] with a choice that
//     has no finish_reason (truncated), or broke,
//   - *StreamError (also ErrTransport, or ErrQuota) for an error event,
//   - ErrMalformed for a chunk that is not JSON, an event over
//     MaxEventBytes, an answer over MaxResponseBytes, or an assembled
//     answer that CheckAnswer refuses (a tool call whose arguments do not
//     parse): a stream is the plain answer or a failure, never a
//     malformed success.
//
// The Response is returned whenever an HTTP answer arrived; after a
// failed stream its Body is nil. The stats are valid also on error.
func (c *Client) DoStream(ctx context.Context, body []byte, opt StreamOptions) (*Response, StreamStats, error) {
	var st StreamStats
	start := time.Now()
	sbody, err := streamBody(body)
	if err != nil {
		return nil, st, err
	}
	// sctx is cancelled with ErrStreamIdle by the idle timer.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, k, err := c.newRequest(sctx, sbody, "text/event-stream")
	if err != nil {
		return nil, st, err
	}
	hr, err := c.hc.Do(req)
	if err != nil {
		return nil, st, transportError(sctx, err)
	}
	defer hr.Body.Close()
	if hr.StatusCode < 200 || hr.StatusCode > 299 || isJSON(hr.Header) {
		resp, err := readAnswer(sctx, hr, k)
		return resp, st, err
	}
	resp := &Response{StatusCode: hr.StatusCode, RequestID: hr.Header.Get("x-request-id"), Header: hr.Header}

	var idle *time.Timer
	if opt.IdleTimeout > 0 {
		idle = time.AfterFunc(opt.IdleTimeout, func() { cancel(ErrStreamIdle) })
		defer idle.Stop()
	}
	fail := func(err error) (*Response, StreamStats, error) {
		return resp, st, err
	}
	asm := newAssembler(k, resp)
	events := newSSEReader(hr.Body)
	for {
		data, err := events.next()
		if err == io.EOF {
			if err := asm.complete(); err != nil {
				return fail(err)
			}
			break
		}
		if err != nil {
			return fail(readError(sctx, opt.IdleTimeout, err))
		}
		if idle != nil {
			idle.Stop() // OnChunk's time is not the server's
		}
		if string(data) == doneData {
			drain(hr.Body, cancel)
			if len(asm.choices) == 0 {
				return fail(fmt.Errorf("%w: stream ended without a choice", ErrMalformed))
			}
			break
		}
		ch, err := asm.add(data)
		if err != nil {
			return fail(err)
		}
		if len(ch.Choices) > 0 || ch.Usage != nil {
			ch.Seq = st.Chunks
			st.Chunks++
			if st.TTFT == 0 && slices.ContainsFunc(ch.Choices, ChoiceDelta.hasToken) {
				st.TTFT = time.Since(start)
			}
			if opt.OnChunk != nil {
				opt.OnChunk(ch)
			}
		}
		if idle != nil {
			idle.Reset(opt.IdleTimeout)
		}
	}
	b, err := asm.body()
	if err == nil {
		err = checkAnswer(b, k) // e.g. tool call arguments that do not parse
	}
	if err != nil {
		return fail(err)
	}
	resp.Body = b
	return resp, st, nil
}

// readError names a failure to read the stream.
func readError(ctx context.Context, idle time.Duration, err error) error {
	switch {
	case errors.Is(context.Cause(ctx), ErrStreamIdle):
		return fmt.Errorf("%w: no chunk for %s", ErrStreamIdle, idle)
	case errors.Is(err, errEventTooLarge):
		return fmt.Errorf("%w: %w (over %d bytes)", ErrMalformed, err, MaxEventBytes)
	}
	return transportError(ctx, err)
}

// drain reads what follows [DONE], briefly, so that the connection can be
// reused; cancel aborts a server that keeps the body open.
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

// streamBody sets "stream": true and stream_options.include_usage in the
// JSON object body by editing its bytes: every other byte, including key
// order, number spelling, escapes and the other members of stream_options,
// reaches the server as the record had it. A "stream" member's value is
// replaced by true, or the member appended; the same for include_usage
// inside stream_options (a null stream_options becomes
// {"include_usage":true}).
func streamBody(body []byte) ([]byte, error) {
	top, err := objectMembers(body)
	if err != nil {
		return nil, fmt.Errorf("api: a streamed request body must be a JSON object")
	}
	var edits []edit
	var add []string
	if !top.replace("stream", "true", 0, &edits) {
		add = append(add, `"stream":true`)
	}
	hasOptions := false
	for _, m := range top.members {
		if m.key != "stream_options" {
			continue
		}
		hasOptions = true
		raw := body[m.start:m.end]
		if isNull(raw) {
			edits = append(edits, edit{m.start, m.end, `{"include_usage":true}`})
			continue
		}
		so, err := objectMembers(raw)
		if err != nil {
			return nil, fmt.Errorf("api: stream_options must be a JSON object")
		}
		if !so.replace("include_usage", "true", m.start, &edits) {
			edits = append(edits, so.append(m.start, `"include_usage":true`))
		}
	}
	if !hasOptions {
		add = append(add, `"stream_options":{"include_usage":true}`)
	}
	if len(add) > 0 {
		edits = append(edits, top.append(0, strings.Join(add, ",")))
	}
	slices.SortFunc(edits, func(a, b edit) int { return cmp.Compare(b.start, a.start) })
	out := slices.Clone(body)
	for _, e := range edits { // back to front: earlier offsets stay valid
		out = slices.Replace(out, e.start, e.end, []byte(e.text)...)
	}
	return out, nil
}

// edit replaces body[start:end] by text.
type edit struct {
	start, end int
	text       string
}

// object is where the members of one JSON object sit in its bytes.
type object struct {
	members []member
	close   int // offset of the closing '}'
}

type member struct {
	key        string
	start, end int // the value's bytes
}

// replace adds an edit setting the value of every member named key to
// text (offsets shifted by base) and reports whether there was one.
func (o object) replace(key, text string, base int, edits *[]edit) bool {
	found := false
	for _, m := range o.members {
		if m.key == key {
			*edits = append(*edits, edit{base + m.start, base + m.end, text})
			found = true
		}
	}
	return found
}

// append returns the edit inserting the member text before the closing
// brace, after a comma when the object has members.
func (o object) append(base int, text string) edit {
	if len(o.members) > 0 {
		text = "," + text
	}
	at := base + o.close
	return edit{at, at, text}
}

// objectMembers locates the top-level members of the JSON object b.
func objectMembers(b []byte) (object, error) {
	var o object
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return o, errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return o, err
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return o, err
		}
		end := int(dec.InputOffset())
		o.members = append(o.members, member{key: key, start: end - len(raw), end: end})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return o, errors.New("not a JSON object")
	}
	o.close = int(dec.InputOffset()) - 1
	if _, err := dec.Token(); err != io.EOF {
		return o, errors.New("data after the JSON object")
	}
	return o, nil
}

// marshal encodes v without escaping <, > and &, so JSON strings reach the
// server as written.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// newRequest builds the POST of body with the client's headers and
// returns the key it sent ("" for none).
func (c *Client) newRequest(ctx context.Context, body []byte, accept string) (*http.Request, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, "", fmt.Errorf("api: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.userAgent)
	k := c.key()
	if k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	return req, k, nil
}

// readAnswer reads a whole answer and classifies it exactly as Do does;
// key k is redacted from the error.
func readAnswer(ctx context.Context, hr *http.Response, k string) (*Response, error) {
	b, err := io.ReadAll(io.LimitReader(hr.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	resp := &Response{
		StatusCode: hr.StatusCode,
		RequestID:  hr.Header.Get("x-request-id"),
		Header:     hr.Header,
		Body:       b,
	}
	if len(b) > MaxResponseBytes {
		return resp, fmt.Errorf("%w: body exceeds %d bytes", ErrMalformed, MaxResponseBytes)
	}
	if hr.StatusCode < 200 || hr.StatusCode > 299 {
		se := newStatusError(resp, time.Now())
		se.Type, se.Code, se.Message = redact(se.Type, k), redact(se.Code, k), redact(se.Message, k)
		return resp, se
	}
	if !json.Valid(b) {
		return resp, fmt.Errorf("%w: status %d with a body that is not JSON", ErrMalformed, hr.StatusCode)
	}
	if err := checkAnswer(b, k); err != nil {
		return resp, err
	}
	return resp, nil
}

// redact removes key k from s. Some gateways echo the key; error texts are
// logged and published, so they must never carry it.
func redact(s, k string) string {
	if k == "" {
		return s
	}
	return strings.ReplaceAll(s, k, "[redacted]")
}

// StreamError is an error event in a stream that had begun with a 2xx
// answer: data {"error":{...}}. It matches ErrQuota for account-level
// codes and ErrTransport otherwise, so Retryable retries it.
type StreamError struct {
	// Response is the streamed answer's status and headers (Body nil).
	Response *Response
	// Type, Code and Message are the error object's fields.
	Type, Code, Message string
}

// Error names the error event's code, never the request.
func (e *StreamError) Error() string {
	s := "api: error event in stream"
	if e.Code != "" {
		s += " (" + e.Code + ")"
	} else if e.Type != "" {
		s += " (" + e.Type + ")"
	}
	if e.Message != "" {
		s += ": " + truncate(e.Message, 200)
	}
	return s
}

// Is makes errors.Is(err, ErrQuota) true for account-level failures and
// errors.Is(err, ErrTransport) true for the others.
func (e *StreamError) Is(target error) bool {
	quota := AccountWide(0, e.Type, e.Code, e.Message)
	switch target {
	case ErrQuota:
		return quota
	case ErrTransport:
		return !quota
	}
	return false
}

// RateLimited reports whether the event is about the request rate (a 429
// told inside the stream): the caller backs off as for a 429 answer.
func (e *StreamError) RateLimited() bool {
	return rateLimitCodes[e.Code] || rateLimitCodes[e.Type]
}

// Overloaded reports whether the event says the provider is overloaded.
func (e *StreamError) Overloaded() bool {
	return overloadCodes[e.Code] || overloadCodes[e.Type]
}

// Wire shapes of a chat.completion.chunk.
type (
	wireChunk struct {
		ID                string          `json:"id"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		SystemFingerprint string          `json:"system_fingerprint"`
		Choices           []wireChoice    `json:"choices"`
		Usage             json.RawMessage `json:"usage"`
		Error             json.RawMessage `json:"error"`
	}
	wireChoice struct {
		Index        *int            `json:"index"`
		Delta        json.RawMessage `json:"delta"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	}
	wireDelta struct {
		Role             string         `json:"role"`
		Content          *string        `json:"content"`
		ReasoningContent *string        `json:"reasoning_content"`
		Refusal          *string        `json:"refusal"`
		ToolCalls        []wireToolCall `json:"tool_calls"`
	}
	wireToolCall struct {
		Index    *int   `json:"index"`
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function *struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
)

// entryCost is what a new choice, tool call or logprob entry counts
// against MaxResponseBytes beside its text, so that a hostile stream cannot
// grow memory through many empty entries.
const entryCost = 64

// assembler folds chunks into the chat.completion of the stream.
type assembler struct {
	key  string    // redacted from error events
	resp *Response // for StreamError

	id, model, fingerprint string
	created                int64
	choices                map[int]*choiceAcc
	usage                  json.RawMessage
	size                   int // bytes held, bounded by MaxResponseBytes
}

type choiceAcc struct {
	role                        string
	content, reasoning, refusal strings.Builder
	hasContent, hasRefusal      bool
	tools                       []*toolAcc // in order of first appearance
	logprobs                    map[string][]json.RawMessage
	hasLogprobs                 bool
	finish                      *string
}

type toolAcc struct {
	index         int
	id, typ, name string
	args          strings.Builder
}

func newAssembler(key string, resp *Response) *assembler {
	return &assembler{key: key, resp: resp, choices: map[int]*choiceAcc{}}
}

// grow charges n bytes against MaxResponseBytes.
func (a *assembler) grow(n int) error {
	a.size += n
	if a.size > MaxResponseBytes {
		return fmt.Errorf("%w: streamed answer exceeds %d bytes", ErrMalformed, MaxResponseBytes)
	}
	return nil
}

// add folds the event data of one chunk in and returns it as a Chunk.
func (a *assembler) add(data []byte) (Chunk, error) {
	var w wireChunk
	if err := json.Unmarshal(data, &w); err != nil {
		return Chunk{}, fmt.Errorf("%w: stream chunk is not a JSON object: %v", ErrMalformed, err)
	}
	if !isNull(w.Error) {
		return Chunk{}, a.streamError(w.Error)
	}
	if a.id == "" {
		a.id = w.ID
	}
	if a.model == "" {
		a.model = w.Model
	}
	if a.fingerprint == "" {
		a.fingerprint = w.SystemFingerprint
	}
	if a.created == 0 {
		a.created = w.Created
	}
	var ch Chunk
	if !isNull(w.Usage) {
		if err := a.grow(len(w.Usage)); err != nil {
			return Chunk{}, err
		}
		a.usage, ch.Usage = w.Usage, w.Usage
	}
	for _, wc := range w.Choices {
		d, err := a.addChoice(wc)
		if err != nil {
			return Chunk{}, err
		}
		ch.Choices = append(ch.Choices, d)
	}
	return ch, nil
}

func (a *assembler) addChoice(wc wireChoice) (ChoiceDelta, error) {
	idx := 0
	if wc.Index != nil {
		idx = *wc.Index
	}
	if idx < 0 {
		return ChoiceDelta{}, fmt.Errorf("%w: stream chunk with choice index %d", ErrMalformed, idx)
	}
	c := a.choices[idx]
	if c == nil {
		if err := a.grow(entryCost); err != nil {
			return ChoiceDelta{}, err
		}
		c = &choiceAcc{}
		a.choices[idx] = c
	}
	d := ChoiceDelta{Index: idx, Delta: wc.Delta}
	if isNull(wc.Delta) {
		d.Delta = json.RawMessage("{}")
	} else {
		var wd wireDelta
		if err := json.Unmarshal(wc.Delta, &wd); err != nil {
			return ChoiceDelta{}, fmt.Errorf("%w: stream chunk delta: %v", ErrMalformed, err)
		}
		if err := a.addDelta(c, &d, &wd); err != nil {
			return ChoiceDelta{}, err
		}
	}
	if wc.FinishReason != nil && *wc.FinishReason != "" {
		f := *wc.FinishReason
		c.finish, d.FinishReason = &f, f
	}
	if !isNull(wc.Logprobs) {
		if err := a.addLogprobs(c, wc.Logprobs); err != nil {
			return ChoiceDelta{}, err
		}
	}
	return d, nil
}

func (a *assembler) addDelta(c *choiceAcc, d *ChoiceDelta, wd *wireDelta) error {
	n := len(wd.Role)
	if wd.Role != "" {
		c.role, d.Role = wd.Role, wd.Role
	}
	if wd.Content != nil {
		c.hasContent = true
		c.content.WriteString(*wd.Content)
		d.Content = *wd.Content
		n += len(d.Content)
	}
	if wd.ReasoningContent != nil {
		c.reasoning.WriteString(*wd.ReasoningContent)
		d.ReasoningContent = *wd.ReasoningContent
		n += len(d.ReasoningContent)
	}
	if wd.Refusal != nil {
		c.hasRefusal = true
		c.refusal.WriteString(*wd.Refusal)
		d.Refusal = *wd.Refusal
		n += len(d.Refusal)
	}
	for _, wt := range wd.ToolCalls {
		t, err := a.tool(c, wt)
		if err != nil {
			return err
		}
		td := ToolCallDelta{Index: t.index, ID: wt.ID, Type: wt.Type}
		// As the reference client (openai-node's ChatCompletionStream)
		// does: id, type and name replace, arguments accumulate.
		if wt.ID != "" {
			t.id = wt.ID
		}
		if wt.Type != "" {
			t.typ = wt.Type
		}
		if f := wt.Function; f != nil {
			if f.Name != "" {
				t.name = f.Name
			}
			t.args.WriteString(f.Arguments)
			td.Name, td.Arguments = f.Name, f.Arguments
		}
		n += len(td.ID) + len(td.Type) + len(td.Name) + len(td.Arguments)
		d.ToolCalls = append(d.ToolCalls, td)
	}
	return a.grow(n)
}

// tool finds the tool call a fragment continues, or starts it. A fragment
// without index (some OpenAI-compatible servers) continues the call with
// its id, or the last call when it has no id, or starts a new one.
func (a *assembler) tool(c *choiceAcc, wt wireToolCall) (*toolAcc, error) {
	idx := -1
	switch {
	case wt.Index != nil:
		idx = *wt.Index
		if idx < 0 {
			return nil, fmt.Errorf("%w: stream chunk with tool call index %d", ErrMalformed, idx)
		}
	case wt.ID == "" && len(c.tools) > 0:
		return c.tools[len(c.tools)-1], nil
	case wt.ID != "":
		for _, t := range c.tools {
			if t.id == wt.ID {
				return t, nil
			}
		}
	}
	if idx >= 0 {
		for _, t := range c.tools {
			if t.index == idx {
				return t, nil
			}
		}
	} else {
		idx = 0
		for _, t := range c.tools {
			idx = max(idx, t.index+1)
		}
	}
	if err := a.grow(entryCost); err != nil {
		return nil, err
	}
	t := &toolAcc{index: idx}
	c.tools = append(c.tools, t)
	return t, nil
}

// addLogprobs appends the entries of a chunk's logprobs object
// ({"content":[...],"refusal":[...]}) to the choice's.
func (a *assembler) addLogprobs(c *choiceAcc, raw json.RawMessage) error {
	var lp map[string]json.RawMessage
	if err := json.Unmarshal(raw, &lp); err != nil {
		return fmt.Errorf("%w: stream chunk logprobs: %v", ErrMalformed, err)
	}
	if c.logprobs == nil {
		c.logprobs = map[string][]json.RawMessage{}
	}
	c.hasLogprobs = true
	for k, v := range lp {
		var entries []json.RawMessage
		if !isNull(v) {
			if err := json.Unmarshal(v, &entries); err != nil {
				return fmt.Errorf("%w: stream chunk logprobs.%s: %v", ErrMalformed, k, err)
			}
		}
		if _, ok := c.logprobs[k]; !ok {
			c.logprobs[k] = nil
		}
		for _, e := range entries {
			if err := a.grow(len(e) + entryCost); err != nil {
				return err
			}
			c.logprobs[k] = append(c.logprobs[k], e)
		}
	}
	return nil
}

// streamError turns an error event into a *StreamError.
func (a *assembler) streamError(raw json.RawMessage) error {
	e := &StreamError{Response: a.resp}
	e.Type, e.Code, e.Message = parseErrorObject(raw)
	e.Type, e.Code, e.Message = redact(e.Type, a.key), redact(e.Code, a.key), redact(e.Message, a.key)
	return e
}

// complete checks a stream that ended without [DONE]: it is whole only if
// every choice finished.
func (a *assembler) complete() error {
	if len(a.choices) == 0 {
		return fmt.Errorf("%w: stream ended before [DONE] without a choice (truncated)", ErrTransport)
	}
	for i, c := range a.choices {
		if c.finish == nil {
			return fmt.Errorf("%w: stream ended before [DONE] and before choice %d finished (truncated)", ErrTransport, i)
		}
	}
	return nil
}

// Shapes of the assembled chat.completion, in OpenAI's field order.
type (
	outCompletion struct {
		ID                string          `json:"id"`
		Object            string          `json:"object"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		SystemFingerprint string          `json:"system_fingerprint,omitempty"`
		Choices           []outChoice     `json:"choices"`
		Usage             json.RawMessage `json:"usage,omitempty"`
	}
	outChoice struct {
		Index        int             `json:"index"`
		Message      outMessage      `json:"message"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	}
	outMessage struct {
		Role             string        `json:"role"`
		Content          *string       `json:"content"`
		ReasoningContent string        `json:"reasoning_content,omitempty"`
		ToolCalls        []outToolCall `json:"tool_calls,omitempty"`
		Refusal          *string       `json:"refusal,omitempty"`
	}
	outToolCall struct {
		ID       string      `json:"id"`
		Type     string      `json:"type"`
		Function outFunction `json:"function"`
	}
	outFunction struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
)

// body encodes the assembled chat.completion.
func (a *assembler) body() ([]byte, error) {
	out := outCompletion{
		ID: a.id, Object: "chat.completion", Created: a.created, Model: a.model,
		SystemFingerprint: a.fingerprint, Usage: a.usage, Choices: []outChoice{},
	}
	for _, idx := range slices.Sorted(maps.Keys(a.choices)) {
		c := a.choices[idx]
		m := outMessage{Role: cmp.Or(c.role, "assistant"), ReasoningContent: c.reasoning.String()}
		if c.hasContent {
			s := c.content.String()
			m.Content = &s
		}
		if c.hasRefusal {
			s := c.refusal.String()
			m.Refusal = &s
		}
		slices.SortStableFunc(c.tools, func(x, y *toolAcc) int { return cmp.Compare(x.index, y.index) })
		for _, t := range c.tools {
			m.ToolCalls = append(m.ToolCalls, outToolCall{
				ID: t.id, Type: cmp.Or(t.typ, "function"),
				Function: outFunction{Name: t.name, Arguments: t.args.String()},
			})
		}
		oc := outChoice{Index: idx, Message: m, Logprobs: json.RawMessage("null"), FinishReason: c.finish}
		if c.hasLogprobs {
			lp, err := marshal(c.logprobs)
			if err != nil {
				return nil, fmt.Errorf("%w: encode logprobs: %v", ErrMalformed, err)
			}
			oc.Logprobs = lp
		}
		out.Choices = append(out.Choices, oc)
	}
	b, err := marshal(out)
	if err != nil {
		return nil, fmt.Errorf("%w: encode the assembled answer: %v", ErrMalformed, err)
	}
	return b, nil
}
