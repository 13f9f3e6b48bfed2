package batchapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/internal/api"
)

// xAI's limits (https://docs.x.ai/developers/advanced-api-usage/batch-api,
// "Limitations"), per team.
const (
	// XAIMaxAddBytes is the most one add call may carry: "Each request to
	// add batch requests has a maximum payload size of 25MB" (read as
	// decimal megabytes, the smaller reading).
	XAIMaxAddBytes = 25_000_000
	// XAIAddCallsPer30s is the rolling limit on add calls: "up to 100
	// add-batch-requests API calls every 30 seconds".
	XAIAddCallsPer30s = 100
	// XAIResultsPageSize is how many results one page asks for.
	XAIResultsPageSize = 100
)

// xaiBodyKeys is the member of a batch_request that holds the body, by
// endpoint: the native API takes chat completions
// ("chat_get_completion", the shape of POST /v1/chat/completions).
var xaiBodyKeys = map[string]string{
	"/v1/chat/completions": "chat_get_completion",
}

// XAISupports reports whether xAI's native Batch API takes requests for
// the endpoint url ("/v1/chat/completions").
func XAISupports(url string) bool {
	_, ok := xaiBodyKeys[url]
	return ok
}

// XAI is a client of xAI's native Batch API. Its calls pace themselves
// within xAI's limits for one client (one batch creation a second, at
// most XAIAddCallsPer30s add calls in any 30 seconds); replicas sharing a
// team share those limits, and a 429 then says so (api.Retryable).
type XAI struct {
	c      *api.Client
	create *rate.Limiter
	add    *rate.Limiter
	now    func() time.Time
	limit  int64 // MaxAnswerBytes; tests lower it
}

// NewXAI returns a client calling through c, whose base URL is xAI's
// (https://api.x.ai/v1).
func NewXAI(c *api.Client) *XAI {
	return &XAI{
		c: c,
		// "Maximum batch creation rate: 1 batch creation per second per
		// team."
		create: rate.NewLimiter(1, 1),
		// A burst of 10 and 3 a second: at most 10+3*30 = 100 calls in
		// any 30 seconds.
		add:   rate.NewLimiter(3, 10),
		now:   time.Now,
		limit: MaxAnswerBytes,
	}
}

// xaiBatch is xAI's batch object.
type xaiBatch struct {
	BatchID    string `json:"batch_id"`
	ID         string `json:"id"` // tolerated spelling
	Name       string `json:"name"`
	CreateTime string `json:"create_time"`
	ExpireTime string `json:"expire_time"`
	CancelTime string `json:"cancel_time"`
	// CancelByXAIMessage is set when xAI cancelled the batch itself.
	CancelByXAIMessage string `json:"cancel_by_xai_message"`
	State              struct {
		NumRequests  flexInt `json:"num_requests"`
		NumPending   flexInt `json:"num_pending"`
		NumSuccess   flexInt `json:"num_success"`
		NumError     flexInt `json:"num_error"`
		NumCancelled flexInt `json:"num_cancelled"`
	} `json:"state"`
	CostBreakdown struct {
		TotalCostUSDTicks flexInt `json:"total_cost_usd_ticks"`
	} `json:"cost_breakdown"`
}

// Create creates an empty batch named name.
func (x *XAI) Create(ctx context.Context, name string) (Batch, error) {
	if err := x.create.Wait(ctx); err != nil {
		return Batch{}, fmt.Errorf("batchapi: xai create: %w", err)
	}
	body, err := json.Marshal(map[string]string{"name": name})
	if err != nil {
		return Batch{}, fmt.Errorf("batchapi: xai create: %w", err)
	}
	return x.batchCall(ctx, "create", api.Call{Method: http.MethodPost, Path: "/batches", ContentType: "application/json", Body: bytes.NewReader(body)})
}

// Get reads a batch. xAI reports no state, only counts; State is derived:
// cancelling or cancelled once it was cancelled (cancel_time, or
// cancel_by_xai_message: by xAI), pending or not, expired once it passed
// its expire_time with requests pending or cancelled,
// completed when no request is pending (an xAI batch takes more requests
// at any time: completed says only that nothing added so far is
// pending), in_progress otherwise.
func (x *XAI) Get(ctx context.Context, id string) (Batch, error) {
	if id == "" {
		return Batch{}, fmt.Errorf("batchapi: xai get: empty batch id")
	}
	return x.batchCall(ctx, "get", api.Call{Method: http.MethodGet, Path: "/batches/" + url.PathEscape(id)})
}

// Cancel cancels a batch: its pending requests are not run.
func (x *XAI) Cancel(ctx context.Context, id string) (Batch, error) {
	if id == "" {
		return Batch{}, fmt.Errorf("batchapi: xai cancel: empty batch id")
	}
	return x.batchCall(ctx, "cancel", api.Call{Method: http.MethodPost, Path: "/batches/" + url.PathEscape(id) + ":cancel", ContentType: "application/json", Body: strings.NewReader("{}")})
}

