package mockapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxBodyBytes bounds the request body size.
const maxBodyBytes = 32 << 20

// chatRequest is the part of a chat-completions request the simulator reads.
type chatRequest struct {
	Model               *string        `json:"model"`
	Messages            *[]chatMessage `json:"messages"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	N                   *int           `json:"n"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
}

// chatMessage is one input message; Content is a string, an array of
// content parts or null.
type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// contentPart is one element of an array-valued message content.
type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// parsedRequest is a validated request.
type parsedRequest struct {
	model        string
	roles        []string
	texts        []string // message contents as plain text
	maxTokens    int      // 0 = not given
	n            int
	stream       bool
	includeUsage bool
	// instructions is a Responses request's, nil when absent.
	instructions *string
	// inputs are the texts of an endpoint that answers each input
	// (embeddings, moderations); dims is an embedding's length.
	inputs []string
	dims   int
}

// chatRoute is POST /chat/completions
// (https://platform.openai.com/docs/api-reference/chat/create).
var chatRoute = route{
	parse: parseChat,
	answer: func(p *parsedRequest, a *answerPlan, id string, created int64) any {
		return a.completion(id, p.model, created)
	},
	events: chatEvents,
	done:   "[DONE]",
}

// decodeBody decodes a request body into v: one JSON value, nothing after.
func decodeBody(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON value")
	}
	if err != nil {
		return invalidRequest("", fmt.Sprintf("We could not parse the JSON body of your request: %v", err))
	}
	return nil
}

// needModel checks that a request names a model.
func needModel(m *string) *apiError {
	if m == nil || *m == "" {
		return invalidRequest("model", "you must provide a model parameter")
	}
	return nil
}

// parseChat validates a chat-completions request body.
func parseChat(body []byte) (*parsedRequest, *apiError) {
	var req chatRequest
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, aerr
	}
	if aerr := needModel(req.Model); aerr != nil {
		return nil, aerr
	}
	if req.Messages == nil {
		return nil, invalidRequest("messages", "Missing required parameter: 'messages'.")
	}
	msgs := *req.Messages
	if len(msgs) == 0 {
		return nil, invalidRequest("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.")
	}
	p := &parsedRequest{model: *req.Model, n: 1, stream: req.Stream}
	for i, m := range msgs {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Role == "" {
			return nil, invalidRequest(param+".role", "Missing required parameter: '"+param+".role'.")
		}
		text, ok := contentText(m.Content)
		if !ok {
			return nil, invalidRequest(param+".content", "Invalid type for '"+param+".content': expected a string or an array of content parts.")
		}
		p.roles = append(p.roles, m.Role)
		p.texts = append(p.texts, text)
	}
	for _, mt := range []struct {
		name string
		v    *int
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if aerr := p.setMaxTokens(mt.name, mt.v); aerr != nil { // max_completion_tokens wins: it is set last
			return nil, aerr
		}
	}
	if aerr := p.setChoices(req.N, req.Stream, req.StreamOptions); aerr != nil {
		return nil, aerr
	}
	return p, nil
}

// streamOptions is a request's stream_options (chat, legacy completions).
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// setMaxTokens sets maxTokens to the ceiling named name (max_tokens,
// max_output_tokens, ...) when given: at least 1.
func (p *parsedRequest) setMaxTokens(name string, v *int) *apiError {
	if v == nil {
		return nil
	}
	if *v < 1 {
		return invalidRequest(name, fmt.Sprintf("Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", name, *v))
	}
	p.maxTokens = *v
	return nil
}

// setChoices sets n (1 to 128) and, with a stream, stream_options.
func (p *parsedRequest) setChoices(n *int, stream bool, so *streamOptions) *apiError {
	if n != nil {
		if *n < 1 || *n > 128 {
			return invalidRequest("n", fmt.Sprintf("Invalid 'n': expected a value in [1, 128], but got %d instead.", *n))
		}
		p.n = *n
	}
	if so != nil {
		if !stream {
			return invalidRequest("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		p.includeUsage = so.IncludeUsage
	}
	return nil
}

// contentText flattens a message content (string, parts array or null).
func contentText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	var parts []contentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", false
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), true
}

// choicePlan is the deterministic answer for one choice.
type choicePlan struct {
	content          string
	reasoning        string
	completionTokens int
	reasoningTokens  int
	finishReason     string
}

// answerPlan is the deterministic answer for a request.
type answerPlan struct {
	promptTokens int
	choices      []choicePlan
	// budgetTokens is what the request counts against the TPM bucket.
	budgetTokens int
}

