package record

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
)

// Error codes of a failed record (Result.Error.Code).
const (
	// CodeInvalidInput: the record value is not a valid prompt; no API call.
	CodeInvalidInput = "invalid_input"
	// CodeUnsupportedURL: a Batch line names an endpoint sluice does not serve.
	CodeUnsupportedURL = "unsupported_url"
	// CodeAPIError: the API answered with a non-retryable error; Response holds it.
	CodeAPIError = "api_error"
	// CodeTimeout: the last attempt timed out and no attempts were left.
	CodeTimeout = "timeout"
	// CodeRetriesExhausted: every attempt failed with a retryable error.
	CodeRetriesExhausted = "retries_exhausted"
	// CodeResultTooLarge: the API's answer does not fit in a Kafka record.
	CodeResultTooLarge = "result_too_large"
	// CodeExceedsTPM: the request alone reserves more tokens (prompt
	// estimate + n x max_tokens) than the group's tokens-per-minute budget
	// (SLUICE_TPM or the model's); no call was made.
	CodeExceedsTPM = "exceeds_tpm"
	// CodeExpired: the record did not finish within SLUICE_RECORD_DEADLINE,
	// retries and pauses included (OpenAI Batch's batch_expired).
	CodeExpired = "expired"
	// CodeCancelled: a batch-tier record whose provider batch was
	// cancelled before it ran (sluice batches cancel, or the provider's
	// console).
	CodeCancelled = "cancelled"
	// CodeDeliveryLimit: share-group mode; the record was delivered
	// SLUICE_MAX_DELIVERIES times without a result (each earlier delivery
	// ended with its member crashing, or its outputs not written), so it
	// is not called again; no call was made on this delivery.
	CodeDeliveryLimit = "delivery_limit"
)

// Tiers of a record (HeaderTier, Result.Tier).
const (
	TierRealtime = "realtime"
	TierBatch    = "batch"
)

// Headers added to a dead letter, beside the input's own headers.
const (
	HeaderErrorCode       = "sluice.error.code"
	HeaderErrorMessage    = "sluice.error.message"
	HeaderAttempts        = "sluice.attempts"
	HeaderSourceTopic     = "sluice.source.topic"
	HeaderSourcePartition = "sluice.source.partition"
	HeaderSourceOffset    = "sluice.source.offset"
	// HeaderValueOmitted, on a dead letter whose input value does not fit
	// in one record of the dead-letter topic, is the value's size in
	// bytes; the value is then empty and the source headers locate the
	// original. HeaderKeyOmitted and HeaderHeadersOmitted are the same for
	// a key, and for the input's headers (their count), in the rare case
	// where even they do not fit; they can appear on results too.
	HeaderValueOmitted   = "sluice.value.omitted"
	HeaderKeyOmitted     = "sluice.key.omitted"
	HeaderHeadersOmitted = "sluice.headers.omitted"
	// HeaderCustomID is the record header consulted for custom_id when the
	// value has none.
	HeaderCustomID = "custom_id"
	// HeaderTier on an input record picks its tier: "realtime" or "batch"
	// (default SLUICE_TIER); another value fails the record as
	// invalid_input.
	HeaderTier = "sluice.tier"
)

// Result is the value of a record on the output topic.
type Result struct {
	ID       string    `json:"id"`
	CustomID string    `json:"custom_id"`
	Response *Response `json:"response"`
	Error    *Error    `json:"error"`
	Source   Source    `json:"source"`
	Attempts int       `json:"attempts"`
	// LatencyMS is the time from the start of processing to the result,
	// retries and backoff included.
	LatencyMS int64 `json:"latency_ms"`
	// Tier is "batch" for a record answered through the provider's Batch
	// API; absent for realtime records.
	Tier string `json:"tier,omitempty"`
	// BatchID is the provider's batch of a batch-tier record.
	BatchID string `json:"batch_id,omitempty"`
	// CostUSDTicks is what the request cost, in xAI's ticks (1 USD =
	// 1e10 ticks), where the provider reports it.
	CostUSDTicks int64 `json:"cost_usd_ticks,omitempty"`
}

// Response is the API's answer: its status, request id and JSON body verbatim.
type Response struct {
	StatusCode int     `json:"status_code"`
	RequestID  *string `json:"request_id"`
	// Body is the API's JSON response, byte-for-byte; null when the body was
	// not JSON, or did not fit in one record (then BodyOmitted is set).
	Body json.RawMessage `json:"body"`
	// BodyOmitted is the size in bytes of a body left out because the
	// result would not fit in one record of the output topic; absent
	// otherwise.
	BodyOmitted int `json:"body_omitted,omitempty"`
}

// Error says why a record failed.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Source locates the input record of a result.
type Source struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Failed reports whether the record failed (and so is dead-lettered).
func (r *Result) Failed() bool { return r.Error != nil }

// NewID returns a unique result id.
func NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails.
	return "res_" + hex.EncodeToString(b[:])
}

// Marshal encodes r without escaping <, > and & so the API's body reaches
// readers as the API wrote it (only insignificant whitespace may differ).
func (r *Result) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
