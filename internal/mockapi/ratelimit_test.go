package mockapi

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// limitStep is one request of a rate-limit scenario on a fake clock.
type limitStep struct {
	advance   time.Duration // before the request
	maxTokens int
	status    int
	kind      string // error.type of a 429
	retryMs   int    // retry-after-ms of a 429
	retrySecs int    // Retry-After of a 429
}

func runLimitSteps(t *testing.T, cfg Config, steps []limitStep) {
	t.Helper()
	s := New(cfg)
	clk := newFakeClock()
	s.now = clk.Now
	for i, st := range steps {
		clk.Advance(st.advance)
		rec := recordChat(s, reqBody(t, "grok-3-mini", "hi", map[string]any{"max_tokens": st.maxTokens}))
		h := rec.Header()
		if rec.Code != st.status {
			t.Fatalf("step %d: status %d, want %d; body %s", i, rec.Code, st.status, rec.Body)
		}
		if cfg.RPM > 0 && h.Get("x-ratelimit-limit-requests") != strconv.Itoa(cfg.RPM) {
			t.Errorf("step %d: x-ratelimit-limit-requests = %q", i, h.Get("x-ratelimit-limit-requests"))
		}
		if cfg.TPM > 0 && h.Get("x-ratelimit-limit-tokens") != strconv.Itoa(cfg.TPM) {
			t.Errorf("step %d: x-ratelimit-limit-tokens = %q", i, h.Get("x-ratelimit-limit-tokens"))
		}
		for _, kind := range []string{"requests", "tokens"} {
			on := (kind == "requests" && cfg.RPM > 0) || (kind == "tokens" && cfg.TPM > 0)
			for _, hdr := range []string{"remaining", "reset"} {
				if got := h.Get("x-ratelimit-" + hdr + "-" + kind); (got != "") != on {
					t.Errorf("step %d: x-ratelimit-%s-%s = %q with limit on=%v", i, hdr, kind, got, on)
				}
			}
		}
		if st.status != http.StatusTooManyRequests {
			if h.Get("Retry-After") != "" {
				t.Errorf("step %d: Retry-After on a %d", i, rec.Code)
			}
			continue
		}
		e := decodeError(t, rec.Body.Bytes())
		if e.Error.Type != st.kind || e.code() != "rate_limit_exceeded" {
			t.Errorf("step %d: error %+v, want type %q", i, e.Error, st.kind)
		}
		if got := h.Get("retry-after-ms"); got != strconv.Itoa(st.retryMs) {
			t.Errorf("step %d: retry-after-ms = %q, want %d", i, got, st.retryMs)
		}
		if got := h.Get("Retry-After"); got != strconv.Itoa(st.retrySecs) {
			t.Errorf("step %d: Retry-After = %q, want %d", i, got, st.retrySecs)
		}
	}
}

