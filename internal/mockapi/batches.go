package mockapi

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The simulator's Batch APIs (batches.go): both of them, on one store.
//
//   - xAI's native API: POST /v1/batches {"name"} creates an empty batch;
//     POST /v1/batches/{id}/requests adds {"batch_requests":[{
//     "batch_request_id","batch_request":{"chat_get_completion":{...}}}]}
//     (at most 25 MB a call); GET /v1/batches/{id} reports its counts
//     (state.num_requests, num_pending, num_success, num_error,
//     num_cancelled) and cost_breakdown.total_cost_usd_ticks; GET
//     /v1/batches/{id}/results?limit=&pagination_token= pages through the
//     results of the requests that ended; POST /v1/batches/{id}:cancel.
//   - OpenAI's: POST /v1/files (multipart, purpose "batch") stores a JSONL
//     input file; POST /v1/batches {"input_file_id","endpoint",
//     "completion_window":"24h","metadata"} creates a batch of it (status
//     validating, in_progress, finalizing, then completed, expired or
//     cancelled); GET /v1/batches/{id}; GET /v1/batches?after=&limit=;
//     GET /v1/files/{id}/content of its output and error files; POST
//     /v1/batches/{id}/cancel.
//
// A request ends Config.BatchDelay after it arrived (added, or its batch
// created). It fails (a 500 server_error answer) with probability
// Config.BatchFail and expires without running with probability
// Config.BatchExpire; otherwise its answer is the realtime endpoint's
// for the same body. Cancelling ends every request still pending as
// cancelled. Stats().Batch counts what arrived, and every request id
// that arrived more than once, in any batch (BatchStats.Duplicates).

// Bounds of the batch routes, the providers' own.
const (
	maxAddBytes  = 25_000_000 // xAI: 25 MB per add call
	maxFileBytes = 200 << 20  // OpenAI: 200 MB per input file
	maxFileLines = 50_000     // OpenAI: requests per batch
	batchWindow  = 24 * time.Hour
	// xaiTicksPerToken prices the simulated answers: 1e10 ticks are one
	// USD, so 2000 ticks a token is $0.20 per million tokens.
	xaiTicksPerToken = 2000
)

// BatchStats counts the batch routes' work.
type BatchStats struct {
	// Batches counts batches created, RequestsAdded the requests that
	// arrived in them.
	Batches       int64 `json:"batches"`
	RequestsAdded int64 `json:"requests_added"`
	// Duplicates counts requests whose id had already arrived, in this
	// batch or another: a client adding a request at most once sees 0.
	Duplicates int64 `json:"duplicates"`
	// Cancels counts cancel calls.
	Cancels int64 `json:"cancels"`
	// Files is how many OpenAI files are stored now (uploaded or
	// written, not deleted).
	Files int `json:"files"`
}

type batchKind int

const (
	kindXAI batchKind = iota + 1
	kindOpenAI
)

type fate int

const (
	fateSucceed fate = iota
	fateFail
	fateExpire
)

// batchStore holds the batches and files; its methods take mu.
type batchStore struct {
	mu      sync.Mutex
	batches map[string]*mockBatch
	order   []string // batch ids, oldest first
	files   map[string][]byte
	seen    map[string]int // request ids that arrived, and how often
	stats   BatchStats
}

// batchLocked returns batch id, of kind (0 for any), or writes a 404
// answer and returns nil. The caller holds mu.
func (st *batchStore) batchLocked(w http.ResponseWriter, id string, kind batchKind) *mockBatch {
	b := st.batches[id]
	if b == nil || (kind != 0 && b.kind != kind) {
		writeError(w, notFound("batch", id))
		return nil
	}
	return b
}

type mockBatch struct {
	kind      batchKind
	id, name  string
	endpoint  string // OpenAI
	fileID    string
	metadata  map[string]string
	created   time.Time
	cancelled time.Time // zero unless cancelled
	reqs      []*batchReq
	outFile   string // OpenAI, once ended
	errFile   string
}

