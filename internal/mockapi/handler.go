package mockapi

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// route is what differs between the endpoints the simulator serves: how
// a request is read and what is answered, plain or streamed. Auth, the
// RPM/TPM buckets, faults, latency and stats are common to all of them
// (Server.serve).
type route struct {
	// parse validates a request body.
	parse func(body []byte) (*parsedRequest, *apiError)
	// anyModel: the endpoint serves any model name (embeddings,
	// moderations), not only Config.Models.
	anyModel bool
	// plan derives the answer; nil is Server.plan (generated text).
	plan func(p *parsedRequest) *answerPlan
	// answer is the plain answer, JSON-encoded.
	answer func(p *parsedRequest, a *answerPlan, id string, created int64) any
	// events is the streamed answer (nil: the endpoint does not stream,
	// and parse refuses "stream": true); done is sent as the data of a
	// last event ("[DONE]"), "" for none.
	events func(p *parsedRequest, a *answerPlan, id string, created int64) []outEvent
	done   string
}

// routes are the endpoints served, by path below /v1 (each is served at
// "/v1"+path and at path).
var routes = map[string]route{
	"/chat/completions": chatRoute,
	"/responses":        responsesRoute,
	"/embeddings":       embeddingsRoute,
	"/completions":      completionsRoute,
	"/moderations":      moderationsRoute,
}

// serve answers one request of rt. Order of checks: auth, request
// validation, rate limits, faults, then the (possibly streamed) answer
// after the simulated latency.
func (s *Server) serve(rt route, rw http.ResponseWriter, r *http.Request) {
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
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, invalidRequest("", fmt.Sprintf("could not read request body: %v", err)))
		return
	}
	p, aerr := rt.parse(body)
	if aerr == nil && p.stream && rt.events == nil {
		aerr = invalidRequest("stream", "This endpoint does not support streaming.")
	}
	if aerr == nil && !rt.anyModel && s.models != nil && !s.models[p.model] {
		aerr = newError(http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
			fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", p.model))
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var a *answerPlan
	if rt.plan != nil {
		a = rt.plan(p)
	} else {
		a = s.plan(p)
	}

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
	if s.serveFault(ctx, w, r, f, p.stream, func() any { return rt.answer(p, a, id, s.now().Unix()) }) {
		return
	}
	if p.stream {
		s.stream(ctx, w, r, a, rt.events(p, a, id, s.now().Unix()), rt.done, f)
		return
	}
	first, rest := s.timing(a, 0)
	if !sleep(ctx, first+rest) {
		abort(r)
		return
	}
	writeJSON(w, http.StatusOK, rt.answer(p, a, id, s.now().Unix()))
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
