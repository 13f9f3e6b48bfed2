package batchjob

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/record"
)

// Publisher publishes the result of an input record, and its dead
// letter when it failed (producer.Publisher). done is called once: nil
// once the brokers acknowledged every output.
type Publisher interface {
	Publish(ctx context.Context, in *kgo.Record, res *record.Result, done func(error))
}

// XAIBatches is what a Runner needs of xAI's Batch API (*batchapi.XAI).
type XAIBatches interface {
	Create(ctx context.Context, name string) (batchapi.Batch, error)
	Add(ctx context.Context, id string, reqs []batchapi.Request) error
	Get(ctx context.Context, id string) (batchapi.Batch, error)
	Results(ctx context.Context, id, pageToken string) ([]batchapi.Result, string, error)
	Cancel(ctx context.Context, id string) (batchapi.Batch, error)
}

// OpenAIBatches is what a Runner needs of OpenAI's Batch API
// (*batchapi.OpenAI).
type OpenAIBatches interface {
	Upload(ctx context.Context, filename string, lines batchapi.Lines) (string, error)
	Create(ctx context.Context, fileID, url string, metadata map[string]string) (batchapi.Batch, error)
	Get(ctx context.Context, id string) (batchapi.Batch, error)
	List(ctx context.Context, after string, limit int) ([]batchapi.Batch, string, error)
	Results(ctx context.Context, fileID string, fn func(batchapi.Result) error) error
	Cancel(ctx context.Context, id string) (batchapi.Batch, error)
	DeleteFile(ctx context.Context, id string) error
}

// Observer is told what the runner does (metrics); every method may be
// called concurrently.
type Observer interface {
	// BatchState reports a provider batch's state change (from is ""
	// for a new batch).
	BatchState(api, from, to string)
	// BatchResult reports one published batch-tier result and its cost
	// in xAI ticks (0 when unknown).
	BatchResult(res *record.Result)
}

// RunnerConfig tunes a Runner.
type RunnerConfig struct {
	// JobsTopic and Group: the jobs group ("<group>.batches") over it.
	JobsTopic string
	Group     string
	// PollInterval paces the reads of a provider batch's state.
	PollInterval time.Duration
	// MaxWait is SLUICE_BATCH_MAX_WAIT: a job with chunks and no seal for
	// twice as long (its gatherer died) is sealed by its owner.
	MaxWait time.Duration
	// Parse rebuilds a request's body from its input value, as the
	// gatherer's replica parsed it (DefaultModel, Endpoint).
	Parse record.Options
	// XAI or OpenAI is the provider's Batch API, by a chunk's api.
	XAI    XAIBatches
	OpenAI OpenAIBatches
	// Observer, when set, is told of state changes and results.
	Observer Observer
	// StepTimeout bounds one step of one job (default 2m).
	StepTimeout time.Duration
	// Connect are the options that reach the cluster (seed brokers, TLS,
	// SASL): the runner reads a chunk's input values back from the jobs
	// topic with a client of its own when it needs them (adding the
	// chunk, dead letters), and holds no value in memory otherwise.
	Connect []kgo.Opt
	// TransactionalID, when set, makes the runner exactly-once: a job's
	// results, dead letters and its final job records commit in one
	// Kafka transaction (and every other write in one of its own).
	TransactionalID string
}

// Runner owns the jobs of the jobs topic partitions the group gives its
// member: it rebuilds their state from the topic on assignment, creates
// their provider batches, adds their requests (at most once), polls
// them, and publishes their results. Build the kgo client with
// ClientOpts, then Run.
type Runner struct {
	cfg RunnerConfig
	log zerolog.Logger
	now func() time.Time

	cl   *kgo.Client
	pub  Publisher
	wake chan struct{}

	mu    sync.Mutex
	parts map[int32]*jobsPartition

	// readMu: one chunk is read back at a time (loadChunk).
	readMu sync.Mutex
}

type jobsPartition struct {
	id       int32
	end      int64 // the end offset at assignment; -1 until known
	lastSeen int64
	quietAt  time.Time // when the last record was seen
	loaded   bool
	jobs     map[string]*jobState
	// seen maps the request ids of the live jobs to their job: the first
	// copy of a record gathered twice is kept, the others dropped.
	seen map[string]string
}

