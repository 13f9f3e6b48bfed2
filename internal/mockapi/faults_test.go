package mockapi

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// classify names the outcome of one recorded request.
func classify(t *testing.T, rec *httptest.ResponseRecorder, aborted bool) Fault {
	t.Helper()
	switch {
	case aborted:
		return FaultReset
	case rec.Body.Len() == 0:
		return FaultHang
	case rec.Code >= 500:
		return FaultFail5xx
	case rec.Code == 429:
		if decodeError(t, rec.Body.Bytes()).code() == "insufficient_quota" {
			return FaultQuota
		}
		return FaultOverload429
	case rec.Code == 200 && !json.Valid(rec.Body.Bytes()):
		return FaultMalformed
	case rec.Code == 200:
		return ""
	}
	t.Fatalf("unexpected answer %d %s", rec.Code, rec.Body)
	return ""
}

func TestFaultFrequencies(t *testing.T) {
	const n = 2000
	cfg := Config{
		Fail5xx: 0.10, Overload429: 0.05, Hang: 0.05, Reset: 0.05, Malformed: 0.05, Quota: 0.05,
		StreamStallProb: 0.05, // never applies to non-streamed requests
		Seed:            42,
	}
	want := map[Fault]float64{
		FaultFail5xx: 0.10, FaultOverload429: 0.05, FaultHang: 0.05, FaultReset: 0.05,
		FaultMalformed: 0.05, FaultQuota: 0.05, "": 0.65,
	}
	run := func() ([]Fault, *Server) {
		s := New(cfg)
		// An ended request context lets hangs return at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		out := make([]Fault, 0, n)
		for range n {
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions",
				strings.NewReader(reqBody(t, "grok-3-mini", "x", nil)))
			rec, aborted := serveRecorded(s, r)
			out = append(out, classify(t, rec, aborted))
		}
		return out, s
	}
	outcomes, s := run()
	counts := map[Fault]int{}
	for _, f := range outcomes {
		counts[f]++
	}
	for f, p := range want {
		got := float64(counts[f]) / n
		tol := 4 * math.Sqrt(p*(1-p)/n)
		t.Logf("%-13q observed %.4f want %.2f ± %.4f", f, got, p, tol)
		if math.Abs(got-p) > tol {
			t.Errorf("fault %q frequency %.4f, want %.2f ± %.4f", f, got, p, tol)
		}
	}
	st := s.Stats()
	for f, c := range counts {
		if f != "" && st.Faults[f] != int64(c) {
			t.Errorf("Stats().Faults[%q] = %d, observed %d", f, st.Faults[f], c)
		}
	}
	if st.Requests != n || st.InFlight != 0 || st.ByStatus[500]+st.ByStatus[502]+st.ByStatus[503] != int64(counts[FaultFail5xx]) {
		t.Errorf("stats %+v", st)
	}
	for _, code := range []int{500, 502, 503} {
		if st.ByStatus[code] == 0 {
			t.Errorf("no %d among the 5xx faults", code)
		}
	}
	// The same seed replays the same outcomes.
	again, _ := run()
	for i := range outcomes {
		if outcomes[i] != again[i] {
			t.Fatalf("seed 42 replay differs at request %d: %q vs %q", i, outcomes[i], again[i])
		}
	}
}