// usage totals over all choices. total_tokens includes reasoning tokens as
// xAI reports them (completion_tokens excludes them).
func (a *answerPlan) usage() *usage {
	u := &usage{PromptTokens: a.promptTokens}
	for _, c := range a.choices {
		u.CompletionTokens += c.completionTokens
		u.CompletionTokensDetails.ReasoningTokens += c.reasoningTokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens + u.CompletionTokensDetails.ReasoningTokens
	return u
}

// maxChoiceTokens is the largest reasoning+completion token count of a choice.
func (a *answerPlan) maxChoiceTokens() int {
	m := 0
	for _, c := range a.choices {
		m = max(m, c.completionTokens+c.reasoningTokens)
	}
	return m
}

// fillerWords pad answers to their token count; one word counts as one token.
var fillerWords = strings.Fields(`lorem ipsum dolor sit amet consectetur adipiscing
elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua enim ad
minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo
consequat duis aute irure`)

// requestHash hashes the model and the canonical messages.
func requestHash(p *parsedRequest) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s", len(p.model), p.model)
	for i := range p.roles {
		fmt.Fprintf(h, "|%d:%s|%d:%s", len(p.roles[i]), p.roles[i], len(p.texts[i]), p.texts[i])
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// isReasoningModel reports whether model reports reasoning tokens.
func isReasoningModel(model string) bool {
	m := strings.ToLower(model)
	return strings.Contains(m, "reasoning") || strings.Contains(m, "grok-4")
}

// plan derives the deterministic answer for p.
func (s *Server) plan(p *parsedRequest) *answerPlan {
	a := &answerPlan{promptTokens: promptTokens(p.texts)}
	base := requestHash(p)
	last := lastUserText(p)
	for i := 0; i < p.n; i++ {
		h := base
		if i > 0 {
			h = sha256.Sum256(append(base[:], []byte(strconv.Itoa(i))...))
		}
		a.choices = append(a.choices, s.planChoice(h, p, last))
	}
	if p.maxTokens > 0 {
		a.budgetTokens = a.promptTokens + p.n*p.maxTokens
	} else {
		a.budgetTokens = a.usage().TotalTokens // reasoning tokens count too
	}
	return a
}

// planChoice derives one choice from its hash h.
func (s *Server) planChoice(h [32]byte, p *parsedRequest, lastUser string) choicePlan {
	tag := hex.EncodeToString(h[:4])
	natural := s.cfg.CompletionTokens
	if natural == 0 {
		natural = 16 + int(binary.BigEndian.Uint64(h[:8])%48)
	}
	c := choicePlan{completionTokens: natural, finishReason: "stop"}
	if p.maxTokens > 0 && p.maxTokens < natural {
		c.completionTokens, c.finishReason = p.maxTokens, "length"
	}
	c.content = words("mock answer #"+tag+": "+truncateRunes(lastUser, 60), h, c.completionTokens)
	if isReasoningModel(p.model) {
		c.reasoningTokens = 8 + int(h[8]%24)
		c.reasoning = words("thinking about request #"+tag+":", h, c.reasoningTokens)
	}
	return c
}

// words returns exactly n space-separated words: those of prefix, then
// filler words chosen by h.
func words(prefix string, h [32]byte, n int) string {
	ws := strings.Fields(prefix)
	for i := len(ws); len(ws) < n; i++ {
		ws = append(ws, fillerWords[(int(h[i%len(h)])+i)%len(fillerWords)])
	}
	return strings.Join(ws[:n], " ")
}

// promptTokens estimates prompt tokens: ceil(chars/4) + 4 per message.
func promptTokens(texts []string) int {
	chars := 0
	for _, t := range texts {
		chars += utf8.RuneCountInString(t)
	}
	return (chars+3)/4 + 4*len(texts)
}

// lastUserText returns the last user message, or the last message.
func lastUserText(p *parsedRequest) string {
	for i := len(p.roles) - 1; i >= 0; i-- {
		if p.roles[i] == "user" {
			return p.texts[i]
		}
	}
	return p.texts[len(p.texts)-1]
}

// truncateRunes returns the first n runes of s.
func truncateRunes(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

// usage is the OpenAI usage object.
type usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

// message is an assistant message of a chat.completion.
type message struct {
	Role             string  `json:"role"`
	Content          string  `json:"content"`
	ReasoningContent string  `json:"reasoning_content,omitempty"`
	Refusal          *string `json:"refusal"`
}

// completionChoice is one choice of a chat.completion.
type completionChoice struct {
	Index        int       `json:"index"`
	Message      message   `json:"message"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

// completion is an OpenAI chat.completion object.
type completion struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	Choices           []completionChoice `json:"choices"`
	Usage             *usage             `json:"usage"`
	SystemFingerprint string             `json:"system_fingerprint"`
}

// systemFingerprint is reported on every completion.
const systemFingerprint = "fp_sluice_mock"

// completion builds the chat.completion object for a.
func (a *answerPlan) completion(id, model string, created int64) *completion {
	c := &completion{
		ID: "chatcmpl-" + id, Object: "chat.completion", Created: created, Model: model,
		Usage: a.usage(), SystemFingerprint: systemFingerprint,
	}
	for i, ch := range a.choices {
		c.Choices = append(c.Choices, completionChoice{
			Index:        i,
			Message:      message{Role: "assistant", Content: ch.content, ReasoningContent: ch.reasoning},
			FinishReason: ch.finishReason,
		})
	}
	return c
}