type jobState struct {
	id        string
	partition int32
	// chunks are the job's chunks without their input values (see
	// Runner.loadChunk); offsets their records' offsets in the jobs
	// partition, to read the values back.
	chunks    map[int]Chunk
	offsets   map[int]int64
	seal      *Seal
	job       Job
	hasJob    bool
	cancel    bool
	ids       []string  // its requests' ids, kept (for seen)
	lastWrite time.Time // the latest chunk's or seal's timestamp
	nextPoll  time.Time
	// polled and pending are the provider's count as last read, for
	// Jobs (under Runner.mu; job is the stepping goroutine's).
	polled  bool
	pending int
}

// NewRunner returns a Runner for cfg.
func NewRunner(cfg RunnerConfig, log zerolog.Logger) *Runner {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = time.Minute
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 2 * time.Minute
	}
	return &Runner{cfg: cfg, log: log, now: time.Now, wake: make(chan struct{}, 1), parts: make(map[int32]*jobsPartition)}
}

// ClientOpts are the options of the jobs group's client: no committed
// offsets (every assignment reads its partitions from the start, the
// topic is compacted), cooperative rebalances, control records kept so
// that the end of a partition is seen.
func (r *Runner) ClientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(r.cfg.Group),
		kgo.ConsumeTopics(r.cfg.JobsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.dropped),
		kgo.OnPartitionsLost(r.dropped),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	}
	if r.cfg.TransactionalID != "" {
		opts = append(opts, kgo.TransactionalID(r.cfg.TransactionalID))
	}
	return opts
}

func (r *Runner) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	r.mu.Lock()
	var ps []int32
	for _, p := range assigned[r.cfg.JobsTopic] {
		r.parts[p] = &jobsPartition{id: p, end: -1, lastSeen: -1, quietAt: r.now(), jobs: map[string]*jobState{}, seen: map[string]string{}}
		ps = append(ps, p)
	}
	r.mu.Unlock()
	// Owned by the client: ctx ends when it leaves the group or closes.
	go r.loadEnds(ctx, kadm.NewClient(cl), ps)
}

// loadEnds learns where the assigned partitions ended when they were
// assigned: up to there the state is rebuilt before any job is acted on.
func (r *Runner) loadEnds(ctx context.Context, adm *kadm.Client, ps []int32) {
	for ctx.Err() == nil {
		ends, err := adm.ListEndOffsets(ctx, r.cfg.JobsTopic)
		if err == nil {
			r.mu.Lock()
			for _, p := range ps {
				if jp := r.parts[p]; jp != nil {
					if o, ok := ends.Lookup(r.cfg.JobsTopic, p); ok && o.Err == nil {
						jp.end, jp.quietAt = o.Offset, r.now()
						r.checkLoadedLocked(jp)
					}
				}
			}
			r.mu.Unlock()
			r.poke()
			return
		}
		r.log.Warn().Err(err).Str("topic", r.cfg.JobsTopic).Msg("cannot list the jobs topic's end offsets; retrying")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Runner) dropped(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range lost[r.cfg.JobsTopic] {
		delete(r.parts, p)
	}
}

// loadQuiet is how long a partition being loaded may yield no record
// before it is taken as loaded (its last records were compacted away).
const loadQuiet = 5 * time.Second

// checkLoadedLocked marks jp loaded once its records up to its end at
// assignment were read, or it was quiet for loadQuiet after its end was
// known.
func (r *Runner) checkLoadedLocked(jp *jobsPartition) {
	if jp.loaded || jp.end < 0 {
		return
	}
	if jp.lastSeen+1 >= jp.end || r.now().Sub(jp.quietAt) > loadQuiet {
		jp.loaded = true
		r.log.Debug().Str("topic", r.cfg.JobsTopic).Int32("partition", jp.id).Int("jobs", len(jp.jobs)).Msg("batch jobs loaded")
	}
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run consumes the jobs topic through cl (built with ClientOpts) and
// acts on the loaded jobs, publishing their results through pub, until
// ctx ends.
func (r *Runner) Run(ctx context.Context, cl *kgo.Client, pub Publisher) error {
	if len(r.cfg.Connect) == 0 {
		return errors.New("batchjob: RunnerConfig.Connect is empty: chunks could not be read back")
	}
	r.cl, r.pub = cl, pub
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.act(ctx) }()
	defer wg.Wait()
	for {
		fetches := cl.PollRecords(ctx, 1000)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				r.log.Warn().Err(err).Str("topic", t).Int32("partition", p).Msg("jobs topic fetch error")
			}
		})
		r.mu.Lock()
		fetches.EachRecord(r.applyLocked)
		for _, jp := range r.parts {
			r.checkLoadedLocked(jp)
		}
		r.mu.Unlock()
		r.poke()
	}
}

