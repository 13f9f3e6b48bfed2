package producer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/record"
)

func newTestClient(t *testing.T, partitions int32) (*Client, *kgo.Client) {
	t.Helper()
	cluster, err := devkafka.Start(devkafka.Config{Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return NewClient(cl, ClientConfig{}), cl
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// publishResult puts a result for id on the output topic, as sluice would.
func publishResult(t *testing.T, cl *kgo.Client, id string, failed bool) {
	t.Helper()
	res := record.Result{ID: record.NewID(), CustomID: id, Response: &record.Response{StatusCode: 200, Body: []byte(`{}`)}}
	if failed {
		res.Error = &record.Error{Code: record.CodeAPIError, Message: "x"}
	}
	v, err := res.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "completions", Key: []byte(id), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestWriterValidatesAndKeys(t *testing.T) {
	t.Parallel()
	c, cl := newTestClient(t, 2)
	ctx := testCtx(t)
	w, err := c.Begin(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		value   string
		wantID  string
		wantErr error
	}{
		{`{"custom_id":"a","prompt":"hi"}`, "a", nil},
		{`{"custom_id":"a","prompt":"again"}`, "", ErrDuplicateID},
		{`{"custom_id":"b","messages":[]}`, "", ErrInvalidRequest},
		{`not json`, "", ErrInvalidRequest},
		{`{"custom_id":"e","method":"POST","url":"/v1/images/generations","body":{"prompt":"x"}}`, "", ErrInvalidRequest},
		{`{"prompt":"no id"}`, "b1-6", nil},
		{`{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"x"}]}}`, "c", nil},
	}
	for _, tc := range cases {
		id, err := w.Add(ctx, []byte(tc.value))
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || id != tc.wantID {
			t.Errorf("Add(%s) = %q, %v; want %q, %v", tc.value, id, err, tc.wantID, tc.wantErr)
		}
	}
	b, err := w.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(b.CustomIDs) != "[a b1-6 c]" || b.Count != 3 || b.ID != "b1" || len(b.ResultStart) != 2 {
		t.Fatalf("batch = %+v", b)
	}

	// The records are keyed by custom_id; a generated id is in the header.
	in, err := kgo.NewClient(append(cl.Opts(), kgo.ConsumeTopics("prompts"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	got := map[string]*kgo.Record{}
	for len(got) < 3 {
		fs := in.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) { got[string(r.Key)] = r })
	}
	if h := got["b1-6"].Headers; len(h) != 2 || h[0].Key != HeaderBatch || string(h[0].Value) != "b1" ||
		h[1].Key != record.HeaderCustomID || string(h[1].Value) != "b1-6" {
		t.Errorf("generated id headers = %v", h)
	}
	if h := got["a"].Headers; string(got["a"].Value) != `{"custom_id":"a","prompt":"hi"}` ||
		len(h) != 1 || h[0].Key != HeaderBatch || string(h[0].Value) != "b1" {
		t.Errorf("record a = %q %v, want the value byte for byte and the batch header", got["a"].Value, h)
	}
}

func TestSubmitBatchAllOrNothing(t *testing.T) {
	t.Parallel()
	c, _ := newTestClient(t, 1)
	ctx := testCtx(t)
	_, err := c.SubmitBatch(ctx, [][]byte{
		[]byte(`{"custom_id":"a","prompt":"x"}`),
		[]byte(`{"custom_id":"a","prompt":"y"}`),
		[]byte(`{"custom_id":"b","prompt":""}`),
	})
	if !errors.Is(err, ErrDuplicateID) || !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("err = %v, want both sentinels", err)
	}
	offs, err := c.endOffsets(ctx, "prompts")
	if err != nil {
		t.Fatal(err)
	}
	if offs["prompts"][0] != 0 {
		t.Fatalf("prompts end offset = %d, want nothing produced", offs["prompts"][0])
	}
	if _, err := c.Begin(ctx, "../evil"); err == nil {
		t.Fatal("Begin accepted a path as batch id")
	}
	bad := NewClient(c.cl, ClientConfig{InputTopic: "nope"})
	if _, err := bad.Begin(ctx, ""); err == nil {
		t.Fatal("Begin accepted a missing input topic")
	}
}

// TestAwaitFromRecordedStart checks that results published before Await
// starts are delivered, results from before the batch are not, and a
// redelivered result is delivered once.
func TestAwaitFromRecordedStart(t *testing.T) {
	t.Parallel()
	c, cl := newTestClient(t, 3)
	ctx := testCtx(t)
	publishResult(t, cl, "a", true) // an older batch's result for the same id
	b, err := c.SubmitBatch(ctx, [][]byte{
		[]byte(`{"custom_id":"a","prompt":"x"}`),
		[]byte(`{"custom_id":"b","prompt":"y"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	publishResult(t, cl, "a", false)
	publishResult(t, cl, "a", true) // redelivery: skipped
	publishResult(t, cl, "other", false)

	// Collect stops at the current end: b is missing.
	var got []string
	err = c.Collect(ctx, b, func(r Result) error { got = append(got, fmt.Sprintf("%s %v", r.CustomID, r.Failed())); return nil })
	if !errors.Is(err, ErrIncomplete) || fmt.Sprint(got) != "[a false]" {
		t.Fatalf("Collect = %v, %v; want [a false] and ErrIncomplete", got, err)
	}

	publishResult(t, cl, "b", true)
	got = nil
	err = c.Await(ctx, b, func(r Result) error { got = append(got, fmt.Sprintf("%s %v", r.CustomID, r.Failed())); return nil })
	if err != nil || fmt.Sprint(got) != "[a false b true]" {
		t.Fatalf("Await = %v, %v", got, err)
	}

	// Await gives up when ctx ends, saying how many are missing.
	b.CustomIDs = append(b.CustomIDs, "never")
	short, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	err = c.Await(short, b, func(Result) error {
		if n++; n == 2 {
			cancel() // a and b arrived; never will not
		}
		return nil
	})
	if !errors.Is(err, ErrIncomplete) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Await err = %v", err)
	}
	if want := "1 of 3 ids"; !strings.Contains(err.Error(), want) {
		t.Fatalf("Await err = %v, want %q", err, want)
	}
}

func TestResultsTails(t *testing.T) {
	t.Parallel()
	c, cl := newTestClient(t, 2)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	publishResult(t, cl, "old", false)
	start, err := c.EndOffsets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	publishResult(t, cl, "new", false)
	for r, err := range c.Results(ctx, start) {
		if err != nil || r.CustomID != "new" {
			t.Fatalf("got %q, %v; want new", r.CustomID, err)
		}
		break
	}
}

func TestBatchSaveLoad(t *testing.T) {
	t.Parallel()
	for _, n := range []int{3, InlineIDs + 1} {
		dir := t.TempDir()
		b := &Batch{ID: "b-x", InputTopic: "prompts", OutputTopic: "completions",
			SubmittedAt: time.Unix(1, 0).UTC(), ResultStart: map[int32]int64{0: 5, 3: 7}}
		for i := range n {
			b.CustomIDs = append(b.CustomIDs, fmt.Sprintf("id\n%d", i))
		}
		if _, err := b.Save(dir); err != nil {
			t.Fatal(err)
		}
		_, sidecar := os.Stat(filepath.Join(dir, "b-x.ids.jsonl"))
		if (n > InlineIDs) != (sidecar == nil) {
			t.Errorf("n=%d: sidecar present = %v", n, sidecar == nil)
		}
		got, err := LoadBatch(dir, "b-x")
		if err != nil {
			t.Fatal(err)
		}
		if got.Count != n || len(got.CustomIDs) != n || got.CustomIDs[n-1] != b.CustomIDs[n-1] ||
			fmt.Sprint(got.ResultStart) != fmt.Sprint(b.ResultStart) || !got.SubmittedAt.Equal(b.SubmittedAt) {
			t.Errorf("n=%d: loaded %+v", n, got.ResultStart)
		}
	}
	if _, err := LoadBatch(t.TempDir(), "missing"); err == nil {
		t.Error("LoadBatch of a missing batch succeeded")
	}
}