type batchReq struct {
	id      string
	url     string // "/chat/completions" etc., without /v1
	body    []byte
	arrived time.Time
	fate    fate
	invalid *apiError // the endpoint's refusal of the body, nil when valid
}

// outcome of a request at now: "" while pending.
func (s *Server) outcome(b *mockBatch, r *batchReq, now time.Time) string {
	end := r.arrived.Add(s.cfg.BatchDelay)
	if !b.cancelled.IsZero() && b.cancelled.Before(end) {
		return "cancelled"
	}
	if now.Before(end) {
		return ""
	}
	if r.invalid != nil {
		return "error"
	}
	switch r.fate {
	case fateFail:
		return "error"
	case fateExpire:
		return "expired"
	}
	return "success"
}

func (st *batchStore) init() {
	st.batches = map[string]*mockBatch{}
	st.files = map[string][]byte{}
	st.seen = map[string]int{}
}

// arrive records a request's arrival and draws its fate; st.mu is held.
func (s *Server) arrive(b *mockBatch, id, url string, body []byte, now time.Time) {
	st := &s.batches
	if st.seen[id]++; st.seen[id] > 1 {
		st.stats.Duplicates++
	}
	st.stats.RequestsAdded++
	f := fateSucceed
	switch x := s.randFloat(); {
	case x < s.cfg.BatchFail:
		f = fateFail
	case x < s.cfg.BatchFail+s.cfg.BatchExpire:
		f = fateExpire
	}
	r := &batchReq{id: id, url: url, body: body, arrived: now, fate: f}
	_, _, r.invalid = s.parseBatchRequest(r)
	b.reqs = append(b.reqs, r)
}

// parseBatchRequest validates a request's body as its endpoint does.
func (s *Server) parseBatchRequest(r *batchReq) (route, *parsedRequest, *apiError) {
	rt := routes[r.url]
	p, aerr := rt.parse(r.body)
	if aerr == nil && p.stream {
		aerr = invalidRequest("stream", "Batch requests cannot be streamed.")
	}
	if aerr == nil && !rt.anyModel && s.models != nil && !s.models[p.model] {
		aerr = newError(http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
			fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", p.model))
	}
	return rt, p, aerr
}

// registerBatchRoutes adds the batch routes to the mux.
func (s *Server) registerBatchRoutes() {
	s.batches.init()
	s.mux.HandleFunc("POST /v1/batches", s.batchAPI(s.handleCreateBatch))
	s.mux.HandleFunc("GET /v1/batches", s.batchAPI(s.handleListBatches))
	s.mux.HandleFunc("GET /v1/batches/{id}", s.batchAPI(s.handleGetBatch))
	s.mux.HandleFunc("POST /v1/batches/{id}", s.batchAPI(s.handleBatchAction)) // xAI's {id}:cancel
	s.mux.HandleFunc("POST /v1/batches/{id}/requests", s.batchAPI(s.handleAddRequests))
	s.mux.HandleFunc("POST /v1/batches/{id}/cancel", s.batchAPI(s.handleCancelOpenAI))
	s.mux.HandleFunc("GET /v1/batches/{id}/results", s.batchAPI(s.handleXAIResults))
	s.mux.HandleFunc("POST /v1/files", s.batchAPI(s.handleUpload))
	s.mux.HandleFunc("GET /v1/files/{id}/content", s.batchAPI(s.handleFileContent))
	s.mux.HandleFunc("DELETE /v1/files/{id}", s.batchAPI(s.handleDeleteFile))
}

// batchAPI checks auth and counts the call as an API request.
func (s *Server) batchAPI(h func(w http.ResponseWriter, r *http.Request, now time.Time)) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		w := &statusWriter{ResponseWriter: rw}
		s.stats.begin(s.now())
		defer func() { s.stats.end(s.now(), w.status) }()
		w.Header().Set("x-request-id", "req_"+s.nextID())
		if !s.authorized(r) {
			writeError(w, newError(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "",
				"Incorrect API key provided. You can obtain an API key from the console."))
			return
		}
		h(w, r, s.now())
	}
}