// applyLocked applies one record of the jobs topic to the state.
func (r *Runner) applyLocked(rec *kgo.Record) {
	jp := r.parts[rec.Partition]
	if jp == nil {
		return
	}
	jp.lastSeen, jp.quietAt = max(jp.lastSeen, rec.Offset), r.now()
	if rec.Attrs.IsControl() {
		return
	}
	id, kind, seq, ok := ParseKey(rec.Key)
	if !ok {
		return
	}
	js := jp.jobs[id]
	if js == nil {
		if rec.Value == nil {
			return
		}
		js = &jobState{id: id, partition: rec.Partition, chunks: map[int]Chunk{}, offsets: map[int]int64{}}
		jp.jobs[id] = js
	}
	var err error
	switch kind {
	case KindChunk:
		if rec.Value == nil {
			delete(js.chunks, seq)
			delete(js.offsets, seq)
			break
		}
		var c Chunk
		if c, err = DecodeChunk(rec.Value); err == nil {
			if held, again := js.chunks[seq]; again {
				c.Requests = held.Requests // the same chunk written again
			} else {
				c.Requests = r.firstCopies(jp, js, c.Requests)
			}
			// The values are read back when needed: memory holds the
			// coordinates, keys and headers of the pending requests,
			// not their prompts.
			for i := range c.Requests {
				c.Requests[i].Value = nil
			}
			js.chunks[seq], js.offsets[seq] = c, rec.Offset
			js.lastWrite = rec.Timestamp
		}
	case KindSeal:
		if rec.Value == nil {
			js.seal = nil
			break
		}
		var s Seal
		if s, err = DecodeSeal(rec.Value); err == nil {
			js.seal, js.lastWrite = &s, rec.Timestamp
		}
	case KindCancel:
		js.cancel = rec.Value != nil
	case KindJob:
		if rec.Value == nil {
			for _, q := range js.ids {
				if jp.seen[q] == id {
					delete(jp.seen, q)
				}
			}
			delete(jp.jobs, id) // written last, once done
			break
		}
		if jp.loaded {
			break // the owner's own write: its memory is ahead
		}
		var j Job
		if j, err = DecodeJob(rec.Value); err == nil {
			js.job, js.hasJob = j, true
		}
	}
	if err != nil {
		r.log.Warn().Err(err).Str("topic", rec.Topic).Int32("partition", rec.Partition).Int64("offset", rec.Offset).Msg("skipping a jobs record this build cannot read")
	}
}

// firstCopies returns the requests of a chunk of js that no live job of
// jp holds already, in order, and notes them as seen: a record whose
// offset was not committed before a crash is gathered again, and only
// its first copy is sent.
func (r *Runner) firstCopies(jp *jobsPartition, js *jobState, reqs []Request) []Request {
	kept := reqs[:0]
	for _, q := range reqs {
		if owner, dup := jp.seen[q.ID]; dup {
			r.log.Debug().Str("job", js.id).Str("first_job", owner).Str("request", q.ID).Msg("dropping a record gathered twice")
			continue
		}
		jp.seen[q.ID] = js.id
		js.ids = append(js.ids, q.ID)
		kept = append(kept, q)
	}
	return kept
}

// act steps the loaded jobs, one at a time, until ctx ends.
func (r *Runner) act(ctx context.Context) {
	tick := time.NewTicker(min(r.cfg.PollInterval, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-r.wake:
		}
		for _, js := range r.due() {
			if ctx.Err() != nil {
				return
			}
			sctx, cancel := context.WithTimeout(ctx, r.cfg.StepTimeout)
			err := r.step(sctx, js)
			cancel()
			if err != nil && ctx.Err() == nil {
				r.failed(js, err)
			}
		}
	}
}

