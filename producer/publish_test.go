package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/producer"
	"github.com/sluice-dev/sluice/record"
)

const (
	outTopic = "completions"
	dlqTopic = "prompts.dlq"
)

func newCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, outTopic, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func newClient(t *testing.T, addrs []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// endOffsets returns the high watermarks of the output and DLQ partitions.
func endOffsets(ctx context.Context, adm *kadm.Client) (out, dlq int64, err error) {
	offs, err := adm.ListEndOffsets(ctx, outTopic, dlqTopic)
	if err != nil {
		return 0, 0, err
	}
	if err := offs.Error(); err != nil {
		return 0, 0, err
	}
	o, _ := offs.Lookup(outTopic, 0)
	d, _ := offs.Lookup(dlqTopic, 0)
	return o.Offset, d.Offset, nil
}

// readBack consumes n records of topic with a fresh client.
func readBack(t *testing.T, addrs []string, topic string, n int) []*kgo.Record {
	t.Helper()
	if n == 0 {
		return nil
	}
	cl := newClient(t, addrs, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records from %s before the deadline", len(recs), n, topic)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetch %s/%d: %v", topic, p, err) })
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// doneProbe is a done callback that records how often it was called and,
// at the moment of the call, how many records each topic held.
type doneProbe struct {
	t   *testing.T
	adm *kadm.Client

	mu       sync.Mutex
	calls    int
	err      error
	out, dlq int64
	once     chan struct{}
}

func newDoneProbe(t *testing.T, addrs []string) *doneProbe {
	return &doneProbe{t: t, adm: kadm.NewClient(newClient(t, addrs)), once: make(chan struct{})}
}

func (p *doneProbe) done(err error) {
	var out, dlq int64
	var lerr error
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, dlq, lerr = endOffsets(ctx, p.adm)
		cancel()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.calls > 1 {
		p.t.Errorf("done called %d times", p.calls)
		return
	}
	if lerr != nil {
		p.t.Errorf("list end offsets in done: %v", lerr)
	}
	p.err, p.out, p.dlq = err, out, dlq
	close(p.once)
}

