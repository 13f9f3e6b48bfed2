// Package consumer is the Kafka side of sluice consume: a consumer-group
// member that hands each prompt record to a Handler with many records in
// flight per partition, and commits an input offset only after the handler
// acknowledged that record and every lower record of its partition
// (at-least-once, Parallel Consumer style).
//
// Three bounds keep the member's work in check (dispatch.go): at most
// MaxDispatched records with the handler at once across partitions (a
// queued record has no goroutine), at most MaxBufferedBytes of fetched
// records held (fetching pauses at the bound), and no partition running
// further ahead of its oldest unfinished record than the committed offset
// map can describe, so a crash redoes no finished record. On revocation a
// partition stops dispatching, lets its records finish within
// RevokeTimeout, commits what is finished and lets go; on shutdown all
// partitions do the same within DrainTimeout.
//
//	c := consumer.New(consumer.Config{Topic: "prompts", ...}, log)
//	cl, _ := kgo.NewClient(append(baseOpts, c.ClientOpts()...)...)
//	err := c.Run(ctx, cl, handler) // returns after ctx is done and the drain ended
//	cl.Close()            // leaves the group
package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler processes one record. It must call ack exactly once: with nil
// once the record's outputs are acknowledged by the brokers, or with an
// error when they cannot be. When ctx ends the handler should give up
// quickly and ack with an error; the record is then not committed and will
// be processed again by the partition's next owner. Handle may return
// before ack is called. A record this member processes again (its outputs
// could not be written, or its transaction aborted) is handed over as the
// same *kgo.Record, so what the handler kept in rec.Context the first time
// is there again.
type Handler interface {
	Handle(ctx context.Context, rec *kgo.Record, ack func(error))
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, rec *kgo.Record, ack func(error))

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, rec *kgo.Record, ack func(error)) {
	f(ctx, rec, ack)
}

// Config tunes a Consumer.
type Config struct {
	Group string
	Topic string
	// MaxDispatched bounds the records handed to the handler at once,
	// across partitions (default 256). Size it above the calls the
	// handler may have in flight, so records publishing their outputs or
	// waiting for a call slot do not leave call slots idle.
	MaxDispatched int
	// MaxBufferedBytes bounds the memory of the fetched records the
	// member holds, queued or dispatched (default 256 MiB): a record
	// counts its bytes twice, as fetched and as what the handler builds
	// from it (see recordSize). The fetch sizes are set to match
	// (ClientOpts).
	MaxBufferedBytes int64
	// CommitInterval paces the retries of a failed commit (default 1s).
	// Offsets are committed as records finish, at most one commit at a
	// time, about 50 a second; exactly once, each such commit ends the
	// open transaction.
	CommitInterval time.Duration
	// RevokeTimeout bounds how long a revoked partition's records may
	// finish before they are abandoned (default 15s).
	RevokeTimeout time.Duration
	// DrainTimeout bounds the same on shutdown (default 25s).
	DrainTimeout time.Duration
	// MaxPollRecords bounds one poll (default 1000).
	MaxPollRecords int
	// Ordering is the dispatch order within a partition (default
	// OrderUnordered).
	Ordering Ordering
	// TransactionalID, when set, makes the consumer exactly-once: outputs
	// and input offsets commit in one Kafka transaction (see Run).
	TransactionalID string
	// OnRedone, when set, is told of records processed again although
	// they had been processed once: their transaction aborted, or their
	// outputs could not be written. (Records redone by a new owner after
	// a crash are not seen by any member.)
	OnRedone func(n int)
	// OnSkipped, when set, is told of records skipped because the
	// committed offset map listed them as finished.
	OnSkipped func(n int)
	// OnShare, when set, is told this member's share of the group's work
	// (its fraction of the topic's assigned partitions), after every
	// rebalance and periodically.
	OnShare func(share float64)
}

// Consumer runs the group member. Create it with New, build the kgo client
// with ClientOpts, then Run.
type Consumer struct {
	cfg     Config
	handler Handler
	log     zerolog.Logger

	cl     *kgo.Client
	txnMu  sync.RWMutex // exactly-once: produces hold it shared, ending a transaction exclusively
	noMeta atomic.Bool  // the brokers refused offset-map metadata: commit plain offsets
	// txnFailed is set when an output failed to be written in the open
	// transaction (exactly-once): it must abort, never commit.
	txnFailed atomic.Bool
	// txnLost is set when partitions were lost (exactly-once): the open
	// transaction must abort, and is ended at once, before outputs of
	// partitions assigned next go into it.
	txnLost atomic.Bool
	// finishedCh wakes the commit loop when records finished (at least
	// once): commits follow finishes.
	finishedCh chan struct{}
	workCtx    context.Context // handlers run under it; not canceled by Run's ctx
	stopWork   context.CancelFunc
	handlers   sync.WaitGroup // handler goroutines

	dispatch *dispatcher
	bytes    *byteBudget
	sizer    *fetchSizer

	mu           sync.Mutex
	parts        map[topicPartition]*partition
	pendingSkips map[topicPartition]*offsetMap // offset maps fetched before their partition was assigned

	commitMu sync.Mutex // serializes commits with revocation

	fatal      fatal // the first fatal error; stops polling
	ready      atomic.Bool
	held       atomic.Bool   // see Hold
	rebalanced chan struct{} // wakes watchGroup
}

