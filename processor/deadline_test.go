package processor_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/record"
)

// A record that keeps failing retryably, or waits out an unusable
// account, ends with code expired once SLUICE_RECORD_DEADLINE passes, not
// when its attempts run out.
func TestRecordDeadlineExpires(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"retrying 503s", 503, `{"error":{"message":"overloaded"}}`},
		{"paused for quota", 429, `{"error":{"message":"spent","type":"insufficient_quota","code":"insufficient_quota"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) { status(w, tc.status, tc.body) })
			c, err := api.New(api.Config{BaseURL: f.srv.URL + "/v1"})
			if err != nil {
				t.Fatal(err)
			}
			cfg := baseConfig()
			cfg.MaxAttempts = 1000
			cfg.RetryBase, cfg.RetryMax = 20*time.Millisecond, 20*time.Millisecond
			cfg.RecordDeadline = 300 * time.Millisecond
			p := wire(c, limiter.New(limiter.Config{MaxInFlight: 4, ProbeInterval: time.Hour}), cfg)
			start := time.Now()
			res, err := p.Process(context.Background(), input(chatValue))
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			if took := time.Since(start); took < 300*time.Millisecond {
				t.Errorf("expired after %v, before the 300ms deadline", took)
			}
			if res.Error == nil || res.Error.Code != record.CodeExpired {
				t.Fatalf("result error %+v, want code %s", res.Error, record.CodeExpired)
			}
			if !strings.Contains(res.Error.Message, "300ms") {
				t.Errorf("message %q does not name the deadline", res.Error.Message)
			}
			if res.Attempts < 1 {
				t.Errorf("attempts %d", res.Attempts)
			}
		})
	}
}

// Without a deadline nothing expires: the same failures end as usual.
func TestNoRecordDeadline(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) { status(w, 503, `{}`) })
	c, err := api.New(api.Config{BaseURL: f.srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	p := wire(c, limiter.New(limiter.Config{MaxInFlight: 4}), baseConfig())
	res, err := p.Process(context.Background(), input(chatValue))
	if err != nil {
		t.Fatal(err)
	}
	if res.Error == nil || res.Error.Code != record.CodeRetriesExhausted {
		t.Fatalf("result error %+v, want %s", res.Error, record.CodeRetriesExhausted)
	}
}
