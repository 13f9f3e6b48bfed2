package processor_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/limiter"
)

// An account that cannot go on (here a rejected key, then a spent quota)
// is not the record's failure: no error result, no attempt used up; the
// record waits for the limiter's probe and succeeds once the account works.
func TestUnusableAccountIsWaitedOut(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(i int, w http.ResponseWriter, _ *http.Request) {
		switch i {
		case 0:
			status(w, 401, `{"error":{"message":"bad key","code":"invalid_api_key"}}`)
		case 1:
			status(w, 429, `{"error":{"message":"spent","type":"insufficient_quota","code":"insufficient_quota"}}`)
		default:
			ok(w)
		}
	})
	var mu sync.Mutex
	var events []bool
	lim := limiter.New(limiter.Config{
		MaxInFlight:   4,
		ProbeInterval: 20 * time.Millisecond,
		OnPause: func(p bool) {
			mu.Lock()
			events = append(events, p)
			mu.Unlock()
		},
	})
	c, err := api.New(api.Config{BaseURL: f.srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	p := wire(c, lim, baseConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.Process(ctx, input(chatValue))
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	wantSuccess(t, res, 1)
	if n := f.calls.Load(); n != 3 {
		t.Errorf("server calls = %d, want 3 (two refused, one probe that worked)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || !events[0] || events[1] {
		t.Errorf("pause events %v, want [true false]", events)
	}
}

// While the account is unusable, a record whose context ends is abandoned
// (it will be redone), never turned into an error result.
func TestUnusableAccountAbandonsOnShutdown(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		status(w, 401, `{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}`)
	})
	c, err := api.New(api.Config{BaseURL: f.srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim := limiter.New(limiter.Config{MaxInFlight: 4, ProbeInterval: time.Hour, OnPause: func(paused bool) {
		if paused {
			cancel() // shut down while the account is unusable
		}
	}})
	p := wire(c, lim, baseConfig())
	if res, err := p.Process(ctx, input(chatValue)); err == nil {
		t.Fatalf("Process = %+v, want ErrAbandoned", res)
	}
}
