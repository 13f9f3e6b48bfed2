package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/record"
)

// stubAPI is an OpenAI-compatible endpoint whose behaviour the prompt
// text selects: "status-NNN" answers NNN, "flaky" fails with 503 on its first
// attempt, "sleep-MS..." answers after MS milliseconds, "slow" waits for
// release, anything else answers 200 with an echo.
type stubAPI struct {
	mu      sync.Mutex
	seen    map[string]int // attempts per prompt text
	bodies  map[string][]byte
	calls   atomic.Int64
	active  atomic.Int64 // calls being answered now
	release chan struct{}
	unblock func() // closes release, once
}

func newStubAPI() *stubAPI {
	s := &stubAPI{seen: map[string]int{}, bodies: map[string][]byte{}, release: make(chan struct{})}
	s.unblock = sync.OnceFunc(func() { close(s.release) })
	return s
}

func (s *stubAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	s.active.Add(1)
	defer s.active.Add(-1)
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Messages) == 0 {
		http.Error(w, `{"error":{"message":"bad request","type":"invalid_request_error"}}`, 400)
		return
	}
	text := req.Messages[len(req.Messages)-1].Content
	s.mu.Lock()
	s.seen[text]++
	attempt := s.seen[text]
	s.bodies[text] = body
	s.mu.Unlock()
	w.Header().Set("x-request-id", fmt.Sprintf("req-%d", s.calls.Load()))
	switch {
	case strings.HasPrefix(text, "status-"):
		var code int
		fmt.Sscanf(text, "status-%d", &code)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"stub %d","type":"invalid_request_error","code":"stub"}}`, code)
		return
	case text == "flaky" && attempt == 1:
		w.WriteHeader(503)
		return
	case strings.HasPrefix(text, "sleep-"):
		var ms int
		fmt.Sscanf(text, "sleep-%d", &ms)
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	case strings.HasPrefix(text, "slow"):
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"echo: %s"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, req.Model, text)
}

// logRepeated logs each prompt the stub was called for more than once.
func (s *stubAPI) logRepeated(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for text, c := range s.seen {
		if c > 1 {
			t.Logf("%q called %d times", text, c)
		}
	}
}

// testStack is a kfake cluster, a stub API and the config of a member.
type testStack struct {
	cluster *kfake.Cluster
	api     *stubAPI
	cfg     config.Consume
}

func newTestStack(t testing.TB, partitions int32) *testStack {
	t.Helper()
	return newTestStackOn(t, devkafka.Config{Partitions: partitions})
}

// newTestStackTopics is newTestStack with these topics.
func newTestStackTopics(t testing.TB, partitions int32, topics ...string) *testStack {
	t.Helper()
	return newTestStackOn(t, devkafka.Config{Partitions: partitions, Topics: topics})
}

// newTestStackOn is newTestStack on a cluster of its own configuration;
// with no topics named, those of newTestStack (no jobs topic: the batch
// tier stays off; batch_test.go adds it).
func newTestStackOn(t testing.TB, kcfg devkafka.Config) *testStack {
	t.Helper()
	if len(kcfg.Topics) == 0 {
		kcfg.Topics = []string{"prompts", "completions", "prompts.dlq"}
	}
	c, err := devkafka.Start(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	stub := newStubAPI()
	srv := httptest.NewServer(stub)
	t.Cleanup(srv.Close)
	t.Cleanup(stub.unblock)
	cfg := config.Consume{
		Kafka: config.Kafka{Brokers: c.ListenAddrs(), Group: "sluice", InputTopic: "prompts", OutputTopic: "completions", DLQTopic: "prompts.dlq"},
		API: config.API{BaseURL: srv.URL + "/v1", Keyless: true, Model: "grok-4", RequestTimeout: 5 * time.Second,
			MaxAttempts: 3, RetryBase: time.Millisecond, RetryMax: 10 * time.Millisecond, StreamIdleTimeout: 5 * time.Second},
		Limits:         config.Limits{MaxInFlight: 64, MaxBufferedBytes: 64 << 20, QuotaProbeInterval: time.Second},
		Delivery:       config.Delivery{Mode: config.AtLeastOnce, Ordering: "unordered"},
		CommitInterval: 50 * time.Millisecond,
		DrainTimeout:   5 * time.Second,
		RevokeTimeout:  5 * time.Second,
		LogLevel:       "warn",
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &testStack{cluster: c, api: stub, cfg: cfg}
}

// member runs one consumer-group member until the returned stop is called;
// stop waits for it to drain and returns its error.
func (s *testStack) member(t testing.TB, opts ...kgo.Opt) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	go func() { done <- serve(ctx, s.cfg, log, pipelineOptions{kafkaOpts: opts}) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (s *testStack) client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(s.cluster.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (s *testStack) produce(t testing.TB, recs ...*kgo.Record) {
	t.Helper()
	cl := s.client(t)
	for _, r := range recs {
		r.Topic = "prompts"
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// collect reads topic from the start until want records arrived.
func (s *testStack) collect(t testing.TB, topic string, want int) []*kgo.Record {
	t.Helper()
	return s.collectWith(t, topic, want)
}

// collectWith reads want records of topic from the start with a reader
// built with opts.
func (s *testStack) collectWith(t testing.TB, topic string, want int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl := s.client(t, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: got %d records, want %d", topic, len(out), want)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// committed returns the group's committed offsets of the input topic.
func (s *testStack) committed(t testing.TB) map[int32]int64 {
	t.Helper()
	adm := kadm.NewClient(s.client(t))
	offs, err := adm.FetchOffsets(context.Background(), s.cfg.Group)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == s.cfg.InputTopic {
			out[o.Partition] = o.At
		}
	})
	return out
}

func decodeResults(t testing.TB, recs []*kgo.Record) map[string]record.Result {
	t.Helper()
	out := map[string]record.Result{}
	for _, r := range recs {
		var res record.Result
		if err := json.Unmarshal(r.Value, &res); err != nil {
			t.Fatalf("result %q is not JSON: %v", r.Value, err)
		}
		if _, dup := out[res.CustomID]; dup {
			t.Errorf("duplicate result for %s", res.CustomID)
		}
		out[res.CustomID] = res
	}
	return out
}

func TestPipelineRecordContract(t *testing.T) {
	s := newTestStack(t, 4)
	hdr := []kgo.RecordHeader{{Key: "trace", Value: []byte("t-1")}}
	inputs := []*kgo.Record{
		{Key: []byte("k1"), Headers: hdr, Value: []byte(`{"custom_id":"batch","method":"POST","url":"/v1/chat/completions","body":{"model":"grok-3-mini","messages":[{"role":"user","content":"hello batch"}],"x_vendor":{"a":[1,2.50,"<&>"]}}}`)},
		{Key: []byte("k2"), Value: []byte(`{"custom_id":"chat","messages":[{"role":"user","content":"hello chat"}],"temperature":0.2}`)},
		{Key: []byte("k3"), Value: []byte(`{"custom_id":"simple","prompt":"hello simple","system":"be brief"}`)},
		{Key: []byte("k4"), Headers: []kgo.RecordHeader{{Key: "custom_id", Value: []byte("from-header")}}, Value: []byte(`{"prompt":"hello header"}`)},
		{Key: []byte("k5"), Value: []byte(`{"custom_id":"flaky","prompt":"flaky"}`)},
		{Key: []byte("bad1"), Value: []byte(`not json`)},
		{Key: []byte("bad2"), Value: []byte(`{"custom_id":"no-messages","model":"grok-4"}`)},
		{Key: []byte("bad3"), Value: []byte(`{"custom_id":"embeddings","method":"POST","url":"/v1/images/generations","body":{"prompt":"x"}}`)},
		{Key: []byte("bad4"), Value: []byte(`{"custom_id":"status","prompt":"status-400"}`)},
		{Key: []byte("bad5"), Value: []byte(`{"custom_id":"exhausted","prompt":"status-500"}`)},
	}
	s.produce(t, inputs...)
	s.member(t)

	results := decodeResults(t, s.collect(t, "completions", len(inputs)))
	dlq := s.collect(t, "prompts.dlq", 5)

	for _, id := range []string{"batch", "chat", "simple", "from-header", "flaky"} {
		r, ok := results[id]
		if !ok {
			t.Fatalf("no result for %s; have %v", id, results)
		}
		if r.Error != nil || r.Response == nil || r.Response.StatusCode != 200 {
			t.Errorf("%s: want success, got %+v", id, r)
			continue
		}
		if r.Response.RequestID == nil || !strings.HasPrefix(*r.Response.RequestID, "req-") {
			t.Errorf("%s: request_id = %v", id, r.Response.RequestID)
		}
		if r.Source.Topic != "prompts" || r.ID == "" {
			t.Errorf("%s: source/id = %+v %q", id, r.Source, r.ID)
		}
	}
	if got := results["flaky"].Attempts; got != 2 {
		t.Errorf("flaky attempts = %d, want 2", got)
	}
	if !bytes.Contains(s.api.bodies["hello batch"], []byte(`"x_vendor":{"a":[1,2.50,"<&>"]}`)) {
		t.Errorf("vendor field not passed byte-for-byte: %s", s.api.bodies["hello batch"])
	}
	if bytes.Contains(s.api.bodies["hello chat"], []byte("custom_id")) || !bytes.Contains(s.api.bodies["hello chat"], []byte(`"model":"grok-4"`)) {
		t.Errorf("chat body = %s, want custom_id removed and default model", s.api.bodies["hello chat"])
	}
	wantCodes := map[string]string{
		"prompts-": record.CodeInvalidInput, "no-messages": record.CodeInvalidInput,
		"embeddings": record.CodeUnsupportedURL, "status": record.CodeAPIError, "exhausted": record.CodeRetriesExhausted,
	}
	for id, code := range wantCodes {
		var r record.Result
		for cid, rr := range results {
			if cid == id || (id == "prompts-" && strings.HasPrefix(cid, "prompts-")) {
				r = rr
			}
		}
		if r.Error == nil || r.Error.Code != code {
			t.Errorf("%s: error = %+v, want code %s", id, r.Error, code)
		}
	}
	if r := results["status"]; r.Response == nil || r.Response.StatusCode != 400 || r.Attempts != 1 {
		t.Errorf("status-400 result = %+v, want status 400 after 1 attempt", r)
	}
	if r := results["exhausted"]; r.Attempts != 3 {
		t.Errorf("status-500 attempts = %d, want 3", r.Attempts)
	}

	// Dead letters carry the input key and value byte-for-byte.
	byKey := map[string]*kgo.Record{}
	for _, in := range inputs {
		byKey[string(in.Key)] = in
	}
	for _, d := range dlq {
		in := byKey[string(d.Key)]
		if in == nil || !bytes.Equal(in.Value, d.Value) || !strings.HasPrefix(string(d.Key), "bad") {
			t.Errorf("dead letter key=%q value=%q does not match an invalid input", d.Key, d.Value)
			continue
		}
		h := map[string]string{}
		for _, x := range d.Headers {
			h[x.Key] = string(x.Value)
		}
		if h[record.HeaderErrorCode] == "" || h[record.HeaderSourceTopic] != "prompts" || h[record.HeaderSourceOffset] != fmt.Sprint(in.Offset) {
			t.Errorf("dead letter headers = %v", h)
		}
	}
	// Input keys and headers are kept on results.
	for _, r := range s.collect(t, "completions", len(inputs)) {
		if string(r.Key) == "k1" && (len(r.Headers) != 1 || string(r.Headers[0].Value) != "t-1") {
			t.Errorf("k1 result headers = %v", r.Headers)
		}
	}
}

// TestPipelineCommitsOnlyAfterResults checks that after a clean stop the
// committed offsets are exactly past every input, and a second member
// started afterwards makes no API call (nothing is redone).
func TestPipelineCommitsOnlyAfterResults(t *testing.T) {
	s := newTestStack(t, 4)
	const n = 200
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"p-%d"}`, i, i)})
	}
	s.produce(t, recs...)
	stop := s.member(t)
	results := decodeResults(t, s.collect(t, "completions", n))
	if len(results) != n {
		t.Fatalf("got %d distinct results, want %d", len(results), n)
	}
	if err := stop(); err != nil {
		t.Fatalf("member stopped with %v", err)
	}
	ends := map[int32]int64{}
	for _, r := range recs {
		ends[r.Partition] = max(ends[r.Partition], r.Offset+1)
	}
	if got := s.committed(t); fmt.Sprint(got) != fmt.Sprint(ends) {
		t.Fatalf("committed = %v, want %v", got, ends)
	}
	calls := s.api.calls.Load()
	stop2 := s.member(t)
	// A marker record proves the second member is consuming; it must be
	// the only call it makes.
	s.produce(t, &kgo.Record{Value: []byte(`{"custom_id":"marker","prompt":"marker"}`)})
	s.collect(t, "completions", n+1)
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if got := s.api.calls.Load() - calls; got != 1 {
		t.Fatalf("restarted member made %d API calls, want 1 (nothing redone)", got)
	}
}

