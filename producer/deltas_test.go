package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/producer"
)

const streamTopic = "completions.stream"

func newStreamCluster(t *testing.T, partitions int32) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, streamTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// ended is what End's done callback reported.
type ended struct {
	failed int
	err    error
}

// endProbe returns a done callback and a channel receiving its calls.
func endProbe() (func(int, error), <-chan ended) {
	ch := make(chan ended, 2)
	return func(failed int, err error) { ch <- ended{failed, err} }, ch
}

func waitEnded(t *testing.T, ch <-chan ended) ended {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("End's done was not called")
		return ended{}
	}
}

func decodeDelta(t *testing.T, r *kgo.Record) producer.DeltaRecord {
	t.Helper()
	var d producer.DeltaRecord
	dec := json.NewDecoder(bytes.NewReader(r.Value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("stream value does not decode to DeltaRecord: %v: %s", err, r.Value)
	}
	return d
}

func TestDeltaStreamInOrder(t *testing.T) {
	t.Parallel()
	addrs := newStreamCluster(t, 4)
	cl := newClient(t, addrs)
	// The ordering rests on these defaults; sluice consume keeps them.
	if cl.OptValue(kgo.DisableIdempotentWrite) != false || cl.OptValue(kgo.RequiredAcks) != kgo.AllISRAcks() {
		t.Fatalf("franz-go producer defaults changed: DisableIdempotentWrite=%v RequiredAcks=%v",
			cl.OptValue(kgo.DisableIdempotentWrite), cl.OptValue(kgo.RequiredAcks))
	}
	pub := producer.NewDeltaPublisher(cl, streamTopic)
	in := input()
	ids := []string{"q-1", "q-2", "q-3", "q-4", "q-5"}
	const n = 40
	ctx := context.Background()

	// One goroutine per stream, as concurrent records would produce.
	var wg sync.WaitGroup
	results := make(chan (<-chan ended), len(ids))
	for _, id := range ids {
		wg.Go(func() {
			done, ch := endProbe()
			s := pub.Begin(in, id, 1)
			s.Delta(ctx, 0, json.RawMessage(`{"role":"assistant","content":""}`), "")
			for k := 1; k < n-1; k++ {
				s.Delta(ctx, 0, json.RawMessage(fmt.Sprintf(`{"content":"%s-%d"}`, id, k)), "")
			}
			s.Delta(ctx, 0, json.RawMessage(`{}`), "stop")
			s.End(ctx, "stop", nil, done)
			results <- ch
		})
	}
	wg.Wait()
	close(results)
	for ch := range results {
		if e := waitEnded(t, ch); e.failed != 0 || e.err != nil {
			t.Errorf("End reported %d failures, %v", e.failed, e.err)
		}
	}

	byID := map[string][]*kgo.Record{}
	for _, r := range readBack(t, addrs, streamTopic, len(ids)*(n+1)) {
		byID[string(r.Key)] = append(byID[string(r.Key)], r)
	}
	partitions := map[int32]bool{}
	for _, id := range ids {
		recs := byID[id]
		if len(recs) > 0 {
			partitions[recs[0].Partition] = true
		}
		if len(recs) != n+1 {
			t.Fatalf("%s: %d records, want %d", id, len(recs), n+1)
		}
		for k, r := range recs {
			if r.Partition != recs[0].Partition {
				t.Errorf("%s: record %d on partition %d, the first on %d", id, k, r.Partition, recs[0].Partition)
			}
			if !headersEqual(r.Headers, in.Headers) {
				t.Errorf("%s: headers %v, want the input's %v", id, r.Headers, in.Headers)
			}
			d := decodeDelta(t, r)
			if d.CustomID != id || d.Attempt != 1 || d.Seq != k || d.Index != 0 {
				t.Errorf("%s: record %d = %+v", id, k, d)
			}
			switch {
			case k == n:
				if !d.Done || d.FinishReason != "stop" || d.Delta != nil || d.Error != "" {
					t.Errorf("%s: last record = %s, want done with finish_reason stop", id, r.Value)
				}
			case k == n-1:
				if d.Done || d.FinishReason != "stop" || string(d.Delta) != `{}` {
					t.Errorf("%s: record %d = %s, want the finishing delta", id, k, r.Value)
				}
			case k > 0:
				if want := fmt.Sprintf(`{"content":"%s-%d"}`, id, k); d.Done || string(d.Delta) != want {
					t.Errorf("%s: record %d = %s, want delta %s", id, k, r.Value, want)
				}
			}
		}
		if want := fmt.Sprintf(`{"custom_id":%q,"attempt":1,"seq":1,"delta":{"content":"%s-1"},"done":false}`, id, id); string(recs[1].Value) != want {
			t.Errorf("%s: value %s, want %s", id, recs[1].Value, want)
		}
	}
	if len(partitions) < 2 {
		t.Errorf("the streams used partitions %v; the test needs several", partitions)
	}
	if f := pub.Failed(); f != 0 {
		t.Errorf("Failed() = %d, want 0", f)
	}
}

func TestDeltaStreamRetryRestartsSeq(t *testing.T) {
	t.Parallel()
	addrs := newStreamCluster(t, 2)
	cl := newClient(t, addrs)
	pub := producer.NewDeltaPublisher(cl, streamTopic)
	ctx := context.Background()
	in := input()

	done, ch := endProbe()
	s := pub.Begin(in, "r-1", 1)
	s.Delta(ctx, 0, json.RawMessage(`{"role":"assistant","content":""}`), "")
	s.Delta(ctx, 0, json.RawMessage(`{"content":"Hel"}`), "")
	s.End(ctx, "", errors.New("api: stream idle: no chunk for 30s"), done)
	if e := waitEnded(t, ch); e.failed != 0 || e.err != nil {
		t.Fatalf("attempt 1: End reported %d failures, %v", e.failed, e.err)
	}
	done, ch = endProbe()
	s = pub.Begin(in, "r-1", 2)
	s.Delta(ctx, 0, json.RawMessage(`{"role":"assistant","content":""}`), "")
	s.Delta(ctx, 0, json.RawMessage(`{"content":"Hello"}`), "")
	s.Delta(ctx, 0, json.RawMessage(`{}`), "stop")
	s.End(ctx, "stop", nil, done)
	if e := waitEnded(t, ch); e.failed != 0 || e.err != nil {
		t.Fatalf("attempt 2: End reported %d failures, %v", e.failed, e.err)
	}

	var got []string
	for _, r := range readBack(t, addrs, streamTopic, 7) {
		d := decodeDelta(t, r)
		got = append(got, fmt.Sprintf("%d/%d done=%v %s%s", d.Attempt, d.Seq, d.Done, d.FinishReason, d.Error))
	}
	want := []string{
		"1/0 done=false ", "1/1 done=false ", "1/2 done=true api: stream idle: no chunk for 30s",
		"2/0 done=false ", "2/1 done=false ", "2/2 done=false stop", "2/3 done=true stop",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records (attempt/seq):\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDeltaStreamValues(t *testing.T) {
	t.Parallel()
	addrs := newStreamCluster(t, 1)
	cl := newClient(t, addrs)
	pub := producer.NewDeltaPublisher(cl, streamTopic)
	ctx := context.Background()

	done, ch := endProbe()
	s := pub.Begin(&kgo.Record{Key: []byte("input-key")}, "n2", 3)
	s.Delta(ctx, 0, json.RawMessage(`{"content":"<b>a & b</b>"}`), "")
	s.Delta(ctx, 1, json.RawMessage(`{"content":"b"}`), "")
	s.Delta(ctx, 1, nil, "length")
	s.End(ctx, "stop", nil, done)
	s.End(ctx, "again", nil, done)   // ignored
	s.Delta(ctx, 0, nil, "too late") // ignored
	if e := waitEnded(t, ch); e.failed != 0 || e.err != nil {
		t.Fatalf("End reported %d failures, %v", e.failed, e.err)
	}
	want := []string{
		`{"custom_id":"n2","attempt":3,"seq":0,"delta":{"content":"<b>a & b</b>"},"done":false}`,
		`{"custom_id":"n2","attempt":3,"seq":1,"index":1,"delta":{"content":"b"},"done":false}`,
		`{"custom_id":"n2","attempt":3,"seq":2,"index":1,"delta":{},"finish_reason":"length","done":false}`,
		`{"custom_id":"n2","attempt":3,"seq":3,"finish_reason":"stop","done":true}`,
	}
	recs := readBack(t, addrs, streamTopic, len(want))
	for i, r := range recs {
		if string(r.Value) != want[i] || string(r.Key) != "n2" || len(r.Headers) != 0 {
			t.Errorf("record %d: key %q value %s, want key n2 value %s", i, r.Key, r.Value, want[i])
		}
	}
	select {
	case e := <-ch:
		t.Errorf("done called twice (second: %+v)", e)
	default:
	}
}

func TestDeltaStreamBestEffort(t *testing.T) {
	t.Parallel()
	t.Run("full buffer drops deltas without blocking", func(t *testing.T) {
		t.Parallel()
		addrs := newStreamCluster(t, 1)
		cl := newClient(t, addrs, kgo.MaxBufferedRecords(1), kgo.ManualFlushing())
		pub := producer.NewDeltaPublisher(cl, streamTopic)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		done, ch := endProbe()
		s := pub.Begin(input(), "r-1", 1)
		s.Delta(ctx, 0, json.RawMessage(`{"content":"a"}`), "") // buffered
		s.Delta(ctx, 0, json.RawMessage(`{"content":"b"}`), "") // no room: dropped
		s.Delta(ctx, 0, json.RawMessage(`{"content":"c"}`), "") // dropped
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		s.End(ctx, "stop", nil, done)
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		e := waitEnded(t, ch)
		if e.failed != 2 || !errors.Is(e.err, kgo.ErrMaxBuffered) {
			t.Errorf("End reported %d failures, %v; want 2, ErrMaxBuffered", e.failed, e.err)
		}
		if f := pub.Failed(); f != 2 {
			t.Errorf("Failed() = %d, want 2", f)
		}
		var seqs []int
		for _, r := range readBack(t, addrs, streamTopic, 2) {
			seqs = append(seqs, decodeDelta(t, r).Seq)
		}
		if fmt.Sprint(seqs) != "[0 3]" {
			t.Errorf("seqs on the topic = %v, want [0 3]: the gap shows the loss", seqs)
		}
	})
	t.Run("a delta that is not JSON is counted", func(t *testing.T) {
		t.Parallel()
		addrs := newStreamCluster(t, 1)
		pub := producer.NewDeltaPublisher(newClient(t, addrs), streamTopic)
		ctx := context.Background()
		done, ch := endProbe()
		s := pub.Begin(input(), "r-1", 1)
		s.Delta(ctx, 0, json.RawMessage(`{"content":`), "")
		s.End(ctx, "", nil, done)
		if e := waitEnded(t, ch); e.failed != 1 || e.err == nil || !strings.Contains(e.err.Error(), "encode delta 0") {
			t.Errorf("End reported %d failures, %v; want 1 encoding error", e.failed, e.err)
		}
		if d := decodeDelta(t, readBack(t, addrs, streamTopic, 1)[0]); !d.Done || d.Seq != 1 {
			t.Errorf("done record = %+v, want seq 1", d)
		}
	})
}

func ExampleDeltaPublisher() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "completions.stream"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...)) // producer defaults: in order per key
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	ctx := context.Background()

	deltas := producer.NewDeltaPublisher(cl, "completions.stream")
	in := &kgo.Record{Topic: "prompts", Key: []byte("q-1")} // the input record
	s := deltas.Begin(in, "q-1", 1)
	s.Delta(ctx, 0, json.RawMessage(`{"role":"assistant","content":""}`), "")
	s.Delta(ctx, 0, json.RawMessage(`{"content":"Hello"}`), "")
	s.Delta(ctx, 0, json.RawMessage(`{}`), "stop")
	acked := make(chan struct{})
	s.End(ctx, "stop", nil, func(failed int, err error) {
		fmt.Println("failed:", failed, err)
		close(acked)
	})
	<-acked

	rd, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...),
		kgo.ConsumeTopics("completions.stream"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		panic(err)
	}
	defer rd.Close()
	for n := 0; n < 4; {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			fmt.Printf("%s %s\n", r.Key, r.Value)
			n++
		})
	}
	// Output:
	// failed: 0 <nil>
	// q-1 {"custom_id":"q-1","attempt":1,"seq":0,"delta":{"role":"assistant","content":""},"done":false}
	// q-1 {"custom_id":"q-1","attempt":1,"seq":1,"delta":{"content":"Hello"},"done":false}
	// q-1 {"custom_id":"q-1","attempt":1,"seq":2,"delta":{},"finish_reason":"stop","done":false}
	// q-1 {"custom_id":"q-1","attempt":1,"seq":3,"finish_reason":"stop","done":true}
}