// due returns the jobs of loaded partitions whose next step is due.
func (r *Runner) due() []*jobState {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*jobState
	now := r.now()
	for _, jp := range r.parts {
		r.checkLoadedLocked(jp)
		if !jp.loaded {
			continue
		}
		for _, js := range jp.jobs {
			if !js.nextPoll.After(now) && len(js.chunks) > 0 {
				out = append(out, js)
			}
		}
	}
	return out
}

// Jobs reports the jobs this member owns now: how many, their requests
// without a result (the provider's count once read, else all of them),
// and when the oldest of those was gathered.
func (r *Runner) Jobs() (open, pending int, oldest time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, jp := range r.parts {
		for _, js := range jp.jobs {
			if len(js.chunks) == 0 {
				continue
			}
			open++
			n := 0
			for _, c := range js.chunks {
				n += len(c.Requests)
				for _, q := range c.Requests {
					if oldest.IsZero() || q.Gathered.Before(oldest) {
						oldest = q.Gathered
					}
				}
			}
			if js.polled {
				n = js.pending
			}
			pending += n
		}
	}
	return open, pending, oldest
}

// failed logs a failed step of js and puts its next one a poll interval
// away, or as far as a 429 asked (capped at an hour). A 429 is routine
// where replicas share the provider's batch limits (xAI: one creation a
// second), so it is logged at info.
func (r *Runner) failed(js *jobState, err error) {
	wait := r.cfg.PollInterval
	ev := r.log.Warn()
	var se *api.StatusError
	if errors.As(err, &se) && se.Response != nil && se.Response.StatusCode == 429 {
		ev = r.log.Info()
		wait = max(wait, min(se.RetryAfter, time.Hour))
	}
	ev.Err(err).Str("job", js.id).Stringer("retry_in", wait).Msg("batch job step failed; retrying")
	r.mu.Lock()
	defer r.mu.Unlock()
	js.nextPoll = r.now().Add(wait)
}

// later puts js's next step a poll interval away.
func (r *Runner) later(js *jobState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	js.nextPoll = r.now().Add(r.cfg.PollInterval)
}

// owned reports whether js's partition is still this member's.
func (r *Runner) owned(js *jobState) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	jp := r.parts[js.partition]
	return jp != nil && jp.jobs[js.id] == js
}

// snapshot copies what a step reads of js under the lock.
func (r *Runner) snapshot(js *jobState) (chunks []Chunk, seal *Seal, cancel bool, lastWrite time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range js.chunks {
		chunks = append(chunks, c)
	}
	slices.SortFunc(chunks, func(a, b Chunk) int { return a.Seq - b.Seq })
	if js.seal != nil {
		s := *js.seal
		seal = &s
	}
	return chunks, seal, js.cancel, js.lastWrite
}

// txn runs fn in a transaction of its own when the runner is
// exactly-once (committed when fn succeeds, aborted otherwise), else
// just runs it.
func (r *Runner) txn(ctx context.Context, fn func() error) error {
	if r.cfg.TransactionalID == "" {
		return fn()
	}
	if err := r.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	err := fn()
	try := kgo.TryCommit
	if err != nil {
		try = kgo.TryAbort
	}
	if eerr := r.cl.EndTransaction(context.WithoutCancel(ctx), try); eerr != nil && err == nil {
		err = fmt.Errorf("end transaction: %w", eerr)
	}
	return err
}

// save writes js's Job (the owner's progress) and waits for it.
func (r *Runner) save(ctx context.Context, js *jobState) error {
	return r.txn(ctx, func() error { return r.writeJob(ctx, js) })
}

// writeJob writes js's Job, in the open transaction if any.
func (r *Runner) writeJob(ctx context.Context, js *jobState) error {
	js.job.Updated = r.now()
	value, err := Encode(js.job)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: r.cfg.JobsTopic, Partition: js.partition, Key: []byte(JobKey(js.id)), Value: value}
	if err := r.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("write job %s: %w", js.id, err)
	}
	js.hasJob = true
	return nil
}