func notFound(what, id string) *apiError {
	return newError(http.StatusNotFound, "invalid_request_error", "not_found", "", fmt.Sprintf("No %s found with id '%s'.", what, id))
}

// handleCreateBatch is xAI's create ({"name"}) or OpenAI's
// ({"input_file_id",...}), told apart by the body.
func (s *Server) handleCreateBatch(w http.ResponseWriter, r *http.Request, now time.Time) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err != nil {
		writeError(w, invalidRequest("", "could not read request body"))
		return
	}
	var req struct {
		Name             string            `json:"name"`
		InputFileID      *string           `json:"input_file_id"`
		Endpoint         string            `json:"endpoint"`
		CompletionWindow string            `json:"completion_window"`
		Metadata         map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, invalidRequest("", "We could not parse the JSON body of your request."))
		return
	}
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	b := &mockBatch{id: "batch_" + s.nextID(), created: now}
	if req.InputFileID == nil {
		b.kind, b.name = kindXAI, req.Name
	} else {
		b.kind, b.fileID, b.endpoint, b.metadata = kindOpenAI, *req.InputFileID, req.Endpoint, req.Metadata
		if aerr := s.fillFromFile(b, req.CompletionWindow, now); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	st.batches[b.id] = b
	st.order = append(st.order, b.id)
	st.stats.Batches++
	writeJSON(w, http.StatusOK, s.batchView(b, now))
}

// fillFromFile validates an OpenAI batch's input file and adds its
// requests; st.mu is held.
func (s *Server) fillFromFile(b *mockBatch, window string, now time.Time) *apiError {
	if window != "24h" {
		return invalidRequest("completion_window", "completion_window must be '24h'.")
	}
	path, ok := strings.CutPrefix(b.endpoint, "/v1")
	if _, served := routes[path]; !ok || !served {
		return invalidRequest("endpoint", fmt.Sprintf("Unsupported endpoint '%s'.", b.endpoint))
	}
	file, ok := s.batches.files[b.fileID]
	if !ok {
		return notFound("file", b.fileID)
	}
	ids := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(file))
	sc.Buffer(nil, maxFileBytes)
	type line struct {
		id   string
		body []byte
	}
	var lines []line
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l struct {
			CustomID string          `json:"custom_id"`
			Method   string          `json:"method"`
			URL      string          `json:"url"`
			Body     json.RawMessage `json:"body"`
		}
		switch err := json.Unmarshal(sc.Bytes(), &l); {
		case err != nil:
			return invalidRequest("input_file_id", fmt.Sprintf("Line %d is not valid JSON.", n))
		case l.CustomID == "" || ids[l.CustomID]:
			return invalidRequest("input_file_id", fmt.Sprintf("Line %d: custom_id must be present and unique.", n))
		case l.Method != http.MethodPost || l.URL != b.endpoint:
			return invalidRequest("input_file_id", fmt.Sprintf("Line %d: method must be POST and url %s.", n, b.endpoint))
		}
		ids[l.CustomID] = true
		lines = append(lines, line{l.CustomID, append([]byte(nil), l.Body...)})
	}
	if len(lines) == 0 || len(lines) > maxFileLines {
		return invalidRequest("input_file_id", fmt.Sprintf("The input file must have 1 to %d requests.", maxFileLines))
	}
	for _, l := range lines {
		s.arrive(b, l.id, path, l.body, now)
	}
	return nil
}