func TestFaultAnswers(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		status []int
		typ    string
		code   string
	}{
		{"5xx", Config{Fail5xx: 1}, []int{500, 502, 503}, "server_error", ""},
		{"overload", Config{Overload429: 1}, []int{429}, "requests", "rate_limit_exceeded"},
		{"quota", Config{Quota: 1}, []int{429}, "insufficient_quota", "insufficient_quota"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := startServer(t, tt.cfg)
			resp, b := post(context.Background(), t, srv.URL+"/v1/chat/completions", reqBody(t, "grok-4", "x", nil), nil)
			okStatus := false
			for _, s := range tt.status {
				okStatus = okStatus || resp.StatusCode == s
			}
			if !okStatus {
				t.Fatalf("status %d, want one of %v", resp.StatusCode, tt.status)
			}
			e := decodeError(t, b)
			if e.Error.Type != tt.typ || (tt.code != "" && e.code() != tt.code) {
				t.Fatalf("error %+v, want type %q code %q", e.Error, tt.typ, tt.code)
			}
			if tt.name == "quota" && !strings.Contains(e.Error.Message, "You exceeded your current quota") {
				t.Errorf("quota message %q", e.Error.Message)
			}
			if tt.name == "overload" && resp.Header.Get("Retry-After") == "" {
				t.Errorf("overload 429 without Retry-After")
			}
		})
	}

	t.Run("malformed", func(t *testing.T) {
		_, srv := startServer(t, Config{Malformed: 1})
		for range 20 {
			resp, b := post(context.Background(), t, srv.URL+"/v1/chat/completions", reqBody(t, "grok-4", "x", nil), nil)
			if resp.StatusCode != 200 || json.Valid(b) || len(b) == 0 {
				t.Fatalf("malformed answer %d %q is not a truncated 200", resp.StatusCode, b)
			}
		}
	})

	t.Run("reset", func(t *testing.T) {
		mock, srv := startServer(t, Config{Reset: 1})
		for range 3 {
			resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
				strings.NewReader(reqBody(t, "grok-4", "x", nil)))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("reset answered %d, want a connection error", resp.StatusCode)
			}
		}
		srv.Close()
		if st := mock.Stats(); st.Faults[FaultReset] != 3 || len(st.ByStatus) != 0 || st.InFlight != 0 {
			t.Fatalf("stats %+v", st)
		}
	})

	t.Run("hang ends when the client cancels", func(t *testing.T) {
		// In a synctest bubble: the handler hangs until the request's
		// context ends, exactly at the client's 100ms deadline.
		synctest.Test(t, func(t *testing.T) {
			mock := New(Config{Hang: 1})
			defer mock.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions",
				strings.NewReader(reqBody(t, "grok-4", "x", nil)))
			start := time.Now()
			rec, _ := serveRecorded(mock, r)
			if el := time.Since(start); el != 100*time.Millisecond {
				t.Fatalf("the hang ended after %v, want at the client's 100ms deadline", el)
			}
			if rec.Body.Len() != 0 {
				t.Fatalf("hang answered %d %q", rec.Code, rec.Body)
			}
			if st := mock.Stats(); st.InFlight != 0 || st.Faults[FaultHang] != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	})

	t.Run("latency ends when the client cancels", func(t *testing.T) {
		_, srv := startServer(t, Config{Latency: time.Hour})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
			strings.NewReader(reqBody(t, "grok-4", "x", nil)))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatal("an hour of latency answered")
		}
		srv.Close() // would block for an hour if the handler kept sleeping
	})

	t.Run("close releases hangs", func(t *testing.T) {
		mock, srv := startServer(t, Config{Hang: 1})
		errc := make(chan error, 1)
		go func() {
			resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
				strings.NewReader(reqBody(t, "grok-4", "x", nil)))
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		mock.Close() // whether before or during the hang, the request is aborted
		if err := <-errc; err == nil {
			t.Fatal("hang after Close answered instead of aborting")
		}
	})
}

func TestJitterBounds(t *testing.T) {
	s := New(Config{Latency: 100 * time.Millisecond, Jitter: 40 * time.Millisecond, Seed: 3})
	a := &answerPlan{choices: []choicePlan{{completionTokens: 10}}}
	var sum time.Duration
	const n = 2000
	for range n {
		first, rest := s.timing(a, 0)
		d := first + rest
		if d < 60*time.Millisecond || d > 140*time.Millisecond {
			t.Fatalf("latency %v outside 100ms ± 40ms", d)
		}
		sum += d
	}
	if mean := sum / n; mean < 97*time.Millisecond || mean > 103*time.Millisecond {
		t.Fatalf("mean latency %v, want about 100ms", mean)
	}
	tps := New(Config{TTFT: 100 * time.Millisecond, TokensPerSecond: 50})
	a.choices = append(a.choices, choicePlan{completionTokens: 40, reasoningTokens: 10})
	if first, rest := tps.timing(a, 5); first != 100*time.Millisecond || rest != time.Second {
		t.Fatalf("token timing %v + %v, want 100ms + 1s (50 tokens at 50/s)", first, rest)
	}
}