// TestPipelineDrainAbandonsWithoutCommit stops a member while some records
// are stuck in API calls: it must not commit past them, and the next member
// must give them their results (nothing lost).
func TestPipelineDrainAbandonsWithoutCommit(t *testing.T) {
	s := newTestStack(t, 1)
	s.cfg.DrainTimeout = 100 * time.Millisecond
	var recs []*kgo.Record
	for i := range 20 {
		text := fmt.Sprintf("p-%d", i)
		if i == 5 {
			text = "slow-5"
		}
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":%q}`, i, text)})
	}
	s.produce(t, recs...)
	stop := s.member(t)
	s.collect(t, "completions", 19) // all but the stuck one
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := s.committed(t)[0]; got != 5 {
		t.Fatalf("committed offset = %d, want 5 (the stuck record)", got)
	}
	s.api.unblock()
	s.member(t)
	// The commit's offset map lists 6..19 as done: only the stuck record
	// is redone.
	all := s.collect(t, "completions", 20)
	seen := map[string]int{}
	for _, r := range all {
		var res record.Result
		_ = json.Unmarshal(r.Value, &res)
		seen[res.CustomID]++
	}
	for i := range 20 {
		if n := seen[fmt.Sprintf("c-%d", i)]; n != 1 {
			t.Errorf("c-%d has %d results, want 1", i, n)
		}
	}
	waitFor(t, 10*time.Second, "offset 20 committed after the redo", func() bool { return s.committed(t)[0] == 20 })
}

// TestPipelineRebalanceNoLoss moves partitions between members mid-run.
func TestPipelineRebalanceNoLoss(t *testing.T) {
	s := newTestStack(t, 8)
	const n = 600
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"p-%d"}`, i, i)})
	}
	stopA := s.member(t)
	s.produce(t, recs[:n/3]...)
	s.collect(t, "completions", n/6)
	stopB := s.member(t)
	s.produce(t, recs[n/3:2*n/3]...)
	s.collect(t, "completions", n/2)
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	s.produce(t, recs[2*n/3:]...)
	all := s.collect(t, "completions", n)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range all {
		var res record.Result
		_ = json.Unmarshal(r.Value, &res)
		seen[res.CustomID]++
	}
	dups := 0
	for i := range n {
		c := seen[fmt.Sprintf("c-%d", i)]
		if c == 0 {
			t.Errorf("c-%d lost", i)
		}
		dups += max(c-1, 0)
	}
	// Clean handovers commit before releasing: nothing is redone.
	if dups != 0 {
		t.Errorf("%d duplicate results after clean rebalances, want 0", dups)
	}
}
