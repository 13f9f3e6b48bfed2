package batchjob

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/internal/mockapi"
	"github.com/sluice-dev/sluice/producer"
	"github.com/sluice-dev/sluice/record"
)

// watchdog bounds a wait that only a hang would exhaust: on a loaded
// 2-core machine a healthy wait takes seconds, sometimes a minute.
const watchdog = 5 * time.Minute

const (
	jobsTopic = "prompts.batches"
	outTopic  = "completions"
	dlqTopic  = "prompts.dlq"
	jobsParts = 4
)

// env is a Kafka (kfake) and a provider (the simulator) for the batch
// tier.
type env struct {
	t     testing.TB
	addrs []string
	mock  *mockapi.Server
	xai   *batchapi.XAI
	oai   *batchapi.OpenAI
	last  *Runner       // the runner started last
	poll  time.Duration // the runners' poll interval, 30ms when 0

	mu  sync.Mutex
	new int64 // state changes from "" (a batch created) the runners reported
}

// BatchState and BatchResult make env the runners' Observer.
func (e *env) BatchState(_, from, _ string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if from == "" {
		e.new++
	}
}

func (e *env) BatchResult(*record.Result) {}

func newEnv(t testing.TB, mcfg mockapi.Config) *env {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(jobsParts, jobsTopic), kfake.SeedTopics(1, outTopic, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	mock := mockapi.New(mcfg)
	srv := httptest.NewServer(mock)
	t.Cleanup(srv.Close)
	t.Cleanup(mock.Close)
	ac, err := api.New(api.Config{BaseURL: srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, addrs: c.ListenAddrs(), mock: mock, xai: batchapi.NewXAI(ac), oai: batchapi.NewOpenAI(ac)}
}

func (e *env) client(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

// gather gathers n records of input partition p (offsets from..from+n)
// and seals them, waiting for every ack.
func (e *env) gather(api string, p int32, from, n int) {
	e.t.Helper()
	e.gatherChunks(api, p, from, n, 7)
}

// gatherChunks is gather with chunks of up to chunk requests.
func (e *env) gatherChunks(api string, p int32, from, n, chunk int, size ...int) {
	e.t.Helper()
	cl := e.client()
	g := NewGatherer(cl, GatherConfig{JobsTopic: jobsTopic, Partitions: jobsParts, API: api, MaxRequests: 10000, MaxWait: time.Minute, ChunkRequests: chunk}, zerolog.Nop())
	var wg sync.WaitGroup
	for i := range n {
		off := int64(from + i)
		rec := &kgo.Record{Topic: "prompts", Partition: p, Offset: off, Key: []byte(fmt.Sprint("k", off)),
			Value:   inputValueOf(p, off, append(size, 2000)[0]),
			Headers: []kgo.RecordHeader{{Key: record.HeaderTier, Value: []byte("batch")}}}
		wg.Add(1)
		if err := g.Add(rec, fmt.Sprintf("c-%d-%d", p, off), "/v1/chat/completions", "grok-4", func(err error) {
			if err != nil {
				e.t.Errorf("ack %d: %v", off, err)
			}
			wg.Done()
		}); err != nil {
			e.t.Fatal(err)
		}
	}
	wg.Wait()
	if err := g.Close(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// inputValue is the value of the input record at partition p, offset
// off: a prompt of about 2 KB.
func inputValue(p int32, off int64) []byte { return inputValueOf(p, off, 2000) }

// inputValueOf is inputValue with a prompt of about size bytes.
func inputValueOf(p int32, off int64, size int) []byte {
	return fmt.Appendf(nil, `{"custom_id":"c-%d-%d","model":"grok-4","messages":[{"role":"user","content":"q %d %s"}]}`, p, off, off, strings.Repeat("x", size))
}

// runner starts a runner member of the jobs group; stop ends it (as a
// crash does: its client is closed, nothing is drained).
func (e *env) runner(txnID ...string) (stop func()) {
	e.t.Helper()
	r := NewRunner(RunnerConfig{
		JobsTopic: jobsTopic, Group: "sluice.batches", PollInterval: cmp.Or(e.poll, 30*time.Millisecond), MaxWait: time.Minute,
		Parse: record.Options{DefaultModel: "grok-4"}, XAI: e.xai, OpenAI: e.oai, TransactionalID: strings.Join(txnID, ""),
		Connect: []kgo.Opt{kgo.SeedBrokers(e.addrs...)}, Observer: e,
	}, zerolog.Nop())
	cl := e.client(r.ClientOpts()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx, cl, producer.NewPublisher(cl, outTopic, dlqTopic)) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; cl.Close() }) }
	e.t.Cleanup(stop)
	e.last = r
	return stop
}

// results reads the output topic until want distinct results (by
// source offset) arrived, and returns them by custom_id.
func (e *env) results(want int) map[string]record.Result {
	e.t.Helper()
	cl := e.client(kgo.ConsumeTopics(outTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	got := map[string]record.Result{}
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("%d of %d results", len(got), want)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			var r record.Result
			if err := json.Unmarshal(rec.Value, &r); err != nil {
				e.t.Fatal(err)
			}
			got[r.CustomID] = r
		})
	}
	return got
}

// jobsLeft counts the live (not tombstoned) job records.
func (e *env) jobsLeft() int {
	e.t.Helper()
	cl := e.client(kgo.ConsumeTopics(jobsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	live := map[string]bool{}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachRecord(func(rec *kgo.Record) { live[string(rec.Key)] = rec.Value != nil })
	}
	n := 0
	for _, l := range live {
		if l {
			n++
		}
	}
	return n
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"xai", "openai"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mockapi.Config{BatchDelay: 50 * time.Millisecond, BatchFail: 0.2, Models: []string{"grok-4"}, Seed: 5})
			e.runner()
			e.gather(provider, 0, 0, 25)
			e.gather(provider, 1, 100, 15)
			got := e.results(40)
			failed := 0
			for id, r := range got {
				if r.Tier != "batch" || r.BatchID == "" || r.Attempts != 1 {
					t.Fatalf("%s: %+v", id, r)
				}
				if r.Error == nil {
					if r.Response == nil || r.Response.StatusCode != 200 || len(r.Response.Body) == 0 {
						t.Fatalf("%s: %+v", id, r)
					}
					if provider == "xai" && r.CostUSDTicks <= 0 {
						t.Fatalf("%s: no cost", id)
					}
					continue
				}
				failed++
				if r.Error.Code != record.CodeAPIError {
					t.Fatalf("%s: %+v", id, r.Error)
				}
			}
			if failed == 0 || failed == 40 {
				t.Fatalf("%d of 40 failed at a 20%% failure rate", failed)
			}
			st := e.mock.Stats().Batch
			if st.Duplicates != 0 || st.RequestsAdded != 40 {
				t.Fatalf("provider saw %+v", st)
			}
			if provider == "openai" {
				waitFor(t, func() bool { return e.mock.Stats().Batch.Files == 0 }, "the job's files deleted")
			}
			e.mu.Lock()
			if e.new != st.Batches {
				t.Errorf("%d batches reported new for %d created", e.new, st.Batches)
			}
			e.mu.Unlock()
			waitFor(t, func() bool { return e.jobsLeft() == 0 }, "the jobs tombstoned")
		})
	}
}

