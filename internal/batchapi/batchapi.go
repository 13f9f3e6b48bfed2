// Package batchapi is a client of the providers' Batch APIs, which run
// requests asynchronously, outside the per-minute rate limits, at a
// reduced price:
//
//   - XAI, xAI's native Batch API
//     (https://docs.x.ai/developers/advanced-api-usage/batch-api): create
//     an empty batch, add requests to it in chunks, each with a
//     batch_request_id, poll it, page through its results;
//   - OpenAI, OpenAI's Batch API (https://platform.openai.com/docs/guides/batch,
//     https://platform.openai.com/docs/api-reference/batch): upload the
//     requests as a JSONL file (purpose "batch"), create a batch from it
//     with a 24h completion window, poll it, read its output and error
//     files.
//
// Both report a batch as a Batch (counts, a State named as OpenAI names
// them) and each request's outcome as a Result whose Body is what the
// realtime endpoint would have answered. Every call makes one attempt;
// errors are those of internal/api (test them with api.Retryable,
// errors.Is), so the caller decides what to retry. Adding requests is not
// idempotent: retry an add only once the batch's counts say it did not
// happen. Every size the provider controls is bounded: answers by
// MaxAnswerBytes, result lines by MaxResultBytes.
//
//	x := batchapi.NewXAI(apiClient) // the api.Client of https://api.x.ai/v1
//	b, _ := x.Create(ctx, "sluice-prompts-0")
//	_ = x.Add(ctx, b.ID, reqs)      // reqs within XAIMaxAddBytes (Chunks)
//	b, _ = x.Get(ctx, b.ID)         // poll until b.Pending == 0
//	for page := ""; ; {
//		rs, next, _ := x.Results(ctx, b.ID, page)
//		...
//		if page = next; page == "" { break }
//	}
package batchapi

import (
	"encoding/json"
	"errors"
	"time"
)

// Request is one request of a batch.
type Request struct {
	// ID names the request in its batch and its result: OpenAI's
	// custom_id, xAI's batch_request_id. Unique within a batch.
	ID string
	// URL is the endpoint's Batch url, e.g. "/v1/chat/completions".
	URL string
	// Body is the endpoint's JSON request body, sent byte for byte.
	Body json.RawMessage
}

// State is a batch's lifecycle state, named as OpenAI's Batch object's
// status is. xAI reports counts only; its State is derived from them (see
// XAI.Get).
type State string

// The states of a batch. Completed, Failed, Expired and Cancelled are
// terminal.
const (
	StateValidating State = "validating"
	StateInProgress State = "in_progress"
	StateFinalizing State = "finalizing"
	StateCompleted  State = "completed"
	StateFailed     State = "failed"
	StateExpired    State = "expired"
	StateCancelling State = "cancelling"
	StateCancelled  State = "cancelled"
)

// Terminal reports whether a batch in state s changes no more: its
// results are final.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateExpired, StateCancelled:
		return true
	}
	return false
}

// Batch is a provider's batch as last read.
type Batch struct {
	ID    string
	State State
	// Total is the requests in the batch; Pending those without a result
	// yet; Succeeded, Failed and Cancelled those with one (xAI's
	// num_success, num_error, num_cancelled; OpenAI's completed and
	// failed, its cancelled ones counted as failed).
	Total, Pending, Succeeded, Failed, Cancelled int
	// CreatedAt and ExpiresAt, zero when the provider did not say.
	CreatedAt, ExpiresAt time.Time
	// CostUSDTicks is what the batch cost so far, in xAI's ticks
	// (1 USD = 1e10 ticks; xAI's cost_breakdown), 0 when not reported.
	CostUSDTicks int64
	// OutputFileID and ErrorFileID are OpenAI's result files, "" until
	// the provider writes them.
	OutputFileID, ErrorFileID string
	// Errors are OpenAI's batch-level errors of a failed batch (its
	// input file refused), as "code: message" texts.
	Errors []string
	// Metadata is OpenAI's batch metadata.
	Metadata map[string]string
}

// Outcome is how one request of a batch ended.
type Outcome int

const (
	// Succeeded: Body is the endpoint's answer.
	Succeeded Outcome = iota + 1
	// Failed: the provider answered the request with an error (Error,
	// and for OpenAI the error answer in StatusCode and Body).
	Failed
	// Expired: the batch's completion window ended before the request
	// ran (OpenAI's batch_expired).
	Expired
	// Cancelled: the batch was cancelled before the request ran.
	Cancelled
)

// String returns "succeeded", "failed", "expired" or "cancelled".
func (o Outcome) String() string {
	switch o {
	case Succeeded:
		return "succeeded"
	case Failed:
		return "failed"
	case Expired:
		return "expired"
	case Cancelled:
		return "cancelled"
	}
	return "unknown"
}

// Result is the outcome of one request of a batch.
type Result struct {
	// ID is the request's ID (custom_id, batch_request_id).
	ID      string
	Outcome Outcome
	// StatusCode is the HTTP status of the request's answer: 200 for a
	// success, the error's status for an OpenAI error answer, 0 when the
	// provider gave none.
	StatusCode int
	// RequestID is the provider's id of the request, "" when none.
	RequestID string
	// Body is the answer as the realtime endpoint would have returned it
	// (a chat.completion for chat), or the error answer; nil when none.
	Body json.RawMessage
	// Error is set unless Outcome is Succeeded.
	Error *Error
	// CostUSDTicks is what the request cost in xAI's ticks (its usage's
	// cost_in_usd_ticks), 0 when not reported.
	CostUSDTicks int64
}

// Error is a request's error as the provider named it.
type Error struct {
	Code    string
	Message string
}

// Bounds on what the provider sends.
const (
	// MaxAnswerBytes bounds one answer of a batch call (a Batch, a page
	// of results).
	MaxAnswerBytes = 64 << 20
	// MaxResultBytes bounds one result (a line of an OpenAI result file,
	// one xAI result); a longer one fails the read with ErrMalformed.
	MaxResultBytes = 32 << 20
)

// Errors of this package; the others are internal/api's.
var (
	// ErrTooLarge: a request, or a batch, exceeds what the provider
	// accepts in one call (see XAIMaxAddBytes, OpenAIMaxFileBytes,
	// OpenAIMaxRequests).
	ErrTooLarge = errors.New("batchapi: too large for the provider's limits")
	// ErrUnsupportedURL: the provider's Batch API does not take requests
	// for this endpoint.
	ErrUnsupportedURL = errors.New("batchapi: endpoint not served by the batch API")
)