type topicPartition struct {
	topic     string
	partition int32
}

// New returns a Consumer; Run hands the records to a Handler.
func New(cfg Config, log zerolog.Logger) *Consumer {
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 1000
	}
	if cfg.MaxDispatched <= 0 {
		cfg.MaxDispatched = 256
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = 256 << 20
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.RevokeTimeout <= 0 {
		cfg.RevokeTimeout = 15 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 25 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Consumer{
		cfg:      cfg,
		log:      log,
		workCtx:  ctx,
		stopWork: cancel,
		dispatch: newDispatcher(cfg.MaxDispatched),
		bytes:    newByteBudget(cfg.Topic, cfg.MaxBufferedBytes),
		sizer:    newFetchSizer(cfg.MaxBufferedBytes),
		parts:    make(map[topicPartition]*partition),

		pendingSkips: make(map[topicPartition]*offsetMap),

		rebalanced: make(chan struct{}, 1),
		finishedCh: make(chan struct{}, 1),
	}
}

// ClientOpts are the kgo options the consumer needs: the group, the topic,
// manual commits, the rebalance callbacks, and fetch sizes that fit
// MaxBufferedBytes once decompressed (see fetchSizer). Add the connection
// options.
func (c *Consumer) ClientOpts() []kgo.Opt {
	fetchBytes, partBytes := c.sizer.limits()
	opts := []kgo.Opt{
		// Fetching pauses and resumes with the byte budget; a resumed
		// partition waits for the fetch in flight, so keep its long
		// poll short (librdkafka's fetch.wait.max.ms default).
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.FetchMaxBytes(fetchBytes),
		kgo.FetchMaxPartitionBytes(partBytes),
		kgo.MaxDecompressBatchBytes(maxDecompressBatchBytes(c.cfg.MaxBufferedBytes)),
		kgo.WithHooks(c.sizer),
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.OnOffsetsFetched(c.offsetsFetched),
		// Records of aborted (or still open) producer transactions are
		// never sent to the API, in either delivery mode.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
	if c.exactlyOnce() {
		opts = append(opts,
			kgo.TransactionalID(c.cfg.TransactionalID),
			// Committed offsets only once no transaction touching them
			// is pending.
			kgo.RequireStableFetchOffsets(),
			kgo.MaxVersions(txnVersions()),
		)
	}
	return opts
}

func (c *Consumer) exactlyOnce() bool { return c.cfg.TransactionalID != "" }

// ProduceGate is held (Lock/Unlock) around every produce of a record's
// outputs. In exactly-once mode ending a transaction waits for the
// produces under way and holds new ones back, so each output lands in the
// transaction that commits its record; otherwise it costs nothing.
func (c *Consumer) ProduceGate() sync.Locker { return c.txnMu.RLocker() }

// Ready reports whether the member is consuming (for /readyz): false while
// starting, held or draining.
func (c *Consumer) Ready() bool { return c.ready.Load() && !c.held.Load() }

// Run polls and dispatches to h until ctx is done or an output cannot be
// written, then drains: stops dispatching, lets in-flight records finish
// within DrainTimeout, commits, and returns. cl must be built with
// ClientOpts. The caller closes cl afterwards, which leaves the group. The
// error is nil after a clean drain.
//
// In exactly-once mode (Config.TransactionalID set), as records finish the
// open transaction ends (one at a time, at least 20 ms apart), committing
// the outputs produced in it together with the input offsets (and offset
// maps) they complete, and a new one begins (txn.go); when a transaction
// aborts, its records are processed again.
func (c *Consumer) Run(ctx context.Context, cl *kgo.Client, h Handler) error {
	if !c.exactlyOnce() {
		return c.run(ctx, cl, h)
	}
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("consumer: begin transaction: %w", err)
	}
	err := c.run(ctx, cl, h)
	// After a clean drain the open transaction is empty; after a fatal
	// error it may hold outputs, which must not stay pending (read_committed
	// readers would wait for the transaction timeout).
	abortCtx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if aerr := cl.AbortBufferedRecords(abortCtx); aerr == nil {
		aerr = cl.EndTransaction(abortCtx, kgo.TryAbort)
		if aerr != nil {
			c.log.Warn().Err(aerr).Msg("cannot abort the open transaction; the brokers abort it after the transaction timeout")
		}
	}
	return err
}

func (c *Consumer) run(ctx context.Context, cl *kgo.Client, h Handler) error {
	c.mu.Lock()
	c.cl, c.handler = cl, h
	c.mu.Unlock()
	c.bytes.setClient(cl) // pauses at once if held
	c.sizer.setClient(cl)
	defer c.stopWork()

	stopDispatching := c.dispatch.start()
	defer stopDispatching()

	groupDone := make(chan struct{})
	stopGroup := make(chan struct{})
	go func() {
		defer close(groupDone)
		c.watchGroup(stopGroup)
	}()
	defer func() {
		close(stopGroup)
		<-groupDone
	}()

	commitDone := make(chan struct{})
	stopCommits := make(chan struct{})
	go func() {
		defer close(commitDone)
		c.commitLoop(stopCommits)
	}()

	pollCtx, cancelPoll := c.fatal.pollContext(ctx)
	defer cancelPoll()

	c.ready.Store(true)
	c.log.Info().Str("group", c.cfg.Group).Str("topic", c.cfg.Topic).Msg("consuming")
	c.poll(pollCtx)
	c.ready.Store(false)

	c.log.Info().Stringer("drain_timeout", c.cfg.DrainTimeout).Msg("draining")
	stopDispatching()
	c.release(c.assignedPartitions(), c.cfg.DrainTimeout, true) // commits go on while records finish
	close(stopCommits)
	<-commitDone
	c.stopWork()
	c.handlers.Wait()
	c.log.Info().Msg("drained")
	return c.fatal.Err()
}

// poll fetches and dispatches until ctx is done (shutdown or a fatal error).
func (c *Consumer) poll(ctx context.Context) {
	for {
		fetches := c.cl.PollRecords(ctx, c.cfg.MaxPollRecords)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if tooLarge := (*kgo.ErrDecompressTooLarge)(nil); errors.As(err, &tooLarge) {
				// The partition stops here (nothing is skipped
				// unseen); the operator decides.
				c.log.Error().Err(err).Str("topic", t).Int32("partition", p).
					Int64("offset", tooLarge.Offset).Int64("next_offset", tooLarge.NextOffset).
					Int("max_decompressed_bytes", maxDecompressBatchBytes(c.cfg.MaxBufferedBytes)).
					Msg("a fetched batch decompresses past the limit; this partition is stopped: raise SLUICE_MAX_BUFFERED_BYTES (the limit is the larger of it and 64MiB) or move the group's offset past the batch")
				return
			}
			c.log.Warn().Err(err).Str("topic", t).Int32("partition", p).Msg("fetch error")
		})
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			c.mu.Lock()
			p := c.parts[topicPartition{ftp.Topic, ftp.Partition}]
			c.mu.Unlock()
			if p != nil {
				p.enqueue(ftp.Records)
			}
		})
	}
}