// TestNoDoubleAddAfterACrash: the owner recorded that it began adding a
// chunk, added it, and died before recording that it had. The next owner
// sees from the batch's count that the add happened and does not add
// again.
func TestNoDoubleAddAfterACrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t, mockapi.Config{BatchDelay: 50 * time.Millisecond, Seed: 6})
	e.gather("xai", 2, 0, 5) // one chunk, sealed
	// What the dead owner did: create, record "adding chunk 0", add.
	cl := e.client()
	var chunk Chunk
	var partition int32
	{
		rc := e.client(kgo.ConsumeTopics(jobsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		ctx, cancel := context.WithTimeout(context.Background(), watchdog)
		for chunk.Job == "" && ctx.Err() == nil {
			rc.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
				if _, kind, _, _ := ParseKey(rec.Key); kind == KindChunk {
					chunk, _ = DecodeChunk(rec.Value)
					partition = rec.Partition
				}
			})
		}
		cancel()
	}
	ctx := context.Background()
	b, err := e.xai.Create(ctx, "sluice-"+chunk.Job)
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	j := Job{V: Version, ID: chunk.Job, API: "xai", Endpoint: chunk.Endpoint, Model: chunk.Model, Step: StepSealed, Chunks: 1,
		BatchID: b.ID, Adding: &zero, TotalBefore: 0}
	value, _ := Encode(j)
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: jobsTopic, Partition: partition, Key: []byte(JobKey(j.ID)), Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := e.xai.Add(ctx, b.ID, ProviderRequests(chunk, record.Options{DefaultModel: "grok-4"})); err != nil {
		t.Fatal(err)
	}
	// The next owner.
	e.runner()
	got := e.results(5)
	for id, res := range got {
		if res.BatchID != b.ID || res.Error != nil {
			t.Fatalf("%s: %+v", id, res)
		}
	}
	if st := e.mock.Stats().Batch; st.Duplicates != 0 || st.RequestsAdded != 5 || st.Batches != 1 {
		t.Fatalf("provider saw %+v", st)
	}
}