func (x *XAI) batchCall(ctx context.Context, what string, call api.Call) (Batch, error) {
	resp, err := x.c.Send(ctx, call, x.limit)
	if err != nil {
		return Batch{}, fmt.Errorf("batchapi: xai %s: %w", what, err)
	}
	var xb xaiBatch
	if err := json.Unmarshal(resp.Body, &xb); err != nil {
		return Batch{}, fmt.Errorf("batchapi: xai %s: %w: %v", what, api.ErrMalformed, err)
	}
	b := x.batch(xb)
	if b.ID == "" {
		return Batch{}, fmt.Errorf("batchapi: xai %s: %w: the batch has no batch_id", what, api.ErrMalformed)
	}
	return b, nil
}

// batch converts xAI's batch object.
func (x *XAI) batch(xb xaiBatch) Batch {
	b := Batch{
		ID:           cmp.Or(xb.BatchID, xb.ID),
		Total:        int(xb.State.NumRequests),
		Pending:      int(xb.State.NumPending),
		Succeeded:    int(xb.State.NumSuccess),
		Failed:       int(xb.State.NumError),
		Cancelled:    int(xb.State.NumCancelled),
		CreatedAt:    parseTime(xb.CreateTime),
		ExpiresAt:    parseTime(xb.ExpireTime),
		CostUSDTicks: int64(xb.CostBreakdown.TotalCostUSDTicks),
	}
	cancelled := xb.CancelTime != "" || xb.CancelByXAIMessage != ""
	expired := !b.ExpiresAt.IsZero() && x.now().After(b.ExpiresAt)
	switch {
	case cancelled && b.Pending > 0:
		b.State = StateCancelling
	case cancelled:
		b.State = StateCancelled
	case expired && (b.Pending > 0 || b.Cancelled > 0):
		// Past its expire_time with requests that did not run, whether
		// still counted pending or moved to cancelled.
		b.State = StateExpired
	case b.Pending == 0:
		b.State = StateCompleted
	default:
		b.State = StateInProgress
	}
	return b
}

// xaiAddRequest is one entry of an add call.
type xaiAddRequest struct {
	BatchRequestID string                     `json:"batch_request_id"`
	BatchRequest   map[string]json.RawMessage `json:"batch_request"`
}

// XAIAddBytes is what r takes in an add call's body, to group requests
// within XAIMaxAddBytes.
func XAIAddBytes(r Request) int {
	// {"batch_request_id":<id>,"batch_request":{"chat_get_completion":<body>}},
	b, _ := json.Marshal(r.ID)
	return len(b) + len(r.Body) + 64
}

