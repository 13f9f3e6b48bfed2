package mockapi

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// handleChat serves POST /v1/chat/completions. Order of checks: auth,
// request validation, rate limits, faults, then the (possibly streamed)
// answer after the simulated latency.
func (s *Server) handleChat(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	s.stats.begin(s.now())
	ended := false
	end := func() { // idempotent; a reset records its end before the client can see it
		if !ended {
			ended = true
			s.stats.end(s.now(), w.status)
		}
	}
	defer end()

	// ctx ends when the client goes away or the server is closed.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.closed, cancel)()

	id := s.nextID()
	w.Header().Set("x-request-id", "req_"+id)
	if !s.authorized(r) {
		writeError(w, newError(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "",
			"Incorrect API key provided. You can obtain an API key from the console."))
		return
	}
	p, aerr := s.parseRequest(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	a := s.plan(p)

	d := s.limits.admit(a.budgetTokens)
	d.setHeaders(w.Header())
	if !d.ok {
		s.stats.rateLimited()
		setRetryAfter(w.Header(), d.retryAfter)
		writeError(w, d.rateLimitError())
		return
	}

	f := s.drawFault(p.stream)
	if f != "" {
		s.stats.fault(f)
	}
	if f == FaultReset {
		end()
		resetConn(w)
		return
	}
	if s.serveFault(ctx, w, r, f, p, a, id) {
		return
	}
	if p.stream {
		s.stream(ctx, w, r, p, a, id, f)
		return
	}
	first, rest := s.timing(a, 0)
	if !sleep(ctx, first+rest) {
		abort(r)
		return
	}
	writeJSON(w, http.StatusOK, a.completion(id, p.model, s.now().Unix()))
	s.stats.usage(a.usage())
}

// authorized checks the bearer token when an APIKey is configured.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.APIKey == "" {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.cfg.APIKey)) == 1
}

// timing returns the wait before the first token and the generation time
// after it. With TTFT or TokensPerSecond set it is TTFT + tokens/TPS, else
// Latency split so that the first of pieces+1 parts precedes the first
// token. Jitter scales both parts.
func (s *Server) timing(a *answerPlan, pieces int) (first, rest time.Duration) {
	if s.cfg.TTFT > 0 || s.cfg.TokensPerSecond > 0 {
		first = s.cfg.TTFT
		if s.cfg.TokensPerSecond > 0 {
			rest = time.Duration(float64(a.maxChoiceTokens()) / s.cfg.TokensPerSecond * float64(time.Second))
		}
	} else {
		first = s.cfg.Latency / time.Duration(pieces+1)
		rest = s.cfg.Latency - first
	}
	if s.cfg.Jitter <= 0 {
		return first, rest
	}
	base := first + rest
	total := max(0, base+time.Duration((2*s.randFloat()-1)*float64(s.cfg.Jitter)))
	if base == 0 {
		return total, 0
	}
	first = time.Duration(float64(first) * float64(total) / float64(base))
	return first, total - first
}

// modelList is the OpenAI list shape of GET /v1/models.
type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// modelsCreated is the fixed creation time reported for models.
var modelsCreated = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeError(w, newError(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "",
			"Incorrect API key provided. You can obtain an API key from the console."))
		return
	}
	names := s.cfg.Models
	if len(names) == 0 {
		names = DefaultModels
	}
	list := modelList{Object: "list", Data: []modelInfo{}}
	for _, m := range names {
		list.Data = append(list.Data, modelInfo{ID: m, Object: "model", Created: modelsCreated, OwnedBy: "sluice-mock"})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeRaw(w, http.StatusOK, "text/plain; charset=utf-8", []byte("ok\n"))
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, newError(http.StatusNotFound, "invalid_request_error", "unknown_url", "",
		fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path)))
}