// step takes js one step further.
func (r *Runner) step(ctx context.Context, js *jobState) error {
	if !r.owned(js) {
		return nil
	}
	chunks, seal, cancel, lastWrite := r.snapshot(js)
	if len(chunks) == 0 {
		return nil
	}
	if !js.hasJob {
		c := chunks[0]
		js.job = Job{ID: js.id, API: c.API, Endpoint: c.Endpoint, Model: c.Model, Step: StepGathering, Created: r.now()}
	}
	if seal == nil && r.now().Sub(lastWrite) > 2*r.cfg.MaxWait {
		s, err := r.sealStale(ctx, js, chunks)
		if err != nil {
			return err
		}
		seal = s
	}
	if seal != nil && js.job.Step == StepGathering {
		js.job.Step = StepSealed
	}
	js.job.Chunks = len(chunks)
	if r.ready(chunks, seal) && !slices.ContainsFunc(chunks, func(c Chunk) bool { return len(c.Requests) > 0 }) {
		// Every record of the job was a second copy of one gathered
		// before: nothing to send.
		return r.publish(ctx, js, chunks, batchapi.Batch{ID: js.job.BatchID}, nil)
	}
	switch js.job.API {
	case "xai":
		return r.stepXAI(ctx, js, chunks, seal, cancel)
	case "openai":
		return r.stepOpenAI(ctx, js, chunks, seal, cancel)
	}
	return fmt.Errorf("job %s: unknown api %q", js.id, js.job.API)
}

// sealStale seals a job whose gatherer stopped writing.
func (r *Runner) sealStale(ctx context.Context, js *jobState, chunks []Chunk) (*Seal, error) {
	s := Seal{Job: js.id, Sealed: r.now()}
	for _, c := range chunks {
		s.Chunks = max(s.Chunks, c.Seq+1)
		s.Written = append(s.Written, c.Seq)
		s.Requests += len(c.Requests)
	}
	value, err := Encode(s)
	if err != nil {
		return nil, err
	}
	rec := &kgo.Record{Topic: r.cfg.JobsTopic, Partition: js.partition, Key: []byte(SealKey(js.id)), Value: value}
	if err := r.txn(ctx, func() error { return r.cl.ProduceSync(ctx, rec).FirstErr() }); err != nil {
		return nil, fmt.Errorf("seal stale job %s: %w", js.id, err)
	}
	r.mu.Lock()
	js.seal = &s
	r.mu.Unlock()
	r.log.Info().Str("job", js.id).Int("requests", s.Requests).Msg("batch job sealed by its owner: its gatherer stopped writing")
	return &s, nil
}

// ready reports whether the job holds all it will: every chunk its
// seal lists, or, twice SLUICE_BATCH_MAX_WAIT after the seal, those that
// came (a chunk written in a transaction that then aborted never comes:
// its records were gathered again, into another job).
func (r *Runner) ready(chunks []Chunk, seal *Seal) bool {
	if seal == nil {
		return false
	}
	return complete(chunks, seal) || r.now().Sub(seal.Sealed) > 2*r.cfg.MaxWait
}

// complete reports whether every chunk the seal lists is here.
func complete(chunks []Chunk, seal *Seal) bool {
	if seal == nil {
		return false
	}
	for _, seq := range seal.Written {
		if !slices.ContainsFunc(chunks, func(c Chunk) bool { return c.Seq == seq }) {
			return false
		}
	}
	return true
}

// observe records the provider's state and counts, logging a change.
func (r *Runner) observe(ctx context.Context, js *jobState, b batchapi.Batch) error {
	from := batchapi.State(js.job.ProviderState)
	changed := from != b.State || js.job.Pending != b.Pending
	js.job.ProviderState, js.job.Pending, js.job.Succeeded, js.job.Failed, js.job.Cancelled = string(b.State), b.Pending, b.Succeeded, b.Failed, b.Cancelled
	js.job.CostUSDTicks = b.CostUSDTicks
	r.mu.Lock()
	js.polled, js.pending = true, b.Pending
	r.mu.Unlock()
	if from != b.State {
		r.stateChange(js, from, b.State)
	}
	if changed {
		return r.save(ctx, js)
	}
	return nil
}

func (r *Runner) stateChange(js *jobState, from, to batchapi.State) {
	r.log.Info().Str("job", js.id).Str("api", js.job.API).Str("batch_id", js.job.BatchID).
		Str("from", string(from)).Str("state", string(to)).Int("pending", js.job.Pending).
		Int("succeeded", js.job.Succeeded).Int("failed", js.job.Failed).Int("cancelled", js.job.Cancelled).Msg("batch state changed")
	if r.cfg.Observer != nil {
		r.cfg.Observer.BatchState(js.job.API, string(from), string(to))
	}
}