// TestOwnerMovesWhilePolling: one member creates the batch and polls it;
// it stops (its partitions move), and another member, which rebuilds
// the job from the topic, publishes every result without adding any
// request again.
func TestOwnerMovesWhilePolling(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"xai", "openai"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mockapi.Config{BatchDelay: 700 * time.Millisecond, Seed: 8})
			first := e.runner()
			e.gather(provider, 3, 0, 12)
			waitFor(t, func() bool { return e.mock.Stats().Batch.RequestsAdded == 12 }, "the requests added")
			first()
			e.runner()
			got := e.results(12)
			if len(got) != 12 {
				t.Fatalf("%d results", len(got))
			}
			if st := e.mock.Stats().Batch; st.Duplicates != 0 || st.RequestsAdded != 12 {
				t.Fatalf("provider saw %+v", st)
			}
		})
	}
}

// TestExpiredAndCancelled: expired requests get code expired, a
// cancelled job's pending ones code cancelled; both are dead-lettered.
func TestExpiredAndCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, mockapi.Config{BatchDelay: 30 * time.Millisecond, BatchExpire: 1, Seed: 9})
	e.runner()
	e.gather("openai", 0, 0, 4)
	for id, r := range e.results(4) {
		if r.Error == nil || r.Error.Code != record.CodeExpired {
			t.Fatalf("%s: %+v", id, r)
		}
	}
	dl := e.client(kgo.ConsumeTopics(dlqTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	n := 0
	for n < 4 && ctx.Err() == nil {
		dl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
			n++
			// The input record byte for byte: the runner read its value
			// back from the jobs topic.
			var off int64
			if _, err := fmt.Sscanf(string(rec.Key), "k%d", &off); err != nil || !bytes.Equal(rec.Value, inputValue(0, off)) {
				t.Errorf("dead letter: key %q, value %.60q", rec.Key, rec.Value)
			}
		})
	}
	if n != 4 {
		t.Fatalf("%d dead letters", n)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(watchdog)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCancel: sluice batches reads the job from the topic and asks its
// owner to cancel it; the pending requests get code cancelled.
func TestCancel(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"xai", "openai"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mockapi.Config{BatchDelay: time.Hour, Seed: 10})
			e.runner()
			e.gather(provider, 1, 0, 3)
			cl := e.client()
			var job JobInfo
			waitFor(t, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), watchdog)
				defer cancel()
				jobs, err := ReadJobs(ctx, cl, jobsTopic)
				if err != nil {
					t.Fatal(err)
				}
				if len(jobs) == 1 && jobs[0].Job.BatchID != "" && jobs[0].Job.ProviderState != "" {
					job = jobs[0]
					return true
				}
				return false
			}, "the job submitted")
			if job.Requests != 3 || !job.Sealed || job.API != provider {
				t.Fatalf("job %+v", job)
			}
			if err := RequestCancel(context.Background(), cl, jobsTopic, job.Partition, job.ID); err != nil {
				t.Fatal(err)
			}
			for id, r := range e.results(3) {
				if r.Error == nil || r.Error.Code != record.CodeCancelled || r.BatchID != job.Job.BatchID {
					t.Fatalf("%s: %+v", id, r)
				}
			}
			if e.mock.Stats().Batch.Cancels != 1 {
				t.Fatalf("cancels %d", e.mock.Stats().Batch.Cancels)
			}
		})
	}
}

// TestExactlyOnce: a transactional runner's results are committed with
// the job's end: a read_committed reader sees each once, after the
// owner moved while polling.
func TestExactlyOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, mockapi.Config{BatchDelay: 500 * time.Millisecond, Seed: 11})
	first := e.runner("batches-0")
	e.gather("xai", 0, 0, 9)
	waitFor(t, func() bool { return e.mock.Stats().Batch.RequestsAdded == 9 }, "the requests added")
	first()
	e.runner("batches-1")
	if got := e.results(9); len(got) != 9 {
		t.Fatalf("%d results", len(got))
	}
	// Every committed result record, counted raw: no duplicate.
	cl := e.client(kgo.ConsumeTopics(outTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n := 0
	for ctx.Err() == nil {
		n += cl.PollFetches(ctx).NumRecords()
	}
	if n != 9 {
		t.Fatalf("%d committed results, want 9", n)
	}
	waitFor(t, func() bool { return e.jobsLeft() == 0 }, "the job tombstoned")
}

// TestRecordGatheredTwice: a replica crashed after its chunks were
// written and before the input offsets were committed; the partition's
// next owner gathers the same records again, into another job. Each
// request reaches the provider once and gets one result.
func TestRecordGatheredTwice(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"xai", "openai"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mockapi.Config{BatchDelay: 50 * time.Millisecond, Seed: 12})
			e.gather(provider, 2, 0, 10) // the crashed replica's
			e.gather(provider, 2, 5, 10) // the next owner's: offsets 5..14
			e.runner()
			got := e.results(15)
			if len(got) != 15 {
				t.Fatalf("%d results", len(got))
			}
			if st := e.mock.Stats().Batch; st.RequestsAdded != 15 || st.Duplicates != 0 {
				t.Fatalf("provider saw %+v, want 15 requests once each", st)
			}
			waitFor(t, func() bool { return e.jobsLeft() == 0 }, "both jobs tombstoned")
			// No record got two results.
			cl := e.client(kgo.ConsumeTopics(outTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n := 0
			for ctx.Err() == nil {
				n += cl.PollFetches(ctx).NumRecords()
			}
			if n != 15 {
				t.Fatalf("%d result records, want 15", n)
			}
		})
	}
}

