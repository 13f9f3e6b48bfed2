package mockapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The xAI routes on a fake clock: a request is pending for BatchDelay,
// then ends with the fate drawn at its arrival; the wire shapes are
// xAI's (counts under state, 64-bit cost as a string, results with
// chat_get_completion).
func TestXAIBatchRoutesOnAClock(t *testing.T) {
	clock := newFakeClock()
	mock := New(Config{BatchDelay: time.Minute, BatchFail: 0.5, Seed: 7})
	mock.now = clock.Now
	srv := httptest.NewServer(mock)
	t.Cleanup(func() { mock.Close(); srv.Close() })
	ctx := context.Background()

	_, b := post(ctx, t, srv.URL+"/v1/batches", `{"name":"n"}`, nil)
	var created struct {
		BatchID string `json:"batch_id"`
	}
	if err := json.Unmarshal(b, &created); err != nil || created.BatchID == "" {
		t.Fatalf("create: %s", b)
	}
	var add strings.Builder
	add.WriteString(`{"batch_requests":[`)
	for i := range 40 {
		if i > 0 {
			add.WriteString(",")
		}
		add.WriteString(`{"batch_request_id":"r` + strconv.Itoa(i) + `","batch_request":{"chat_get_completion":` + reqBody(t, "grok-4", "hi", nil) + `}}`)
	}
	add.WriteString(`]}`)
	if resp, b := post(ctx, t, srv.URL+"/v1/batches/"+created.BatchID+"/requests", add.String(), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("add: %d %s", resp.StatusCode, b)
	}
	get := func() map[string]any {
		rec := httptest.NewRecorder()
		mock.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/batches/"+created.BatchID, nil))
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	state := get()["state"].(map[string]any)
	if state["num_requests"] != 40.0 || state["num_pending"] != 40.0 {
		t.Fatalf("before the delay: %v", state)
	}
	clock.Advance(time.Minute)
	v := get()
	state = v["state"].(map[string]any)
	ok, failed := state["num_success"].(float64), state["num_error"].(float64)
	if state["num_pending"] != 0.0 || ok+failed != 40 || ok == 0 || failed == 0 {
		t.Fatalf("after the delay: %v", state)
	}
	if _, isString := v["cost_breakdown"].(map[string]any)["total_cost_usd_ticks"].(string); !isString {
		t.Fatalf("cost_breakdown %v", v["cost_breakdown"])
	}
	rec := httptest.NewRecorder()
	mock.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/batches/"+created.BatchID+"/results?limit=100", nil))
	var page struct {
		Results []struct {
			BatchRequestID string `json:"batch_request_id"`
			BatchResult    struct {
				Response map[string]json.RawMessage `json:"response"`
				Error    *apiError                  `json:"error"`
			} `json:"batch_result"`
		} `json:"results"`
		PaginationToken *string `json:"pagination_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || len(page.Results) != 40 || page.PaginationToken != nil {
		t.Fatalf("results: %v %s", err, rec.Body.Bytes())
	}
	for _, r := range page.Results {
		if (r.BatchResult.Response["chat_get_completion"] == nil) == (r.BatchResult.Error == nil) {
			t.Fatalf("result %s has both or neither", r.BatchRequestID)
		}
	}
}

func TestBatchConfigValidation(t *testing.T) {
	for _, cfg := range []Config{{BatchFail: 1.5}, {BatchExpire: -0.1}, {BatchFail: 0.6, BatchExpire: 0.6}, {BatchDelay: -time.Second}} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%+v: valid", cfg)
		}
	}
}
