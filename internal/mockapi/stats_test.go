package mockapi

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestStatsConcurrency(t *testing.T) {
	const n = 5
	mock, srv := startServer(t, Config{StreamStallProb: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bodies := make([]*bufio.Reader, n)
	for i := range n {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
			strings.NewReader(reqBody(t, "grok-3-mini", "x", map[string]any{"stream": true})))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		bodies[i] = bufio.NewReader(resp.Body)
	}
	// Reading each stream up to its stall proves all n handlers are active.
	for i, br := range bodies {
		for events := 0; events < 1+stallAfterPieces; {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if strings.HasPrefix(line, "data: ") {
				events++
			}
		}
	}
	st := mock.Stats()
	if st.InFlight != n || st.MaxConcurrency != n || st.Requests != n || st.ByStatus[200] != 0 {
		t.Fatalf("while stalled: %+v", st)
	}
	cancel()
	srv.Close() // waits for all handlers
	st = mock.Stats()
	if st.InFlight != 0 || st.MaxConcurrency != n || st.ByStatus[200] != n || st.Faults[FaultStreamStall] != n {
		t.Fatalf("after cancel: %+v", st)
	}
	if st.FirstRequest.IsZero() || st.LastResponse.Before(st.FirstRequest) || st.RequestsPerSecond <= 0 {
		t.Fatalf("timestamps %+v", st)
	}
	mock.ResetStats()
	if st = mock.Stats(); st.Requests != 0 || st.MaxConcurrency != 0 || len(st.ByStatus) != 0 || !st.FirstRequest.IsZero() {
		t.Fatalf("after ResetStats: %+v", st)
	}
}

func TestStatsTokensAndStatuses(t *testing.T) {
	mock, srv := startServer(t, Config{RPM: 60, Models: []string{"grok-4"}})
	ok := reqBody(t, "grok-4", "count me", nil)
	_, b := post(context.Background(), t, srv.URL+"/v1/chat/completions", ok, nil)
	c := decodeCompletion(t, b)
	post(context.Background(), t, srv.URL+"/v1/chat/completions", ok, nil)                           // 429: RPM bucket empty
	post(context.Background(), t, srv.URL+"/v1/chat/completions", reqBody(t, "nope", "x", nil), nil) // 404
	st := mock.Stats()
	if st.Requests != 3 || st.ByStatus[200] != 1 || st.ByStatus[429] != 1 || st.ByStatus[404] != 1 || st.RateLimited != 1 {
		t.Fatalf("stats %+v", st)
	}
	if st.PromptTokens != int64(c.Usage.PromptTokens) || st.CompletionTokens != int64(c.Usage.CompletionTokens) ||
		st.ReasoningTokens != int64(c.Usage.CompletionTokensDetails.ReasoningTokens) {
		t.Fatalf("token stats %+v, usage %+v", st, c.Usage)
	}
}
