package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/record"
)

// startCluster starts a kfake cluster with sluice's topics.
func startCluster(t *testing.T, partitions int32, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	cluster, err := devkafka.Start(devkafka.Config{Partitions: partitions, Opts: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	return cluster
}

func dial(t *testing.T, cluster *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// setMaxMessageBytes sets the prompts topic's max.message.bytes.
func setMaxMessageBytes(t *testing.T, cl *kgo.Client, n int) {
	t.Helper()
	v := fmt.Sprint(n)
	rs, err := kadm.NewClient(cl).AlterTopicConfigs(context.Background(),
		[]kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &v}}, "prompts")
	if err == nil {
		err = rs[0].Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// answerAll answers n prompts on the input topic as sluice consume does,
// through the Publisher (which keeps the input's headers): the answer is
// "<custom_id> <value>".
func answerAll(t *testing.T, cl *kgo.Client, n int) {
	t.Helper()
	ctx := testCtx(t)
	in, err := kgo.NewClient(append(cl.Opts(), kgo.ConsumeTopics("prompts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	pub := NewPublisher(cl, "completions", "prompts.dlq")
	done := make(chan error, n)
	for got := 0; got < n; {
		fs := in.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("answered %d of %d prompts: %v", got, n, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			got++
			body := fmt.Sprintf(`{"answer":%q}`, string(r.Key)+" "+string(r.Value))
			res := &record.Result{ID: record.NewID(), CustomID: string(r.Key), Attempts: 1,
				Response: &record.Response{StatusCode: 200, Body: []byte(body)}}
			pub.Publish(ctx, r, res, func(err error) { done <- err })
		})
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestAwaitMatchesBatch submits two batches that reuse the same
// custom_ids; each Await gets its own batch's answers, although the other
// batch's come first on the output topic.
func TestAwaitMatchesBatch(t *testing.T) {
	t.Parallel()
	cluster := startCluster(t, 3)
	cl := dial(t, cluster)
	c := NewClient(cl, ClientConfig{})
	ctx := testCtx(t)
	batches := map[string]*Batch{}
	for _, name := range []string{"A", "B"} {
		w, err := c.Begin(ctx, "batch-"+name)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			if _, err := w.Add(ctx, fmt.Appendf(nil, `{"custom_id":"request-%d","prompt":"%s%d"}`, i, name, i)); err != nil {
				t.Fatal(err)
			}
		}
		if batches[name], err = w.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	answerAll(t, cl, 6)
	for name, b := range batches {
		var got []string
		err := c.Collect(ctx, b, func(r Result) error {
			if r.Batch != b.ID {
				t.Errorf("batch %s: result of batch %q", name, r.Batch)
			}
			got = append(got, string(r.Response.Body))
			return nil
		})
		slices.Sort(got)
		want := fmt.Sprintf(`[{"answer":"request-1 {\"custom_id\":\"request-1\",\"prompt\":\"%[1]s1\"}"} {"answer":"request-2 {\"custom_id\":\"request-2\",\"prompt\":\"%[1]s2\"}"} {"answer":"request-3 {\"custom_id\":\"request-3\",\"prompt\":\"%[1]s3\"}"}]`, name)
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("batch %s: Collect = %v\n%s\nwant\n%s", name, err, got, want)
		}
	}
	// Without a batch id, custom_id alone decides: the first of each.
	ids := &Batch{CustomIDs: []string{"request-1"}}
	n := 0
	if err := c.Collect(ctx, ids, func(Result) error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("Collect by ids = %d results, %v", n, err)
	}
}

// TestRecordSizeLimit reads max.message.bytes from the topic, rejects a
// value whose record would exceed it before producing, and accepts the
// largest one that fits, which the broker then takes.
func TestRecordSizeLimit(t *testing.T) {
	t.Parallel()
	const limit = 4096
	cluster := startCluster(t, 1)
	setMaxMessageBytes(t, dial(t, cluster), limit)
	ctx := testCtx(t)

	// A client batching more than the topic takes is refused up front.
	if _, err := NewClient(dial(t, cluster), ClientConfig{}).Begin(ctx, "x"); err == nil || !strings.Contains(err.Error(), "kgo.ProducerBatchMaxBytes(4096)") {
		t.Fatalf("Begin with a 1 MB batch limit on a 4 KiB topic = %v", err)
	}

	cl := dial(t, cluster, kgo.ProducerBatchMaxBytes(limit))
	c := NewClient(cl, ClientConfig{})
	if n, err := c.MaxMessageBytes(ctx); n != limit || err != nil {
		t.Fatalf("MaxMessageBytes = %d, %v", n, err)
	}
	w, err := c.Begin(ctx, "sizes")
	if err != nil {
		t.Fatal(err)
	}
	value := func(n int) []byte {
		return fmt.Appendf(nil, `{"prompt":"%s"}`, strings.Repeat("x", n))
	}
	fits := 0
	for n := limit - 200; n < limit; n++ {
		_, err := w.Check(n, value(n))
		if errors.Is(err, ErrRecordTooLarge) {
			if !strings.Contains(err.Error(), `max.message.bytes 4096 of topic "prompts"`) {
				t.Errorf("error %q does not name the limit", err)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fits = n
	}
	if fits == 0 || fits >= limit-1 {
		t.Fatalf("largest value that fits: %d bytes of prompt", fits)
	}
	if _, err := w.Close(ctx); err != nil { // nothing sent
		t.Fatal(err)
	}
	w, err = c.Begin(ctx, "fits")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Check(1, value(fits)); err != nil {
		t.Fatal(err)
	}
	// Send produces only the value Check saw.
	if err := w.Send(ctx, 1, value(fits-1)); err == nil || !strings.Contains(err.Error(), "the input changed") {
		t.Fatalf("Send of a changed value = %v", err)
	}
	if err := w.Send(ctx, 1, value(fits)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(ctx); err != nil {
		t.Fatalf("the broker refused the largest record Check accepted: %v", err)
	}

	// A topic without its own value: the brokers' message.max.bytes.
	other := startCluster(t, 1, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "300000"}))
	if n, err := NewClient(dial(t, other), ClientConfig{}).MaxMessageBytes(ctx); n != 300000 || err != nil {
		t.Fatalf("MaxMessageBytes with a broker default = %d, %v", n, err)
	}
}

// TestWriterFailsHalfWay fails one produce request in the middle of a
// batch. Without a transaction the batch is incomplete and Produced names
// exactly the acknowledged ids; with one, Close aborts and nothing is
// readable.
func TestWriterFailsHalfWay(t *testing.T) {
	t.Parallel()
	for _, txn := range []bool{false, true} {
		t.Run(fmt.Sprintf("txn=%v", txn), func(t *testing.T) {
			t.Parallel()
			const limit = 4096
			cluster := startCluster(t, 1)
			setMaxMessageBytes(t, dial(t, cluster), limit)
			// Fail, once, the first produce request past record 10:
			// the records before it went in earlier requests.
			fault := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "prompts", Err: kerr.InvalidRecord,
				When: func(req kmsg.Request) bool {
					for _, t := range req.(*kmsg.ProduceRequest).Topics {
						for _, p := range t.Partitions {
							var b kmsg.RecordBatch
							if b.ReadFrom(p.Records) == nil && b.FirstSequence >= 10 {
								return true
							}
						}
					}
					return false
				}})
			opts := []kgo.Opt{kgo.ProducerBatchMaxBytes(limit), kgo.MaxProduceRequestsInflightPerBroker(1)}
			if txn {
				opts = append(opts, kgo.TransactionalID("t-half"))
			}
			c := NewClient(dial(t, cluster, opts...), ClientConfig{})
			ctx := testCtx(t)
			w, err := c.Begin(ctx, "half")
			if err != nil {
				t.Fatal(err)
			}
			for i := range 40 {
				if _, err := w.Check(i+1, fmt.Appendf(nil, `{"custom_id":"r-%d","prompt":"%s"}`, i, strings.Repeat("x", 1000))); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 40 {
				if err := w.Send(ctx, i+1, fmt.Appendf(nil, `{"custom_id":"r-%d","prompt":"%s"}`, i, strings.Repeat("x", 1000))); err != nil {
					break
				}
			}
			b, err := w.Close(ctx)
			if err == nil || b.State != StateIncomplete || b.Count != 40 {
				t.Fatalf("Close = %v, state %q, %d ids", err, b.State, b.Count)
			}
			if fault.Hits() != 1 {
				t.Fatalf("the fault fired %d times", fault.Hits())
			}
			if errors.Is(err, ErrAborted) != txn {
				t.Fatalf("Close = %v; aborted = %v, want %v", err, errors.Is(err, ErrAborted), txn)
			}
			written, err := c.Produced(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			_, acked := w.Progress()
			switch {
			case txn && len(written) != 0:
				t.Fatalf("aborted transaction: %d records readable", len(written))
			case !txn && (int64(len(written)) != acked || acked < 10 || acked == 40):
				t.Fatalf("Produced = %d ids, %d acknowledged of 40", len(written), acked)
			}
		})
	}
}

// TestCheckThenSend produces what Check planned, keyed and with headers as
// AddLine would, skipping what the caller skips.
func TestCheckThenSend(t *testing.T) {
	t.Parallel()
	cluster := startCluster(t, 1)
	cl := dial(t, cluster)
	c := NewClient(cl, ClientConfig{})
	ctx := testCtx(t)
	w, err := c.Begin(ctx, "cs")
	if err != nil {
		t.Fatal(err)
	}
	lines := map[int]string{2: `{"custom_id":"own","prompt":"a"}`, 4: `{"prompt":"b"}`, 5: `{"custom_id":"skipped","prompt":"c"}`}
	for _, n := range []int{2, 4, 5} {
		if _, err := w.Check(n, []byte(lines[n])); err != nil {
			t.Fatal(err)
		}
	}
	b := w.Batch()
	if b.State != StateProducing || fmt.Sprint(b.CustomIDs) != "[own cs-4 skipped]" {
		t.Fatalf("planned batch %+v", b)
	}
	for id, n, ok := w.Next(); ok; id, n, ok = w.Next() {
		if id == "skipped" {
			w.Skip()
			continue
		}
		if err := w.Send(ctx, n, []byte(lines[n])); err != nil {
			t.Fatal(err)
		}
	}
	if b, err = w.Close(ctx); err != nil || b.State != StateSubmitted {
		t.Fatalf("Close = %+v, %v", b, err)
	}
	written, err := c.Produced(ctx, b)
	if err != nil || len(written) != 2 || !written["own"] || !written["cs-4"] {
		t.Fatalf("Produced = %v, %v", written, err)
	}
	in, err := kgo.NewClient(append(cl.Opts(), kgo.ConsumeTopics("prompts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	got := map[string][]kgo.RecordHeader{}
	for len(got) < 2 {
		fs := in.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) { got[string(r.Key)] = r.Headers })
	}
	if fmt.Sprint(got["own"]) != "[{sluice.batch [99 115]}]" || fmt.Sprint(got["cs-4"]) != "[{sluice.batch [99 115]} {custom_id [99 115 45 52]}]" {
		t.Fatalf("headers = %v", got)
	}
}
