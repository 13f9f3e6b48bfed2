package batchjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrTooLarge is returned by Gatherer.Add for a record whose chunk entry
// alone exceeds GatherConfig.MaxEntryBytes: it cannot be held in the
// jobs topic, so it gets an error result instead.
var ErrTooLarge = errors.New("batchjob: record too large for the jobs topic")

// errClosed is returned by Gatherer.Add after Close.
var errClosed = errors.New("batchjob: gatherer closed")

// GatherConfig tunes a Gatherer.
type GatherConfig struct {
	// JobsTopic and its partition count.
	JobsTopic  string
	Partitions int32
	// API is the provider's Batch API ("xai" or "openai"), recorded in
	// every chunk.
	API string
	// MaxRequests and MaxWait seal a job (SLUICE_BATCH_MAX_REQUESTS,
	// SLUICE_BATCH_MAX_WAIT).
	MaxRequests int
	MaxWait     time.Duration
	// ChunkRequests and ChunkBytes bound one chunk record (default 500
	// requests, 512 KiB); Linger is how long a chunk waits to fill
	// (default 50ms): a batch-tier record's offset commits about Linger
	// after it arrived.
	ChunkRequests int
	ChunkBytes    int
	Linger        time.Duration
	// MaxJobBytes, when positive, seals a job before its entries would
	// exceed it (SLUICE_BATCH_API=openai: the input file limit, which the
	// entries' size, base64 values and all, overstates).
	MaxJobBytes int64
	// MaxEntryBytes bounds one record's entry (default 900 KiB, within
	// Kafka's default max.message.bytes of 1 MiB).
	MaxEntryBytes int
	// Gate, when set, is held around every produce (exactly-once: the
	// consumer's transaction boundary, so a chunk commits with the input
	// offsets of its records).
	Gate sync.Locker
}

// Gatherer gathers batch-tier records into jobs, per input partition,
// endpoint and model: it writes them in chunks to the jobs topic and acknowledges
// each record once its chunk is acknowledged by the brokers, so its
// input offset can commit; it seals a job at MaxRequests or MaxWait.
// It is safe for concurrent use.
type Gatherer struct {
	cl  *kgo.Client
	cfg GatherConfig
	log zerolog.Logger
	now func() time.Time

	mu     sync.Mutex
	jobs   map[jobGroup]*openJob
	closed bool
	wg     sync.WaitGroup // jobs being sealed
}

// jobGroup is what one job gathers: the records of one input partition
// for one endpoint and model. A job's records all come from one input
// partition, so a record redelivered after a crash goes to the same
// jobs partition as its first copy, whose owner drops it (see Runner).
type jobGroup struct {
	endpoint, model string
	topic           string
	partition       int32
}

type openJob struct {
	id        string
	group     jobGroup
	partition int32
	created   time.Time
	seq       int // next chunk
	requests  int
	bytes     int64      // its entries' size
	fill      []gathered // the chunk being filled
	fillBytes int
	linger    *time.Timer
	maxWait   *time.Timer
	inflight  sync.WaitGroup // chunk produces not yet acknowledged
	mu        sync.Mutex     // guards written
	written   []int          // chunks acknowledged
	writtenN  int            // their requests
}

type gathered struct {
	req  Request
	size int
	ack  func(error)
}

// NewGatherer returns a Gatherer producing to cfg.JobsTopic through cl.
func NewGatherer(cl *kgo.Client, cfg GatherConfig, log zerolog.Logger) *Gatherer {
	if cfg.ChunkRequests <= 0 {
		cfg.ChunkRequests = 500
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 512 << 10
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 50 * time.Millisecond
	}
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = 900 << 10
	}
	cfg.MaxRequests = max(cfg.MaxRequests, 1)
	return &Gatherer{cl: cl, cfg: cfg, log: log, now: time.Now, jobs: make(map[jobGroup]*openJob)}
}

// entrySize is about what r takes in a chunk record (JSON, base64).
func entrySize(r Request) int {
	n := 160 + len(r.ID) + len(r.CustomID) + len(r.Topic) + (len(r.Key)+len(r.Value))*4/3
	for _, h := range r.Headers {
		n += 32 + len(h.Key) + len(h.Value)*4/3
	}
	return n
}