// assignedPartitions returns the partitions tracked now.
func (c *Consumer) assignedPartitions() []*partition {
	c.mu.Lock()
	defer c.mu.Unlock()
	parts := make([]*partition, 0, len(c.parts))
	for _, p := range c.parts {
		parts = append(parts, p)
	}
	return parts
}

// fail records the first fatal error and stops polling; Run returns it.
func (c *Consumer) fail(err error) { c.fatal.fail(c.log, err) }

// Uncommitted returns the unfinished records held per partition (queued,
// in flight, or produced in the open transaction), for metrics and tests.
func (c *Consumer) Uncommitted() map[string]map[int32]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]map[int32]int)
	for tp, p := range c.parts {
		if out[tp.topic] == nil {
			out[tp.topic] = make(map[int32]int)
		}
		out[tp.topic][tp.partition] = p.uncommitted()
	}
	return out
}

// BufferedBytes returns the bytes of the fetched records the member holds
// (see Config.MaxBufferedBytes), for metrics and tests.
func (c *Consumer) BufferedBytes() int64 { return c.bytes.bytes() }

// outputFailed notes that a record of p could not have its outputs
// written and will be processed again; in exactly-once mode the open
// transaction must then abort.
func (c *Consumer) outputFailed(p *partition, err error) {
	if c.exactlyOnce() {
		c.txnFailed.Store(true)
	}
	c.log.Warn().Err(err).Str("topic", p.topic).Int32("partition", p.id).
		Msg("a record's outputs could not be written; processing it again")
}

func (c *Consumer) redone(n int) {
	if c.cfg.OnRedone != nil && n > 0 {
		c.cfg.OnRedone(n)
	}
}

func (c *Consumer) skippedOne() {
	if c.cfg.OnSkipped != nil {
		c.cfg.OnSkipped(1)
	}
}