// TestRunnerHoldsNoPrompts: the jobs a member owns wait up to a day for
// their provider batches; it holds their requests' coordinates, keys and
// headers, not their values, and reads a chunk back when it adds it.
func TestRunnerHoldsNoPrompts(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"xai", "openai"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mockapi.Config{BatchDelay: time.Hour, Seed: 13})
			e.runner()
			e.gather(provider, 1, 0, 30)
			waitFor(t, func() bool { return e.mock.Stats().Batch.RequestsAdded == 30 }, "the requests added")
			r := e.last
			r.mu.Lock()
			defer r.mu.Unlock()
			held, values := 0, 0
			for _, jp := range r.parts {
				for _, js := range jp.jobs {
					for _, c := range js.chunks {
						for _, q := range c.Requests {
							held++
							values += len(q.Value)
							if len(q.Key) == 0 || len(q.Headers) != 1 {
								t.Errorf("request %s: key %q, headers %v", q.ID, q.Key, q.Headers)
							}
						}
					}
				}
			}
			if held != 30 || values != 0 {
				t.Fatalf("the runner holds %d requests with %d bytes of values, want 30 with none", held, values)
			}
		})
	}
}

// TestJobSealedAtMaxJobBytes: with SLUICE_BATCH_API=openai a job is one
// input file, so the gatherer seals it before it would outgrow the
// file limit; the next record opens the next job.
func TestJobSealedAtMaxJobBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, mockapi.Config{})
	entry := entrySize(RequestOf(&kgo.Record{Topic: "prompts", Key: []byte("k0"), Value: inputValue(0, 0),
		Headers: []kgo.RecordHeader{{Key: record.HeaderTier, Value: []byte("batch")}}}, "c-0-0", time.Now()))
	g := NewGatherer(e.client(), GatherConfig{JobsTopic: jobsTopic, Partitions: jobsParts, API: "openai",
		MaxRequests: 10000, MaxWait: time.Minute, MaxJobBytes: int64(3*entry + entry/2)}, zerolog.Nop())
	var wg sync.WaitGroup
	for off := range int64(10) {
		rec := &kgo.Record{Topic: "prompts", Offset: off, Key: []byte(fmt.Sprint("k", off)), Value: inputValue(0, off)}
		wg.Add(1)
		if err := g.Add(rec, fmt.Sprintf("c-0-%d", off), "/v1/chat/completions", "grok-4", func(error) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := g.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	jobs, err := ReadJobs(context.Background(), e.client(), jobsTopic)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, j := range jobs {
		sizes = append(sizes, j.Requests)
	}
	if len(jobs) != 4 || sizes[0] != 3 || sizes[3] != 1 {
		t.Fatalf("jobs of %v requests, want 3, 3, 3, 1", sizes)
	}
}

// BenchmarkRunnerHeldBytes reports the heap an owner holds per pending
// batch-tier request (provider batches that do not end), for prompts of
// 2 KB and 20 KB: the heap with the owner's state loaded, less the heap
// once it is dropped. It does not grow with the prompt.
//
//	go test -run '^$' -bench RunnerHeldBytes -benchtime 1x ./internal/batchjob
func BenchmarkRunnerHeldBytes(b *testing.B) {
	for _, size := range []int{2000, 20000} {
		b.Run(fmt.Sprintf("prompt=%dB", size), func(b *testing.B) {
			const n = 4000
			for range b.N {
				e := newEnv(b, mockapi.Config{BatchDelay: time.Hour, Seed: 14})
				e.poll = time.Hour // quiet once added: the heap is the state's
				for p := range int32(4) {
					e.gatherChunks("xai", p, 0, n/4, 500, size)
				}
				stop := e.runner()
				deadline := time.Now().Add(5 * time.Minute)
				for e.mock.Stats().Batch.RequestsAdded < n && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				r := e.last
				// Two collections each: the second frees what sync.Pools
				// (the clients' compressors) kept from the first.
				var loaded, dropped runtime.MemStats
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&loaded)
				r.mu.Lock()
				r.parts = map[int32]*jobsPartition{}
				r.mu.Unlock()
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&dropped)
				stop()
				b.ReportMetric(float64(int64(loaded.HeapAlloc)-int64(dropped.HeapAlloc))/n, "held-B/request")
			}
		})
	}
}
