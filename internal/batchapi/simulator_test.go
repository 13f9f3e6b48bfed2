package batchapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/internal/mockapi"
)

// simulator serves the project's API simulator with cfg.
func simulator(t *testing.T, cfg mockapi.Config) (*mockapi.Server, *api.Client) {
	t.Helper()
	mock := mockapi.New(cfg)
	srv := httptest.NewServer(mock)
	t.Cleanup(srv.Close)
	t.Cleanup(mock.Close)
	c, err := api.New(api.Config{BaseURL: srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	return mock, c
}

func chat(id, model, text string) batchapi.Request {
	return batchapi.Request{ID: id, URL: "/v1/chat/completions",
		Body: json.RawMessage(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, text))}
}

// until polls get until done says so; the simulator's clock is real, so
// this waits on the provider's own state.
func until(t *testing.T, get func() (batchapi.Batch, error), done func(batchapi.Batch) bool) batchapi.Batch {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if done(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch never done: %+v", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestXAILifecycleAgainstSimulator(t *testing.T) {
	t.Parallel()
	mock, c := simulator(t, mockapi.Config{BatchDelay: 20 * time.Millisecond, Models: []string{"grok-4"}, Seed: 1})
	x := batchapi.NewXAI(c)
	ctx := context.Background()
	b, err := x.Create(ctx, "prompts-0")
	if err != nil {
		t.Fatal(err)
	}
	reqs := []batchapi.Request{chat("p-0-1", "grok-4", "one"), chat("p-0-2", "grok-4", "two"), chat("p-0-3", "no-such-model", "three")}
	for i := 0; i < 250; i++ { // three pages of results
		reqs = append(reqs, chat(fmt.Sprintf("p-1-%d", i), "grok-4", "more"))
	}
	if err := x.Add(ctx, b.ID, reqs[:2]); err != nil {
		t.Fatal(err)
	}
	if err := x.Add(ctx, b.ID, reqs[2:]); err != nil {
		t.Fatal(err)
	}
	b = until(t, func() (batchapi.Batch, error) { return x.Get(ctx, b.ID) }, func(b batchapi.Batch) bool { return b.Pending == 0 })
	if b.State != batchapi.StateCompleted || b.Total != len(reqs) || b.Succeeded != len(reqs)-1 || b.Failed != 1 || b.CostUSDTicks <= 0 {
		t.Fatalf("batch %+v", b)
	}
	got := map[string]batchapi.Result{}
	var ticks int64
	pages := 0
	for page := ""; ; {
		rs, next, err := x.Results(ctx, b.ID, page)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range rs {
			got[r.ID] = r
			ticks += r.CostUSDTicks
		}
		if page = next; page == "" {
			break
		}
	}
	if len(got) != len(reqs) || pages != 3 {
		t.Fatalf("%d results in %d pages", len(got), pages)
	}
	if r := got["p-0-1"]; r.Outcome != batchapi.Succeeded || !strings.Contains(string(r.Body), `"object":"chat.completion"`) || r.CostUSDTicks <= 0 {
		t.Fatalf("p-0-1 %+v", r)
	}
	if r := got["p-0-3"]; r.Outcome != batchapi.Failed || r.Error.Code != "model_not_found" {
		t.Fatalf("p-0-3 %+v", r)
	}
	if ticks != b.CostUSDTicks {
		t.Fatalf("results cost %d ticks, the batch %d", ticks, b.CostUSDTicks)
	}
	if st := mock.Stats().Batch; st.Duplicates != 0 || st.RequestsAdded != int64(len(reqs)) {
		t.Fatalf("stats %+v", st)
	}

	// Cancelling a batch whose requests are pending cancels them.
	slow, err := x.Create(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Add(ctx, slow.ID, []batchapi.Request{chat("s-1", "grok-4", "x")}); err != nil {
		t.Fatal(err)
	}
	if b, err = x.Cancel(ctx, slow.ID); err != nil || b.State != batchapi.StateCancelled || b.Cancelled != 1 {
		// With a 20ms delay the request may have ended first.
		if err != nil || b.Succeeded != 1 {
			t.Fatalf("cancel %+v, %v", b, err)
		}
	}
}

func TestXAICancelAndDuplicatesAgainstSimulator(t *testing.T) {
	t.Parallel()
	mock, c := simulator(t, mockapi.Config{BatchDelay: time.Hour, Seed: 2})
	x := batchapi.NewXAI(c)
	ctx := context.Background()
	b, err := x.Create(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Add(ctx, b.ID, []batchapi.Request{chat("d-1", "grok-4", "x"), chat("d-2", "grok-4", "y")}); err != nil {
		t.Fatal(err)
	}
	if b, err = x.Get(ctx, b.ID); err != nil || b.State != batchapi.StateInProgress || b.Pending != 2 {
		t.Fatalf("get %+v, %v", b, err)
	}
	// The simulator counts a request id that arrives twice.
	if err := x.Add(ctx, b.ID, []batchapi.Request{chat("d-1", "grok-4", "x")}); err != nil {
		t.Fatal(err)
	}
	if d := mock.Stats().Batch.Duplicates; d != 1 {
		t.Fatalf("duplicates %d, want 1", d)
	}
	b, err = x.Cancel(ctx, b.ID)
	if err != nil || b.State != batchapi.StateCancelled || b.Cancelled != 3 || b.Pending != 0 {
		t.Fatalf("cancel %+v, %v", b, err)
	}
	rs, _, err := x.Results(ctx, b.ID, "")
	if err != nil || len(rs) != 3 || rs[0].Outcome != batchapi.Cancelled {
		t.Fatalf("results %+v, %v", rs, err)
	}
}

func TestOpenAILifecycleAgainstSimulator(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		expire  float64
		state   batchapi.State
		outcome batchapi.Outcome
	}{
		{"completed", 0, batchapi.StateCompleted, batchapi.Succeeded},
		{"expired", 1, batchapi.StateExpired, batchapi.Expired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mock, c := simulator(t, mockapi.Config{BatchDelay: 20 * time.Millisecond, BatchExpire: tc.expire, Seed: 3})
			o := batchapi.NewOpenAI(c)
			ctx := context.Background()
			reqs := []batchapi.Request{chat("o-1", "grok-4", "one"), chat("o-2", "grok-4", "two")}
			file, err := o.Upload(ctx, "job-1.jsonl", batchapi.Slice(reqs))
			if err != nil {
				t.Fatal(err)
			}
			b, err := o.Create(ctx, file, "/v1/chat/completions", map[string]string{"sluice_job": "job-1"})
			if err != nil {
				t.Fatal(err)
			}
			b = until(t, func() (batchapi.Batch, error) { return o.Get(ctx, b.ID) }, func(b batchapi.Batch) bool { return b.State.Terminal() })
			if b.State != tc.state || b.Total != 2 {
				t.Fatalf("batch %+v", b)
			}
			var got []batchapi.Result
			for _, f := range []string{b.OutputFileID, b.ErrorFileID} {
				if f == "" {
					continue
				}
				if err := o.Results(ctx, f, func(r batchapi.Result) error { got = append(got, r); return nil }); err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != 2 || got[0].Outcome != tc.outcome || got[1].Outcome != tc.outcome {
				t.Fatalf("results %+v", got)
			}
			// The batch is found again by its metadata.
			list, _, err := o.List(ctx, "", 10)
			if err != nil || len(list) != 1 || list[0].ID != b.ID || list[0].Metadata["sluice_job"] != "job-1" {
				t.Fatalf("list %+v, %v", list, err)
			}
			if st := mock.Stats().Batch; st.Duplicates != 0 || st.Batches != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}