// Add gathers the input record rec (its custom_id, the endpoint url and
// model its request goes to). ack is called once: nil when the record's
// chunk is acknowledged (its offset may commit), or an error when the
// chunk could not be written (the record is processed again). Add
// returns ErrTooLarge, without calling ack, for a record too large to
// hold in the jobs topic.
func (g *Gatherer) Add(rec *kgo.Record, customID, url, model string, ack func(error)) error {
	r := RequestOf(rec, customID, g.now())
	size := entrySize(r)
	if size > g.cfg.MaxEntryBytes {
		return fmt.Errorf("%w: about %d bytes, at most %d", ErrTooLarge, size, g.cfg.MaxEntryBytes)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		ack(errClosed)
		return nil
	}
	key := jobGroup{url, model, rec.Topic, rec.Partition}
	j := g.jobs[key]
	if j != nil && g.cfg.MaxJobBytes > 0 && j.bytes+int64(size) > g.cfg.MaxJobBytes {
		g.sealLocked(j) // full: the record opens the next job
		j = nil
	}
	if j == nil {
		j = g.openLocked(key)
	}
	if j.fillBytes+size > g.cfg.ChunkBytes && len(j.fill) > 0 {
		g.flushLocked(j)
	}
	j.fill = append(j.fill, gathered{req: r, size: size, ack: ack})
	j.fillBytes += size
	j.bytes += int64(size)
	j.requests++
	switch {
	case j.requests >= g.cfg.MaxRequests:
		g.sealLocked(j)
	case len(j.fill) >= g.cfg.ChunkRequests || j.fillBytes >= g.cfg.ChunkBytes:
		g.flushLocked(j)
	case len(j.fill) == 1:
		j.linger = time.AfterFunc(g.cfg.Linger, func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.jobs[key] == j {
				g.flushLocked(j)
			}
		})
	}
	return nil
}

// openLocked opens a new job for key.
func (g *Gatherer) openLocked(key jobGroup) *openJob {
	id := NewJobID(g.now())
	j := &openJob{id: id, group: key, partition: JobsPartition(key.partition, g.cfg.Partitions), created: g.now()}
	g.jobs[key] = j
	j.maxWait = time.AfterFunc(g.cfg.MaxWait, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.jobs[key] == j {
			g.sealLocked(j)
		}
	})
	return j
}

// NewJobID returns a new job id: the time, then random hex.
func NewJobID(now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// flushLocked writes the chunk being filled.
func (g *Gatherer) flushLocked(j *openJob) {
	if j.linger != nil {
		j.linger.Stop()
		j.linger = nil
	}
	if len(j.fill) == 0 {
		return
	}
	fill := j.fill
	j.fill, j.fillBytes = nil, 0
	seq := j.seq
	j.seq++
	c := Chunk{Job: j.id, Seq: seq, API: g.cfg.API, Endpoint: j.group.endpoint, Model: j.group.model}
	for _, f := range fill {
		c.Requests = append(c.Requests, f.req)
	}
	ackAll := func(err error) {
		for _, f := range fill {
			f.ack(err)
		}
	}
	value, err := Encode(c)
	if err != nil {
		ackAll(err)
		return
	}
	j.inflight.Add(1)
	rec := &kgo.Record{Topic: g.cfg.JobsTopic, Partition: j.partition, Key: []byte(ChunkKey(j.id, seq)), Value: value}
	unlock := g.lock()
	defer unlock()
	g.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
		if err == nil {
			j.mu.Lock()
			j.written = append(j.written, seq)
			j.writtenN += len(fill)
			j.mu.Unlock()
		} else {
			g.log.Warn().Err(err).Str("job", j.id).Int("chunk", seq).Msg("a batch-tier chunk could not be written; its records are processed again")
		}
		ackAll(err)
		j.inflight.Done()
	})
}

// sealLocked flushes j, closes it to new records and, once its chunks
// are acknowledged, writes its seal.
func (g *Gatherer) sealLocked(j *openJob) {
	g.flushLocked(j)
	j.maxWait.Stop()
	delete(g.jobs, j.group)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		j.inflight.Wait()
		g.writeSeal(j)
	}()
}

// writeSeal writes j's seal listing its acknowledged chunks; a job none
// of whose chunks was written has nothing to seal.
func (g *Gatherer) writeSeal(j *openJob) {
	j.mu.Lock()
	written, reqs := slices.Clone(j.written), j.writtenN
	j.mu.Unlock()
	n := len(written)
	if n == 0 {
		return
	}
	slices.Sort(written)
	value, err := Encode(Seal{Job: j.id, Chunks: j.seq, Written: written, Requests: reqs, Sealed: g.now()})
	if err != nil {
		g.log.Error().Err(err).Str("job", j.id).Msg("cannot encode a seal")
		return
	}
	rec := &kgo.Record{Topic: g.cfg.JobsTopic, Partition: j.partition, Key: []byte(SealKey(j.id)), Value: value}
	done := make(chan error, 1)
	unlock := g.lock()
	g.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) { done <- err })
	unlock()
	if err := <-done; err != nil {
		// The job's owner seals it once it is stale.
		g.log.Warn().Err(err).Str("job", j.id).Msg("cannot write a batch job's seal; its owner seals it after SLUICE_BATCH_MAX_WAIT")
		return
	}
	g.log.Info().Str("job", j.id).Str("endpoint", j.group.endpoint).Str("model", j.group.model).
		Int("requests", reqs).Int("chunks", n).Msg("batch job sealed")
}

// lock takes the gate, if any, and returns its release.
func (g *Gatherer) lock() func() {
	if g.cfg.Gate == nil {
		return func() {}
	}
	g.cfg.Gate.Lock()
	return g.cfg.Gate.Unlock
}

// Close seals every open job and waits until their seals are written
// or ctx ends. Add acknowledges records with an error afterwards.
func (g *Gatherer) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	for _, j := range g.jobs {
		g.sealLocked(j)
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("batchjob: seal open jobs: %w", context.Cause(ctx))
	}
}
