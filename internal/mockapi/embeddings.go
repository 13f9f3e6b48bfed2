package mockapi

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"unicode/utf8"
)

// embeddingDimensions is the length of a simulated embedding, unless the
// request asks for "dimensions".
const embeddingDimensions = 8

// handleEmbeddings serves POST /v1/embeddings
// (https://platform.openai.com/docs/api-reference/embeddings/create) with
// deterministic unit vectors derived from each input, and usage
// prompt_tokens = ceil(chars/4) per input. Auth and the RPM/TPM limits
// apply as for chat.
func (s *Server) handleEmbeddings(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	s.stats.begin(s.now())
	defer func() { s.stats.end(s.now(), w.status) }()
	w.Header().Set("x-request-id", "req_"+s.nextID())
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
	var req struct {
		Model      string          `json:"model"`
		Input      json.RawMessage `json:"input"`
		Dimensions *int            `json:"dimensions"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, invalidRequest("", fmt.Sprintf("We could not parse the JSON body of your request: %v", err)))
		return
	}
	if req.Model == "" {
		writeError(w, invalidRequest("model", "you must provide a model parameter"))
		return
	}
	var inputs []string
	var one string
	if json.Unmarshal(req.Input, &one) == nil {
		inputs = []string{one}
	} else if json.Unmarshal(req.Input, &inputs) != nil || len(inputs) == 0 {
		writeError(w, invalidRequest("input", "'input' must be a string or a non-empty array of strings."))
		return
	}
	dims := embeddingDimensions
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > 4096 {
			writeError(w, invalidRequest("dimensions", "'dimensions' must be in [1, 4096]."))
			return
		}
		dims = *req.Dimensions
	}
	tokens := 0
	for _, in := range inputs {
		tokens += (utf8.RuneCountInString(in) + 3) / 4
	}
	d := s.limits.admit(tokens)
	d.setHeaders(w.Header())
	if !d.ok {
		s.stats.rateLimited()
		setRetryAfter(w.Header(), d.retryAfter)
		writeError(w, d.rateLimitError())
		return
	}
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	out := struct {
		Object string `json:"object"`
		Data   []item `json:"data"`
		Model  string `json:"model"`
		Usage  struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}{Object: "list", Data: []item{}, Model: req.Model}
	for i, in := range inputs {
		out.Data = append(out.Data, item{Object: "embedding", Index: i, Embedding: embedding(req.Model, in, dims)})
	}
	out.Usage.PromptTokens, out.Usage.TotalTokens = tokens, tokens
	writeJSON(w, http.StatusOK, out)
}

// embedding is a deterministic unit vector of dims components for text.
func embedding(model, text string, dims int) []float64 {
	v := make([]float64, dims)
	norm := 0.0
	for i := range v {
		h := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%s", model, i, text))
		x := float64(int32(binary.BigEndian.Uint32(h[:4]))) / math.MaxInt32
		v[i], norm = x, norm+x*x
	}
	norm = math.Sqrt(norm)
	for i := range v {
		v[i] = math.Round(v[i]/norm*1e6) / 1e6
	}
	return v
}
