package processor

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Call is one API call of a record, as a Caller sees it.
type Call struct {
	// URL is the endpoint's Batch url, e.g. "/v1/responses".
	URL string
	// Model is the body's model ("" when the endpoint's model is optional
	// and the body names none).
	Model string
	// Body is the JSON body, byte for byte as the record had it (a
	// streamed call's Caller asks for the stream by editing it in place).
	Body []byte
	// Stream asks for a streamed answer; OnDelta then gets its deltas.
	Stream bool
	// IdleTimeout is the longest silence of a stream (0 = none).
	IdleTimeout time.Duration
	// Estimate is what the call is expected to cost.
	Estimate Estimate
	// OnDelta, on a streamed call, receives every delta in order from the
	// Caller's goroutine; it must be quick.
	OnDelta func(Delta)
}

// Estimate is what a call is expected to cost, in tokens, before it is
// made (about four characters a token; see the endpoint's rules).
type Estimate struct {
	// Input is the prompt or input tokens.
	Input int
	// Reserved is the output ceiling the body sets (n x max_tokens,
	// max_output_tokens), 0 when it sets none.
	Reserved int
	// Choices is n, the answers asked for.
	Choices int
	// NoOutput is set for endpoints that generate nothing (embeddings,
	// moderations).
	NoOutput bool
}

// Answer is one HTTP answer of the API.
type Answer struct {
	StatusCode int
	// RequestID is the provider's x-request-id, "" when absent.
	RequestID string
	Header    http.Header
	// Body is the answer's JSON, verbatim; for a streamed call, the
	// answer assembled from the stream (the body a plain call returns).
	Body []byte
	// Usage is what the answer says it cost; nil when it does not say.
	Usage *Usage
	// TTFT is a streamed call's time to its first token (0 when none).
	TTFT time.Duration
}

// Usage is what an answer says it cost, in tokens.
type Usage struct {
	// Input is the prompt or input tokens.
	Input int
	// Output is the generated tokens, reasoning excluded.
	Output int
	// Reasoning is the reasoning tokens.
	Reasoning int
	// Total is what the provider charged (total_tokens).
	Total int
}

// Delta is what one event of a streamed answer adds.
type Delta struct {
	// Type is the event type of a typed stream (Responses API, e.g.
	// "response.output_text.delta"); "" for a chat-completions chunk.
	Type string
	// Index is the choice (chat) or the output item (responses).
	Index int
	// Data is verbatim: the chunk choice's delta object, or the typed
	// event's data object.
	Data json.RawMessage
	// FinishReason is set on a chat choice's last delta.
	FinishReason string
	// Token reports whether the delta carries generated text, reasoning,
	// a refusal or a tool call.
	Token bool
}

// Caller makes one call and returns the answer whenever an HTTP answer
// arrived. Its error is nil only for a well-formed 2xx answer.
// internal/caller adapts sluice's API client; tests and other providers
// can supply their own.
//
// The processor retries an error that wraps a retryable failure of
// sluice's API client (timeouts, transport errors, malformed 2xx answers,
// 408, 409, 429 and 5xx answers); any other error fails the record with
// code api_error.
type Caller interface {
	Call(ctx context.Context, c *Call) (*Answer, error)
}

// CallerFunc is a function that is a Caller.
type CallerFunc func(ctx context.Context, c *Call) (*Answer, error)

// Call implements Caller.
func (f CallerFunc) Call(ctx context.Context, c *Call) (*Answer, error) { return f(ctx, c) }

// Middleware wraps a Caller with behaviour around each call, as
// net/http's func(http.Handler) http.Handler does: limiting, a cache, a
// journal. The processor wraps Config.Middleware around every call inside
// its retry loop, so each attempt passes through them.
type Middleware func(Caller) Caller

// Chain wraps c in mw, the first outermost.
func Chain(c Caller, mw ...Middleware) Caller {
	for i := len(mw) - 1; i >= 0; i-- {
		c = mw[i](c)
	}
	return c
}
