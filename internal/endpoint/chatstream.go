package endpoint

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/jsonobj"
)

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
// against api.MaxResponseBytes beside its text, so that a hostile stream cannot
// grow memory through many empty entries.
const entryCost = 64

// chatAssembler folds chunks into the chat.completion of the stream.
type chatAssembler struct {
	id, model, fingerprint string
	created                int64
	choices                map[int]*choiceAcc
	usage                  json.RawMessage
	size                   int // bytes held, bounded by api.MaxResponseBytes
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

// NewAssembler implements Streamer.
func (Chat) NewAssembler() api.Assembler {
	return &chatAssembler{choices: map[int]*choiceAcc{}}
}

// grow charges n bytes against api.MaxResponseBytes.
func (a *chatAssembler) grow(n int) error {
	a.size += n
	if a.size > api.MaxResponseBytes {
		return fmt.Errorf("%w: streamed answer exceeds %d bytes", api.ErrMalformed, api.MaxResponseBytes)
	}
	return nil
}

// Add implements api.Assembler: it folds one chunk in and returns a delta
// for each of its choices. [DONE] ends the stream.
func (a *chatAssembler) Add(ev api.Event) ([]api.Delta, bool, error) {
	if string(ev.Data) == api.DoneData {
		if len(a.choices) == 0 {
			return nil, true, fmt.Errorf("%w: stream ended without a choice", api.ErrMalformed)
		}
		return nil, true, nil
	}
	var w wireChunk
	if err := json.Unmarshal(ev.Data, &w); err != nil {
		return nil, false, fmt.Errorf("%w: stream chunk is not a JSON object: %v", api.ErrMalformed, err)
	}
	if !jsonobj.IsNull(w.Error) {
		return nil, false, api.ErrorEvent(w.Error)
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
	if !jsonobj.IsNull(w.Usage) {
		if err := a.grow(len(w.Usage)); err != nil {
			return nil, false, err
		}
		a.usage = w.Usage
	}
	var deltas []api.Delta
	for _, wc := range w.Choices {
		d, err := a.addChoice(wc)
		if err != nil {
			return nil, false, err
		}
		deltas = append(deltas, d)
	}
	return deltas, false, nil
}

func (a *chatAssembler) addChoice(wc wireChoice) (api.Delta, error) {
	idx := 0
	if wc.Index != nil {
		idx = *wc.Index
	}
	if idx < 0 {
		return api.Delta{}, fmt.Errorf("%w: stream chunk with choice index %d", api.ErrMalformed, idx)
	}
	c := a.choices[idx]
	if c == nil {
		if err := a.grow(entryCost); err != nil {
			return api.Delta{}, err
		}
		c = &choiceAcc{}
		a.choices[idx] = c
	}
	d := api.Delta{Index: idx, Data: wc.Delta}
	if jsonobj.IsNull(wc.Delta) {
		d.Data = json.RawMessage("{}")
	} else {
		var wd wireDelta
		if err := json.Unmarshal(wc.Delta, &wd); err != nil {
			return api.Delta{}, fmt.Errorf("%w: stream chunk delta: %v", api.ErrMalformed, err)
		}
		if err := a.addDelta(c, &d, &wd); err != nil {
			return api.Delta{}, err
		}
	}
	if wc.FinishReason != nil && *wc.FinishReason != "" {
		f := *wc.FinishReason
		c.finish, d.FinishReason = &f, f
	}
	if !jsonobj.IsNull(wc.Logprobs) {
		if err := a.addLogprobs(c, wc.Logprobs); err != nil {
			return api.Delta{}, err
		}
	}
	return d, nil
}

func (a *chatAssembler) addDelta(c *choiceAcc, d *api.Delta, wd *wireDelta) error {
	n := len(wd.Role)
	if wd.Role != "" {
		c.role = wd.Role
	}
	if wd.Content != nil {
		c.hasContent = true
		c.content.WriteString(*wd.Content)
		n += len(*wd.Content)
		d.Token = d.Token || *wd.Content != ""
	}
	if wd.ReasoningContent != nil {
		c.reasoning.WriteString(*wd.ReasoningContent)
		n += len(*wd.ReasoningContent)
		d.Token = d.Token || *wd.ReasoningContent != ""
	}
	if wd.Refusal != nil {
		c.hasRefusal = true
		c.refusal.WriteString(*wd.Refusal)
		n += len(*wd.Refusal)
		d.Token = d.Token || *wd.Refusal != ""
	}
	for _, wt := range wd.ToolCalls {
		t, err := a.tool(c, wt)
		if err != nil {
			return err
		}
		d.Token = true
		n += len(wt.ID) + len(wt.Type)
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
			n += len(f.Name) + len(f.Arguments)
		}
	}
	return a.grow(n)
}

// tool finds the tool call a fragment continues, or starts it. A fragment
// without index (some OpenAI-compatible servers) continues the call with
// its id, or the last call when it has no id, or starts a new one.
func (a *chatAssembler) tool(c *choiceAcc, wt wireToolCall) (*toolAcc, error) {
	idx := -1
	switch {
	case wt.Index != nil:
		idx = *wt.Index
		if idx < 0 {
			return nil, fmt.Errorf("%w: stream chunk with tool call index %d", api.ErrMalformed, idx)
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
func (a *chatAssembler) addLogprobs(c *choiceAcc, raw json.RawMessage) error {
	var lp map[string]json.RawMessage
	if err := json.Unmarshal(raw, &lp); err != nil {
		return fmt.Errorf("%w: stream chunk logprobs: %v", api.ErrMalformed, err)
	}
	if c.logprobs == nil {
		c.logprobs = map[string][]json.RawMessage{}
	}
	c.hasLogprobs = true
	for k, v := range lp {
		var entries []json.RawMessage
		if !jsonobj.IsNull(v) {
			if err := json.Unmarshal(v, &entries); err != nil {
				return fmt.Errorf("%w: stream chunk logprobs.%s: %v", api.ErrMalformed, k, err)
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

// Finish implements api.Assembler. A stream that ended without [DONE] is
// whole only if every choice finished.
func (a *chatAssembler) Finish(ended bool) ([]byte, error) {
	if !ended {
		if err := a.complete(); err != nil {
			return nil, err
		}
	}
	return a.body()
}

func (a *chatAssembler) complete() error {
	if len(a.choices) == 0 {
		return fmt.Errorf("%w: stream ended before [DONE] without a choice (truncated)", api.ErrTransport)
	}
	for i, c := range a.choices {
		if c.finish == nil {
			return fmt.Errorf("%w: stream ended before [DONE] and before choice %d finished (truncated)", api.ErrTransport, i)
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
func (a *chatAssembler) body() ([]byte, error) {
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
			lp, err := jsonobj.Marshal(c.logprobs)
			if err != nil {
				return nil, fmt.Errorf("%w: encode logprobs: %v", api.ErrMalformed, err)
			}
			oc.Logprobs = lp
		}
		out.Choices = append(out.Choices, oc)
	}
	b, err := jsonobj.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("%w: encode the assembled answer: %v", api.ErrMalformed, err)
	}
	return b, nil
}