func TestRateLimitArithmetic(t *testing.T) {
	// "hi" with the system prompt: ceil(18/4)+8 = 13 prompt tokens.
	const prompt = 13
	tests := []struct {
		name  string
		cfg   Config
		steps []limitStep
	}{
		{
			// 120 RPM = 2/s, burst 2; the client sends 4/s for 2 s.
			name: "requests at twice the rate",
			cfg:  Config{RPM: 120},
			steps: []limitStep{
				{0, 1, 200, "", 0, 0},
				{250 * time.Millisecond, 1, 200, "", 0, 0},
				{250 * time.Millisecond, 1, 200, "", 0, 0},
				{250 * time.Millisecond, 1, 429, "requests", 250, 1},
				{250 * time.Millisecond, 1, 200, "", 0, 0},
				{250 * time.Millisecond, 1, 429, "requests", 250, 1},
				{250 * time.Millisecond, 1, 200, "", 0, 0},
				{250 * time.Millisecond, 1, 429, "requests", 250, 1},
				{250 * time.Millisecond, 1, 200, "", 0, 0},
			},
		},
		{
			name: "below one request per second",
			cfg:  Config{RPM: 30}, // 0.5/s, burst 1
			steps: []limitStep{
				{0, 1, 200, "", 0, 0},
				{500 * time.Millisecond, 1, 429, "requests", 1500, 2},
				{1500 * time.Millisecond, 1, 200, "", 0, 0},
			},
		},
		{
			// 6000 TPM = 100/s, burst 100; each request costs 13+37 = 50.
			name: "token budget",
			cfg:  Config{TPM: 6000},
			steps: []limitStep{
				{0, 50 - prompt, 200, "", 0, 0},
				{0, 50 - prompt, 200, "", 0, 0},
				{0, 50 - prompt, 429, "tokens", 500, 1},
				{499 * time.Millisecond, 50 - prompt, 429, "tokens", 1, 1},
				{time.Millisecond, 50 - prompt, 200, "", 0, 0},
				// 300 tokens exceed the burst: needs a full bucket (1 s)...
				{0, 300 - prompt, 429, "tokens", 1000, 1},
				{time.Second, 300 - prompt, 200, "", 0, 0},
				// ...and leaves a debt of 200: the next 50 wait 2.5 s.
				{0, 50 - prompt, 429, "tokens", 2500, 3},
				{2500 * time.Millisecond, 50 - prompt, 200, "", 0, 0},
			},
		},
		{
			name: "both limits report the longer wait",
			cfg:  Config{RPM: 60, TPM: 6000},
			steps: []limitStep{
				{0, 50 - prompt, 200, "", 0, 0},
				// requests empty (wait 1 s), tokens have 50 of 100 needed (wait 0.5 s).
				{0, 100 - prompt, 429, "requests", 1000, 1},
				// after 0.6 s: requests need 0.4 s, tokens are full enough.
				{600 * time.Millisecond, 100 - prompt, 429, "requests", 400, 1},
				{400 * time.Millisecond, 100 - prompt, 200, "", 0, 0},
				// a full token bucket admits 200 tokens, leaving a debt of 100...
				{time.Second, 200 - prompt, 200, "", 0, 0},
				// ...so 1 s later requests are fine but tokens need another 1 s.
				{time.Second, 50 - prompt, 429, "tokens", 500, 1},
				{0, 100 - prompt, 429, "tokens", 1000, 1},
			},
		},
		{
			name:  "no limits",
			cfg:   Config{},
			steps: []limitStep{{0, 1000, 200, "", 0, 0}, {0, 1000, 200, "", 0, 0}, {0, 1000, 200, "", 0, 0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runLimitSteps(t, tt.cfg, tt.steps) })
	}
}

func TestRateLimitHeaders(t *testing.T) {
	s := New(Config{RPM: 600, TPM: 60000}) // 10 req/s burst 10, 1000 tok/s burst 1000
	clk := newFakeClock()
	s.now = clk.Now
	rec := recordChat(s, reqBody(t, "grok-3-mini", "hi", map[string]any{"max_tokens": 87})) // 13+87 = 100 tokens
	h := rec.Header()
	want := map[string]string{
		"x-ratelimit-limit-requests":     "600",
		"x-ratelimit-remaining-requests": "9",
		"x-ratelimit-reset-requests":     "100ms",
		"x-ratelimit-limit-tokens":       "60000",
		"x-ratelimit-remaining-tokens":   "900",
		"x-ratelimit-reset-tokens":       "100ms",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if st := s.Stats(); st.RateLimited != 0 || st.ByStatus[200] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestFormatReset(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {time.Microsecond, "1ms"}, {120 * time.Millisecond, "120ms"},
		{999*time.Millisecond + time.Microsecond, "1s"}, {time.Second, "1s"},
		{1500 * time.Millisecond, "1.5s"}, {6 * time.Minute, "6m0s"},
	}
	for _, tt := range tests {
		if got := formatReset(tt.d); got != tt.want {
			t.Errorf("formatReset(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestRateLimitRealTime drives a real HTTP server at twice the allowed
// rate for about 2 s and checks the admitted count against the bucket.
func TestRateLimitRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 2 s")
	}
	const (
		rps      = 20.0 // 1200 RPM, burst 20
		burst    = 20
		interval = 25 * time.Millisecond // 40/s: twice the rate
		total    = 80
	)
	_, srv := startServer(t, Config{RPM: int(rps * 60)})
	body := reqBody(t, "grok-3-mini", "hi", nil)
	tick := time.NewTicker(interval)
	defer tick.Stop()

	ok, limited := 0, 0
	var firstSend, firstDone, lastSend, lastDone time.Time
	var maxGap time.Duration // longest time with no request at the server
	for i := range total {
		if i > 0 {
			<-tick.C
		}
		if i > 0 {
			maxGap = max(maxGap, time.Since(lastDone))
		}
		lastSend = time.Now()
		resp, b := post(context.Background(), t, srv.URL+"/v1/chat/completions", body, nil)
		lastDone = time.Now()
		if i == 0 {
			firstSend, firstDone = lastSend, lastDone
		}
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
			ms, err := strconv.Atoi(resp.Header.Get("retry-after-ms"))
			if err != nil || ms < 1 || ms > int(1000/rps)+1 {
				t.Errorf("retry-after-ms = %q, want 1..%d", resp.Header.Get("retry-after-ms"), int(1000/rps)+1)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After = %q, want 1", ra)
			}
			if e := decodeError(t, b); e.Error.Type != "requests" || e.code() != "rate_limit_exceeded" {
				t.Errorf("429 body %s", b)
			}
		default:
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	}
	// The server admitted requests between firstSend and lastDone at the
	// latest and between firstDone and lastSend at least.
	upper := burst + rps*lastDone.Sub(firstSend).Seconds() + 1
	lower := burst + rps*lastSend.Sub(firstDone).Seconds() - 3
	t.Logf("sent %d over %v: %d ok, %d limited (bounds %.1f..%.1f), longest gap %v", total, lastSend.Sub(firstSend), ok, limited, lower, upper, maxGap)
	if float64(ok) > upper {
		t.Fatalf("%d admitted, want at most %.1f", ok, upper)
	}
	// The bucket holds at most burst tokens: a stall of the sender long
	// enough to refill it (a loaded machine) loses the tokens beyond, and
	// the lower bound no longer follows from the times.
	if stall := time.Duration(float64(time.Second) * burst / rps / 2); maxGap < stall && float64(ok) < math.Min(lower, total) {
		t.Fatalf("%d admitted, want at least %.1f", ok, lower)
	}
	// No check that the refill admitted "about half": on a loaded machine
	// the sends fall behind the ticker and more are admitted, rightly. The
	// bounds above follow from the times measured, whatever they are.
}