// wait returns done's error once it was called, then flushes the client so
// any stray second call would have happened, and checks there was none.
func (p *doneProbe) wait(cl *kgo.Client) error {
	p.t.Helper()
	select {
	case <-p.once:
	case <-time.After(30 * time.Second):
		p.t.Fatal("done was not called")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = cl.Flush(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls != 1 {
		p.t.Errorf("done called %d times, want exactly once", p.calls)
	}
	return p.err
}

func input() *kgo.Record {
	return &kgo.Record{
		Topic:     "prompts",
		Partition: 3,
		Offset:    1234,
		Key:       []byte("key-\x00\xff-1"),
		Value:     []byte(`{"custom_id":"r-1", "prompt":"hi \u00e9"}` + " \n"),
		Headers: []kgo.RecordHeader{
			{Key: "trace", Value: []byte("abc")},
			{Key: "custom_id", Value: []byte("r-1")},
			{Key: "empty", Value: nil},
		},
	}
}

func headersEqual(a, b []kgo.RecordHeader) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func decode(t *testing.T, r *kgo.Record) record.Result {
	t.Helper()
	var res record.Result
	dec := json.NewDecoder(bytes.NewReader(r.Value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("output value does not decode to record.Result: %v: %s", err, r.Value)
	}
	return res
}

func checkOutput(t *testing.T, rec *kgo.Record, in *kgo.Record) record.Result {
	t.Helper()
	if rec.Topic != outTopic {
		t.Errorf("topic = %s, want %s", rec.Topic, outTopic)
	}
	if !bytes.Equal(rec.Key, in.Key) {
		t.Errorf("output key = %q, want the input's %q", rec.Key, in.Key)
	}
	if !headersEqual(rec.Headers, in.Headers) {
		t.Errorf("output headers = %v, want the input's %v", rec.Headers, in.Headers)
	}
	return decode(t, rec)
}

func checkDeadLetter(t *testing.T, rec *kgo.Record, in *kgo.Record, code string, message string, attempts int) {
	t.Helper()
	if rec.Topic != dlqTopic {
		t.Errorf("topic = %s, want %s", rec.Topic, dlqTopic)
	}
	if !bytes.Equal(rec.Key, in.Key) {
		t.Errorf("dead letter key = %q, want %q", rec.Key, in.Key)
	}
	if !bytes.Equal(rec.Value, in.Value) {
		t.Errorf("dead letter value = %q, want byte-identical %q", rec.Value, in.Value)
	}
	want := append([]kgo.RecordHeader(nil), in.Headers...)
	for _, h := range [][2]string{
		{record.HeaderErrorCode, code},
		{record.HeaderErrorMessage, message},
		{record.HeaderAttempts, strconv.Itoa(attempts)},
		{record.HeaderSourceTopic, "prompts"},
		{record.HeaderSourcePartition, "3"},
		{record.HeaderSourceOffset, "1234"},
	} {
		want = append(want, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
	}
	if !headersEqual(rec.Headers, want) {
		t.Errorf("dead letter headers:\n got %q\nwant %q", rec.Headers, want)
	}
}

func requestID(s string) *string { return &s }

func TestPublishSuccess(t *testing.T) {
	t.Parallel()
	addrs := newCluster(t)
	cl := newClient(t, addrs)
	in := input()
	res := &record.Result{
		ID:       "res_1",
		CustomID: "r-1",
		Response: &record.Response{StatusCode: 200, RequestID: requestID("req-1"), Body: json.RawMessage(`{"choices":[{"message":{"content":"a <b> & c"}}]}`)},
		Source:   record.Source{Topic: "prompts", Partition: 3, Offset: 1234},
		Attempts: 1,
	}
	probe := newDoneProbe(t, addrs)
	producer.NewPublisher(cl, outTopic, dlqTopic).Publish(context.Background(), in, res, probe.done)
	if err := probe.wait(cl); err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
	if probe.out != 1 || probe.dlq != 0 {
		t.Errorf("when done was called: output had %d records, dlq %d; want 1 and 0", probe.out, probe.dlq)
	}
	got := checkOutput(t, readBack(t, addrs, outTopic, 1)[0], in)
	if got.ID != res.ID || got.CustomID != "r-1" || got.Error != nil || got.Attempts != 1 || got.Source != res.Source ||
		got.Response == nil || got.Response.StatusCode != 200 || *got.Response.RequestID != "req-1" ||
		!bytes.Equal(got.Response.Body, res.Response.Body) {
		t.Errorf("published result = %+v, want %+v", got, res)
	}
}

func TestPublishFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		res  *record.Result
	}{
		{"api error with response", &record.Result{
			ID: "res_2", CustomID: "r-1", Attempts: 6,
			Response: &record.Response{StatusCode: 503, Body: json.RawMessage(`{"error":{"message":"overloaded"}}`)},
			Error:    &record.Error{Code: record.CodeRetriesExhausted, Message: "api: status 503: overloaded"},
			Source:   record.Source{Topic: "prompts", Partition: 3, Offset: 1234},
		}},
		{"invalid input", &record.Result{
			ID: "res_3", CustomID: "r-1",
			Error:  &record.Error{Code: record.CodeInvalidInput, Message: "invalid input: messages[0].role: must be a string, got number"},
			Source: record.Source{Topic: "prompts", Partition: 3, Offset: 1234},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addrs := newCluster(t)
			cl := newClient(t, addrs)
			in := input()
			probe := newDoneProbe(t, addrs)
			producer.NewPublisher(cl, outTopic, dlqTopic).Publish(context.Background(), in, tc.res, probe.done)
			if err := probe.wait(cl); err != nil {
				t.Fatalf("done(%v), want nil", err)
			}
			if probe.out != 1 || probe.dlq != 1 {
				t.Errorf("when done was called: output had %d records, dlq %d; want 1 and 1", probe.out, probe.dlq)
			}
			got := checkOutput(t, readBack(t, addrs, outTopic, 1)[0], in)
			if got.Error == nil || *got.Error != *tc.res.Error || got.Attempts != tc.res.Attempts {
				t.Errorf("published result = %+v, want error %+v", got, tc.res.Error)
			}
			checkDeadLetter(t, readBack(t, addrs, dlqTopic, 1)[0], in, tc.res.Error.Code, tc.res.Error.Message, tc.res.Attempts)
		})
	}
}

func TestPublishResultTooLarge(t *testing.T) {
	t.Parallel()
	addrs := newCluster(t)
	cl := newClient(t, addrs, kgo.ProducerBatchMaxBytes(64<<10))
	in := input()
	big := `{"content":"` + strings.Repeat("x", 200<<10) + `"}`
	res := &record.Result{
		ID: "res_4", CustomID: "r-1", Attempts: 2,
		Response: &record.Response{StatusCode: 200, RequestID: requestID("req-big"), Body: json.RawMessage(big)},
		Source:   record.Source{Topic: "prompts", Partition: 3, Offset: 1234},
	}
	probe := newDoneProbe(t, addrs)
	producer.NewPublisher(cl, outTopic, dlqTopic).Publish(context.Background(), in, res, probe.done)
	if err := probe.wait(cl); err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
	if probe.out != 1 || probe.dlq != 1 {
		t.Errorf("when done was called: output had %d records, dlq %d; want 1 and 1", probe.out, probe.dlq)
	}
	rec := readBack(t, addrs, outTopic, 1)[0]
	if len(rec.Value) > 4<<10 {
		t.Errorf("output value is %d bytes: the oversized body was published", len(rec.Value))
	}
	got := checkOutput(t, rec, in)
	if got.Error == nil || got.Error.Code != record.CodeResultTooLarge {
		t.Fatalf("published result error = %+v, want code %s", got.Error, record.CodeResultTooLarge)
	}
	if got.ID != "res_4" || got.CustomID != "r-1" || got.Attempts != 2 || got.Source != res.Source {
		t.Errorf("published result = %+v, want id, custom_id, attempts and source kept", got)
	}
	if got.Response == nil || got.Response.StatusCode != 200 || got.Response.RequestID == nil || *got.Response.RequestID != "req-big" || (got.Response.Body != nil && string(got.Response.Body) != "null") {
		t.Errorf("published response = %+v, want status 200, request id req-big and no body", got.Response)
	}
	checkDeadLetter(t, readBack(t, addrs, dlqTopic, 1)[0], in, record.CodeResultTooLarge, got.Error.Message, 2)
	if res.Error != nil || len(res.Response.Body) != len(big) {
		t.Error("Publish modified the caller's result")
	}
}

func TestPublishError(t *testing.T) {
	t.Parallel()
	okRes := &record.Result{ID: "res_5", CustomID: "r-1", Attempts: 1,
		Response: &record.Response{StatusCode: 200, Body: json.RawMessage(`{}`)}}
	failRes := &record.Result{ID: "res_6", CustomID: "r-1", Attempts: 1,
		Error: &record.Error{Code: record.CodeInvalidInput, Message: "bad"}}
	tests := []struct {
		name     string
		opts     []kgo.Opt
		canceled bool
		out, dlq string
		res      *record.Result
	}{
		{"canceled ctx, missing output topic", nil, true, "no-such-topic", dlqTopic, okRes},
		{"delivery timeout, missing output topic", []kgo.Opt{kgo.RecordDeliveryTimeout(time.Second)}, false, "no-such-topic", dlqTopic, okRes},
		{"canceled ctx, missing dlq topic", nil, true, outTopic, "no-such-dlq", failRes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addrs := newCluster(t)
			cl := newClient(t, addrs, tc.opts...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.canceled {
				cancel()
			}
			probe := newDoneProbe(t, addrs)
			producer.NewPublisher(cl, tc.out, tc.dlq).Publish(ctx, input(), tc.res, probe.done)
			if err := probe.wait(cl); err == nil {
				t.Fatal("done(nil), want an error")
			} else if !strings.HasPrefix(err.Error(), "producer: ") {
				t.Errorf("done(%q), want a producer: error", err)
			}
		})
	}
}