// handleAddRequests is xAI's add.
func (s *Server) handleAddRequests(w http.ResponseWriter, r *http.Request, now time.Time) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxAddBytes))
	if err != nil {
		writeError(w, newError(http.StatusRequestEntityTooLarge, "invalid_request_error", "", "", "The request exceeds 25 MB."))
		return
	}
	var req struct {
		BatchRequests []struct {
			BatchRequestID string                     `json:"batch_request_id"`
			BatchRequest   map[string]json.RawMessage `json:"batch_request"`
		} `json:"batch_requests"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, invalidRequest("", "We could not parse the JSON body of your request."))
		return
	}
	for i, br := range req.BatchRequests {
		if br.BatchRequestID == "" || len(br.BatchRequest) != 1 || br.BatchRequest["chat_get_completion"] == nil {
			writeError(w, invalidRequest(fmt.Sprintf("batch_requests[%d]", i), "Each batch request needs a batch_request_id and a chat_get_completion."))
			return
		}
	}
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.batchLocked(w, r.PathValue("id"), kindXAI)
	if b == nil {
		return
	}
	if !b.cancelled.IsZero() {
		writeError(w, invalidRequest("", "The batch was cancelled."))
		return
	}
	for _, br := range req.BatchRequests {
		s.arrive(b, br.BatchRequestID, "/chat/completions", br.BatchRequest["chat_get_completion"], now)
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleGetBatch(w http.ResponseWriter, r *http.Request, now time.Time) {
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.batchLocked(w, r.PathValue("id"), 0)
	if b == nil {
		return
	}
	writeJSON(w, http.StatusOK, s.batchView(b, now))
}

// handleBatchAction serves POST /v1/batches/{id}:cancel (xAI).
func (s *Server) handleBatchAction(w http.ResponseWriter, r *http.Request, now time.Time) {
	id, ok := strings.CutSuffix(r.PathValue("id"), ":cancel")
	if !ok {
		s.handleNotFound(w, r)
		return
	}
	s.cancel(w, id, kindXAI, now)
}

func (s *Server) handleCancelOpenAI(w http.ResponseWriter, r *http.Request, now time.Time) {
	s.cancel(w, r.PathValue("id"), kindOpenAI, now)
}

func (s *Server) cancel(w http.ResponseWriter, id string, kind batchKind, now time.Time) {
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.batchLocked(w, id, kind)
	if b == nil {
		return
	}
	st.stats.Cancels++
	if b.cancelled.IsZero() && s.pending(b, now) > 0 {
		b.cancelled = now
	}
	writeJSON(w, http.StatusOK, s.batchView(b, now))
}

// pending counts b's requests without an outcome at now.
func (s *Server) pending(b *mockBatch, now time.Time) int {
	n := 0
	for _, r := range b.reqs {
		if s.outcome(b, r, now) == "" {
			n++
		}
	}
	return n
}

// xaiBatchView is xAI's batch object.
type xaiBatchView struct {
	BatchID    string  `json:"batch_id"`
	Name       string  `json:"name"`
	CreateTime string  `json:"create_time"`
	ExpireTime string  `json:"expire_time"`
	CancelTime *string `json:"cancel_time,omitempty"`
	State      struct {
		NumRequests  int `json:"num_requests"`
		NumPending   int `json:"num_pending"`
		NumSuccess   int `json:"num_success"`
		NumError     int `json:"num_error"`
		NumCancelled int `json:"num_cancelled"`
	} `json:"state"`
	CostBreakdown struct {
		TotalCostUSDTicks string `json:"total_cost_usd_ticks"`
	} `json:"cost_breakdown"`
}

// openAIBatchView is OpenAI's Batch object.
type openAIBatchView struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	ExpiresAt        int64             `json:"expires_at"`
	Metadata         map[string]string `json:"metadata"`
	RequestCounts    struct {
		Total     int `json:"total"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"request_counts"`
}

// batchView is b as its API shows it at now; an OpenAI batch whose
// requests all ended gets its output and error files. st.mu is held.
func (s *Server) batchView(b *mockBatch, now time.Time) any {
	counts := map[string]int{}
	ticks := 0
	for _, r := range b.reqs {
		o := s.outcome(b, r, now)
		counts[o]++
		if o == "success" && b.kind == kindXAI {
			ticks += s.requestTicks(r)
		}
	}
	pending := counts[""]
	if b.kind == kindXAI {
		var v xaiBatchView
		v.BatchID, v.Name = b.id, b.name
		v.CreateTime, v.ExpireTime = b.created.UTC().Format(time.RFC3339Nano), b.created.Add(batchWindow).UTC().Format(time.RFC3339Nano)
		if !b.cancelled.IsZero() {
			c := b.cancelled.UTC().Format(time.RFC3339Nano)
			v.CancelTime = &c
		}
		v.State.NumRequests, v.State.NumPending = len(b.reqs), pending
		v.State.NumSuccess, v.State.NumError = counts["success"], counts["error"]+counts["expired"]
		v.State.NumCancelled = counts["cancelled"]
		v.CostBreakdown.TotalCostUSDTicks = strconv.Itoa(ticks)
		return v
	}
	v := openAIBatchView{
		ID: b.id, Object: "batch", Endpoint: b.endpoint, InputFileID: b.fileID, CompletionWindow: "24h",
		CreatedAt: b.created.Unix(), ExpiresAt: b.created.Add(batchWindow).Unix(), Metadata: b.metadata,
	}
	v.RequestCounts.Total = len(b.reqs)
	v.RequestCounts.Completed = counts["success"]
	v.RequestCounts.Failed = counts["error"] + counts["expired"] + counts["cancelled"]
	switch {
	case pending > 0 && !b.cancelled.IsZero():
		v.Status = "cancelling"
	case pending > 0 && now.Sub(b.created) < s.cfg.BatchDelay/4:
		v.Status = "validating"
	case pending > 0:
		v.Status = "in_progress"
	default:
		s.writeResultFiles(b, now)
		v.OutputFileID, v.ErrorFileID = strp(b.outFile), strp(b.errFile)
		switch {
		case !b.cancelled.IsZero():
			v.Status = "cancelled"
		case counts["expired"] > 0:
			v.Status = "expired"
		default:
			v.Status = "completed"
		}
	}
	return v
}

// writeResultFiles writes an ended OpenAI batch's output file (2xx
// answers) and error file (the rest), once. st.mu is held.
func (s *Server) writeResultFiles(b *mockBatch, now time.Time) {
	if b.outFile != "" || b.errFile != "" {
		return
	}
	var out, errs bytes.Buffer
	for _, r := range b.reqs {
		line := s.openAIResultLine(b, r, now)
		if line.Response != nil && line.Response.StatusCode < 300 {
			writeLine(&out, line)
		} else {
			writeLine(&errs, line)
		}
	}
	if out.Len() > 0 {
		b.outFile = "file-" + s.nextID()
		s.batches.files[b.outFile] = out.Bytes()
	}
	if errs.Len() > 0 {
		b.errFile = "file-" + s.nextID()
		s.batches.files[b.errFile] = errs.Bytes()
	}
}

func writeLine(buf *bytes.Buffer, v any) {
	b, _ := json.Marshal(v)
	buf.Write(b)
	buf.WriteByte('\n')
}

type openAIResultLine struct {
	ID       string          `json:"id"`
	CustomID string          `json:"custom_id"`
	Response *resultResponse `json:"response"`
	Error    *apiError       `json:"error"`
}

type resultResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

func (s *Server) openAIResultLine(b *mockBatch, r *batchReq, now time.Time) openAIResultLine {
	l := openAIResultLine{ID: "batch_req_" + s.nextID(), CustomID: r.id}
	switch s.outcome(b, r, now) {
	case "cancelled":
		l.Error = &apiError{Code: strp("batch_cancelled"), Message: "This request was cancelled before it ran."}
	case "expired":
		l.Error = &apiError{Code: strp("batch_expired"), Message: "This request could not be executed before the completion window expired."}
	default:
		status, body := s.batchAnswer(r, false)
		l.Response = &resultResponse{StatusCode: status, RequestID: "req_" + s.nextID(), Body: body}
	}
	return l
}

// batchAnswer is a request's answer: the realtime endpoint's for its
// body, or the 500 of a request drawn to fail. xAI's answers carry their
// cost in usage.cost_in_usd_ticks.
func (s *Server) batchAnswer(r *batchReq, xai bool) (int, json.RawMessage) {
	rt, p, aerr := s.parseBatchRequest(r)
	if aerr == nil && r.fate == fateFail {
		aerr = newError(http.StatusInternalServerError, "server_error", "", "", "The server had an error processing your request.")
	}
	if aerr != nil {
		b, _ := json.Marshal(errorBody{Error: aerr})
		return aerr.Status, b
	}
	a := s.planOf(rt, p)
	body, _ := json.Marshal(rt.answer(p, a, r.id, r.arrived.Unix()))
	if xai {
		body = withCost(body, a.usage())
	}
	return http.StatusOK, body
}

func (s *Server) planOf(rt route, p *parsedRequest) *answerPlan {
	if rt.plan != nil {
		return rt.plan(p)
	}
	return s.plan(p)
}

// requestTicks is what a successful request costs, in xAI's ticks.
func (s *Server) requestTicks(r *batchReq) int {
	rt, p, aerr := s.parseBatchRequest(r)
	if r.fate != fateSucceed || aerr != nil {
		return 0
	}
	u := s.planOf(rt, p).usage()
	return (u.PromptTokens + u.CompletionTokens + u.CompletionTokensDetails.ReasoningTokens) * xaiTicksPerToken
}

// withCost adds usage.cost_in_usd_ticks to an answer.
func withCost(body []byte, u *usage) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	var um map[string]any
	_ = json.Unmarshal(m["usage"], &um)
	if um == nil {
		um = map[string]any{}
	}
	um["cost_in_usd_ticks"] = (u.PromptTokens + u.CompletionTokens + u.CompletionTokensDetails.ReasoningTokens) * xaiTicksPerToken
	m["usage"], _ = json.Marshal(um)
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return out
}

// handleXAIResults pages through the results of an xAI batch's ended
// requests, in arrival order; the token is the index to go on from.
func (s *Server) handleXAIResults(w http.ResponseWriter, r *http.Request, now time.Time) {
	limit, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("limit"), "100"))
	if err != nil || limit < 1 {
		writeError(w, invalidRequest("limit", "limit must be a positive integer."))
		return
	}
	limit = min(limit, 1000)
	from := 0
	if tok := r.URL.Query().Get("pagination_token"); tok != "" {
		if from, err = strconv.Atoi(tok); err != nil || from < 0 {
			writeError(w, invalidRequest("pagination_token", "Invalid pagination token."))
			return
		}
	}
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.batchLocked(w, r.PathValue("id"), kindXAI)
	if b == nil {
		return
	}
	type xaiResult struct {
		BatchRequestID string `json:"batch_request_id"`
		BatchResult    struct {
			Response map[string]json.RawMessage `json:"response,omitempty"`
			Error    *apiError                  `json:"error,omitempty"`
		} `json:"batch_result"`
		ErrorMessage string `json:"error_message,omitempty"`
	}
	page := struct {
		Results         []xaiResult `json:"results"`
		PaginationToken *string     `json:"pagination_token"`
	}{Results: []xaiResult{}}
	i := from
	for ; i < len(b.reqs) && len(page.Results) < limit; i++ {
		req := b.reqs[i]
		res := xaiResult{BatchRequestID: req.id}
		switch s.outcome(b, req, now) {
		case "":
			continue
		case "cancelled":
			res.ErrorMessage = "Request cancelled: the batch was cancelled before it ran."
		case "expired":
			res.ErrorMessage = "Request expired before it could be processed."
		default:
			status, body := s.batchAnswer(req, true)
			if status == http.StatusOK {
				res.BatchResult.Response = map[string]json.RawMessage{"chat_get_completion": body}
				break
			}
			var eb errorBody
			_ = json.Unmarshal(body, &eb)
			res.BatchResult.Error = eb.Error
		}
		page.Results = append(page.Results, res)
	}
	if i < len(b.reqs) {
		tok := strconv.Itoa(i)
		page.PaginationToken = &tok
	}
	writeJSON(w, http.StatusOK, page)
}

// handleUpload is OpenAI's POST /v1/files for purpose "batch".
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request, _ time.Time) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		writeError(w, invalidRequest("", "Expected a multipart/form-data body."))
		return
	}
	mr := multipart.NewReader(http.MaxBytesReader(nil, r.Body, maxFileBytes+1<<20), params["boundary"])
	var purpose, name string
	var file []byte
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeError(w, invalidRequest("", "Could not read the multipart body (at most 200 MB)."))
			return
		}
		b, err := io.ReadAll(io.LimitReader(part, maxFileBytes+1))
		if err != nil || len(b) > maxFileBytes {
			writeError(w, invalidRequest("file", "The file exceeds 200 MB."))
			return
		}
		switch part.FormName() {
		case "purpose":
			purpose = string(b)
		case "file":
			name, file = part.FileName(), b
		}
	}
	if purpose != "batch" || file == nil {
		writeError(w, invalidRequest("purpose", "Expected purpose 'batch' and a file."))
		return
	}
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	id := "file-" + s.nextID()
	st.files[id] = file
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "bytes": len(file), "filename": name, "purpose": "batch", "created_at": s.now().Unix()})
}

func (s *Server) handleFileContent(w http.ResponseWriter, r *http.Request, _ time.Time) {
	st := &s.batches
	st.mu.Lock()
	f, ok := st.files[r.PathValue("id")]
	st.mu.Unlock()
	if !ok {
		writeError(w, notFound("file", r.PathValue("id")))
		return
	}
	writeRaw(w, http.StatusOK, "application/jsonl", f)
}

// handleDeleteFile is OpenAI's DELETE /v1/files/{id}.
func (s *Server) handleDeleteFile(w http.ResponseWriter, r *http.Request, _ time.Time) {
	id := r.PathValue("id")
	st := &s.batches
	st.mu.Lock()
	_, ok := st.files[id]
	delete(st.files, id)
	st.mu.Unlock()
	if !ok {
		writeError(w, notFound("file", id))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
}

// handleListBatches is OpenAI's list, newest first.
func (s *Server) handleListBatches(w http.ResponseWriter, r *http.Request, now time.Time) {
	limit, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("limit"), "20"))
	if err != nil || limit < 1 || limit > 100 {
		writeError(w, invalidRequest("limit", "limit must be 1 to 100."))
		return
	}
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	ids := slices.Clone(st.order)
	slices.Reverse(ids)
	if after := r.URL.Query().Get("after"); after != "" {
		i := slices.Index(ids, after)
		ids = ids[i+1:] // i == -1: the whole list
	}
	data := []any{}
	for _, id := range ids {
		if b := st.batches[id]; b.kind == kindOpenAI && len(data) < limit {
			data = append(data, s.batchView(b, now))
		}
	}
	page := map[string]any{"object": "list", "data": data, "has_more": false}
	if len(data) > 0 {
		last := data[len(data)-1].(openAIBatchView).ID
		page["first_id"], page["last_id"] = data[0].(openAIBatchView).ID, last
		i := slices.Index(ids, last)
		page["has_more"] = slices.ContainsFunc(ids[i+1:], func(id string) bool { return st.batches[id].kind == kindOpenAI })
	}
	writeJSON(w, http.StatusOK, page)
}

// BatchIDs returns the ids of every request that arrived in a batch,
// sorted, for tests.
func (s *Server) BatchIDs() []string {
	st := &s.batches
	st.mu.Lock()
	defer st.mu.Unlock()
	ids := make([]string, 0, len(st.seen))
	for id := range st.seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