// XAIChunks splits reqs, in order, into the fewest consecutive groups
// that each fit in one add call. It fails with ErrTooLarge when one
// request alone does not fit.
func XAIChunks(reqs []Request) ([][]Request, error) {
	var out [][]Request
	start, size := 0, 0
	for i, r := range reqs {
		n := XAIAddBytes(r)
		if n+32 > XAIMaxAddBytes {
			return nil, fmt.Errorf("%w: request %q takes %d bytes, more than xAI's %d per add call", ErrTooLarge, r.ID, n, XAIMaxAddBytes)
		}
		if size+n+32 > XAIMaxAddBytes {
			out = append(out, reqs[start:i:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(reqs) {
		out = append(out, reqs[start:len(reqs):len(reqs)])
	}
	return out, nil
}

// Add adds reqs to a batch in one call (POST /v1/batches/{id}/requests).
// It is not idempotent: after an error that left no answer (a timeout, a
// reset) the requests may or may not have been added; compare the
// batch's Total before retrying. It fails with ErrTooLarge, without a
// call, when reqs do not fit in one call (split them with XAIChunks),
// and with ErrUnsupportedURL for an endpoint xAI's batches do not take.
func (x *XAI) Add(ctx context.Context, id string, reqs []Request) error {
	if id == "" {
		return fmt.Errorf("batchapi: xai add: empty batch id")
	}
	entries := make([]xaiAddRequest, 0, len(reqs))
	for _, r := range reqs {
		key, ok := xaiBodyKeys[r.URL]
		if !ok {
			return fmt.Errorf("batchapi: xai add: request %q: %w: %s", r.ID, ErrUnsupportedURL, r.URL)
		}
		entries = append(entries, xaiAddRequest{BatchRequestID: r.ID, BatchRequest: map[string]json.RawMessage{key: r.Body}})
	}
	body, err := json.Marshal(map[string]any{"batch_requests": entries})
	if err != nil {
		return fmt.Errorf("batchapi: xai add: %w", err)
	}
	if len(body) > XAIMaxAddBytes {
		return fmt.Errorf("batchapi: xai add: %w: %d bytes in one call, xAI takes %d", ErrTooLarge, len(body), XAIMaxAddBytes)
	}
	if err := x.add.Wait(ctx); err != nil {
		return fmt.Errorf("batchapi: xai add: %w", err)
	}
	call := api.Call{Method: http.MethodPost, Path: "/batches/" + url.PathEscape(id) + "/requests", ContentType: "application/json", Body: bytes.NewReader(body)}
	if _, err := x.c.Send(ctx, call, 1<<20); err != nil {
		return fmt.Errorf("batchapi: xai add: %w", err)
	}
	return nil
}

// xaiResultsPage is a page of GET /v1/batches/{id}/results.
type xaiResultsPage struct {
	Results         []xaiResult `json:"results"`
	Succeeded       []xaiResult `json:"succeeded"` // tolerated split shape
	Failed          []xaiResult `json:"failed"`
	PaginationToken string      `json:"pagination_token"`
}

// xaiResult is one request's result.
type xaiResult struct {
	BatchRequestID string `json:"batch_request_id"`
	BatchResult    struct {
		Response map[string]json.RawMessage `json:"response"`
		Error    json.RawMessage            `json:"error"`
	} `json:"batch_result"`
	ErrorMessage string `json:"error_message"`
}

// Results reads one page of a batch's results: those of the requests
// that ended so far, in the provider's order, and the token of the next
// page ("" after the last). Pass "" for the first page.
func (x *XAI) Results(ctx context.Context, id, pageToken string) ([]Result, string, error) {
	if id == "" {
		return nil, "", fmt.Errorf("batchapi: xai results: empty batch id")
	}
	q := url.Values{"limit": {strconv.Itoa(XAIResultsPageSize)}}
	if pageToken != "" {
		q.Set("pagination_token", pageToken)
	}
	resp, err := x.c.Send(ctx, api.Call{Method: http.MethodGet, Path: "/batches/" + url.PathEscape(id) + "/results?" + q.Encode()}, x.limit)
	if err != nil {
		return nil, "", fmt.Errorf("batchapi: xai results: %w", err)
	}
	return decodeXAIResults(resp.Body)
}

// decodeXAIResults decodes a page of results (bounded by
// MaxAnswerBytes). A result without a batch_request_id fails the page
// with api.ErrMalformed.
func decodeXAIResults(body []byte) ([]Result, string, error) {
	var page xaiResultsPage
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, "", fmt.Errorf("batchapi: xai results: %w: %v", api.ErrMalformed, err)
	}
	all := append(append(page.Results, page.Succeeded...), page.Failed...)
	out := make([]Result, 0, len(all))
	for i, xr := range all {
		if xr.BatchRequestID == "" {
			return nil, "", fmt.Errorf("batchapi: xai results: %w: result %d has no batch_request_id", api.ErrMalformed, i)
		}
		out = append(out, xaiResultOf(xr))
	}
	return out, page.PaginationToken, nil
}

// xaiResultOf converts one result: a response holds the endpoint's
// answer (chat_get_completion: a chat.completion); anything else is an
// error, expired or cancelled when its text says so.
func xaiResultOf(xr xaiResult) Result {
	r := Result{ID: xr.BatchRequestID}
	for _, body := range xr.BatchResult.Response {
		if len(body) > 0 && !bytes.Equal(body, []byte("null")) {
			r.Outcome, r.StatusCode, r.Body = Succeeded, http.StatusOK, body
			r.RequestID, r.CostUSDTicks = answerMeta(body)
			return r
		}
	}
	e := &Error{Message: xr.ErrorMessage}
	if len(xr.BatchResult.Error) > 0 {
		typ, code, msg := api.ParseErrorObject(xr.BatchResult.Error)
		e.Code = cmp.Or(code, typ)
		e.Message = cmp.Or(msg, e.Message)
	}
	if e.Message == "" && e.Code == "" {
		e.Message = "the batch result has neither a response nor an error"
	}
	e.Message = api.Truncate(e.Message, 1024)
	r.Outcome, r.Error = outcomeOfError(e), e
	return r
}

// outcomeOfError tells an expired or cancelled xAI request from a failed
// one by its error's code or text: xAI documents no codes for them.
func outcomeOfError(e *Error) Outcome {
	s := strings.ToLower(e.Code + " " + e.Message)
	switch {
	case strings.Contains(s, "expired"):
		return Expired
	case strings.Contains(s, "cancelled"), strings.Contains(s, "canceled"):
		return Cancelled
	}
	return Failed
}

// answerMeta reads an answer's id and its usage's cost_in_usd_ticks.
func answerMeta(body []byte) (id string, ticks int64) {
	var a struct {
		ID    string `json:"id"`
		Usage struct {
			CostInUSDTicks flexInt `json:"cost_in_usd_ticks"`
		} `json:"usage"`
	}
	if json.Unmarshal(body, &a) != nil {
		return "", 0
	}
	return a.ID, int64(a.Usage.CostInUSDTicks)
}

// flexInt is an integer written as a JSON number or, as protobuf's JSON
// mapping writes 64-bit integers, a string; anything else is 0.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if v, ferr := strconv.ParseFloat(s, 64); ferr == nil && v >= -9e18 && v <= 9e18 {
			n = int64(v)
		}
	}
	*f = flexInt(n)
	return nil
}

// parseTime reads an RFC 3339 time (protobuf's Timestamp in JSON); zero
// when it is not one.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}
