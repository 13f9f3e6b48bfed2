package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A share-group member (KIP-932, Kafka 4.2+) reads the same partitions as
// every other member: the broker hands each record to one member under a
// time-limited acquisition lock, and the member acknowledges each record
// on its own. So a fleet can have more busy members than the topic has
// partitions, and there is no offset to commit and no ordering.
//
// franz-go's share consumer accepts, at the next poll, every record of the
// previous poll that has no final acknowledgement. A client must therefore
// not poll again before each record it returned is finished. A ShareConsumer
// runs several such clients, its lanes: each polls a batch, hands it to the
// dispatcher shared by the lanes, and polls again once every record of the
// batch is acknowledged. A lane polls only while the member has room for a
// whole batch (dispatch slots and bytes), so one slow record holds up one
// lane's next poll, not the member, and the member acquires only what it
// can start soon: a record acquired and waiting is a record no other member
// can take.

// ShareHandler processes the records of a share group. Handle is as in
// Handler; its ack decides the record's fate: accepted with nil, released
// for another delivery with an error. HandleDeliveryLimit is called
// instead of Handle for a record on its ShareConfig.MaxDeliveries-th
// delivery or later: it publishes the record's error result and dead letter
// without processing it, and acks like Handle.
//
// Each delivery is handed over as a *kgo.Record of its own, a copy of the
// one franz-go returned: the handler may keep what it likes in rec.Context,
// as a Handler may, while the member renews and acknowledges franz-go's
// record (whose Context carries the acquisition) from other goroutines.
// franz-go finds the acquisition from the record's address, so the copy's
// DeliveryCount reports 0 and its Ack does nothing: only the member
// acknowledges. A record delivered again is a new *kgo.Record.
type ShareHandler interface {
	Handler
	HandleDeliveryLimit(ctx context.Context, rec *kgo.Record, deliveries int, ack func(error))
}

// ShareObserver is told what happens to the records of a share group, for
// metrics. event is one of the Share* event names; n is a count of records.
type ShareObserver interface {
	ShareRecords(event string, n int)
}

// Events reported to a ShareObserver.
const (
	// ShareAcquired: records the member acquired (every delivery).
	ShareAcquired = "acquired"
	// ShareAccepted: records accepted, their outputs in Kafka.
	ShareAccepted = "accepted"
	// ShareReleased: records given back for another delivery (an output
	// that could not be written, or the drain).
	ShareReleased = "released"
	// ShareRenewed: acquisition locks renewed for a record still in work.
	ShareRenewed = "renewed"
	// ShareRedelivered: records acquired on their second delivery or later.
	ShareRedelivered = "redelivered"
	// ShareDeliveryLimit: records past MaxDeliveries, dead-lettered
	// without a call.
	ShareDeliveryLimit = "delivery_limit"
)

// ShareLanes is the default number of share consumers a member runs.
const ShareLanes = 4

// Share offset resets (ShareConfig.Reset).
const (
	// ShareResetEarliest sets the group's share.auto.offset.reset to
	// earliest at start when the group has no value for it, so records
	// produced before the first member started are not skipped.
	ShareResetEarliest = "earliest"
	// ShareResetLatest leaves the group's configuration alone (Kafka's
	// default: a new share group starts at the latest offset).
	ShareResetLatest = "latest"
)

// ShareConfig tunes a ShareConsumer.
type ShareConfig struct {
	// Group is the share group.
	Group string
	Topic string
	// MaxDispatched bounds the records handed to the handler at once
	// (default 256), as in Config. The member acquires no more than
	// this many records at a time (plus one lane's batch while the
	// other lanes wait on slow records).
	MaxDispatched int
	// MaxBufferedBytes bounds the memory of the records held (default
	// 256 MiB), as in Config: a lane does not poll while it is reached.
	MaxBufferedBytes int64
	// DrainTimeout bounds how long the records in flight may finish on
	// shutdown (default 25s); the rest are released, so other members
	// take them at once.
	DrainTimeout time.Duration
	// MaxDeliveries: a record on its MaxDeliveries-th delivery or later
	// goes to HandleDeliveryLimit instead of Handle (default 3, at least
	// 2). It must be below the group's share.delivery.count.limit, past
	// which the broker archives a record without telling anyone; Run
	// checks that when it can read the limit.
	MaxDeliveries int
	// Reset is ShareResetEarliest (default) or ShareResetLatest.
	Reset string
	// Lanes is the number of share consumers (group members) this member
	// runs (default ShareLanes, see above). Each counts toward the group's
	// group.share.max.size (Kafka's default 200 members).
	Lanes int
	// OnShare, when set, is told this member's share of the group's work:
	// its fraction of the share group's members, every ShareRefresh.
	OnShare func(share float64)
	// ShareRefresh is how often the group's members are read for OnShare
	// (default 10s).
	ShareRefresh time.Duration
	// Observer, when set, is told what happens to the records.
	Observer ShareObserver
}

// ShareConsumer runs a share-group member. Create it with NewShare, then
// Run.
type ShareConsumer struct {
	cfg   ShareConfig
	batch int // records per lane poll (ShareMaxRecords)
	log   zerolog.Logger
	h     ShareHandler

	dispatch *dispatcher
	bytes    *byteBudget
	queue    *shareQueue
	workCtx  context.Context // handlers run under it; canceled when the drain gives up
	stopWork context.CancelFunc
	handlers sync.WaitGroup

	mu      sync.Mutex
	held    map[*shareEntry]struct{} // acquired, not finally acknowledged
	working map[shareKey]*shareEntry // per record, the held entry queued or in a handler
	paused  bool                     // fetching paused (bytes or Hold)
	changed chan struct{}            // closed and replaced when held or paused change
	lockDur time.Duration            // the acquisition lock's duration, as seen at polls
	lanes   []*shareLane
	acked   chan struct{} // wakes flushLoop: a lane has acknowledgements to send

	fatal   fatal // the first fatal error; stops polling
	ready   atomic.Bool
	holding atomic.Bool
}

// shareEntry is one acquired record.
type shareEntry struct {
	rec      *kgo.Record // franz-go's, acknowledged by the member; never handed to the handler
	lane     *shareLane
	size     int64
	delivery int       // the broker's delivery count, 1 on the first
	limit    bool      // past MaxDeliveries
	renewAt  time.Time // when its lock is renewed next; guarded by the consumer's mu
	finished bool      // guarded by the consumer's mu
	// next is the member's newer acquisition of the same record, taken
	// by another lane after this one's lock lapsed while the record was
	// in work (a renewal that came too late): it is not handled again
	// but gets this entry's final acknowledgement, since only the newest
	// acquisition's acknowledgement counts. Guarded by the consumer's mu.
	next *shareEntry
}

// shareKey names a record of the topic.
type shareKey struct {
	topic     string
	partition int32
	offset    int64
}

func keyOf(rec *kgo.Record) shareKey { return shareKey{rec.Topic, rec.Partition, rec.Offset} }

// handlerCopySize is what the handler's copy of a held record (see
// ShareHandler) adds to recordSize.
const handlerCopySize = int64(unsafe.Sizeof(kgo.Record{}))

// NewShare returns a ShareConsumer; Run hands the records to a ShareHandler.
func NewShare(cfg ShareConfig, log zerolog.Logger) *ShareConsumer {
	if cfg.MaxDispatched <= 0 {
		cfg.MaxDispatched = 256
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = 256 << 20
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 25 * time.Second
	}
	if cfg.MaxDeliveries <= 0 {
		cfg.MaxDeliveries = 3
	}
	if cfg.Reset == "" {
		cfg.Reset = ShareResetEarliest
	}
	if cfg.Lanes <= 0 {
		cfg.Lanes = ShareLanes
	}
	if cfg.ShareRefresh <= 0 {
		cfg.ShareRefresh = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &ShareConsumer{
		cfg:      cfg,
		batch:    shareBatch(cfg.MaxDispatched, cfg.Lanes),
		log:      log,
		dispatch: newDispatcher(cfg.MaxDispatched),
		bytes:    newByteBudget(cfg.Topic, cfg.MaxBufferedBytes),
		workCtx:  ctx,
		stopWork: cancel,
		held:     make(map[*shareEntry]struct{}),
		working:  make(map[shareKey]*shareEntry),
		changed:  make(chan struct{}),
		acked:    make(chan struct{}, 1),
	}
	c.queue = &shareQueue{c: c}
	return c
}

// shareBatch is the records one lane polls at a time: all lanes but one
// fill the dispatch slots, the last polls when stragglers leave a batch's
// worth of slots free.
func shareBatch(maxDispatched, lanes int) int {
	if lanes <= 1 {
		return maxDispatched
	}
	return max(maxDispatched/(lanes-1), 1)
}

// Ready reports whether the member is consuming (for /readyz): false while
// starting, held or draining.
func (c *ShareConsumer) Ready() bool { return c.ready.Load() && !c.holding.Load() }

// Hold stops acquiring records and marks the member not ready (held is
// true), or undoes that; records already acquired are not touched (the
// limiter holds their calls, their locks are renewed).
func (c *ShareConsumer) Hold(held bool) {
	if c.holding.Swap(held) == held {
		return
	}
	c.bytes.hold(held)
	if held {
		c.log.Warn().Msg("acquiring paused; not ready")
		return
	}
	c.log.Info().Msg("acquiring resumed; ready")
}

// BufferedBytes returns the bytes of the records held, for metrics.
func (c *ShareConsumer) BufferedBytes() int64 { return c.bytes.bytes() }

// Uncommitted returns the records acquired and not yet acknowledged, per
// partition, for metrics and tests.
func (c *ShareConsumer) Uncommitted() map[string]map[int32]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]map[int32]int)
	for e := range c.held {
		if out[e.rec.Topic] == nil {
			out[e.rec.Topic] = make(map[int32]int)
		}
		out[e.rec.Topic][e.rec.Partition]++
	}
	return out
}

// PauseFetchTopics stops the lanes' polls (the byte budget calls it).
func (c *ShareConsumer) PauseFetchTopics(...string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
	c.signalLocked()
	return nil
}

// ResumeFetchTopics lets the lanes poll again.
func (c *ShareConsumer) ResumeFetchTopics(...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = false
	c.signalLocked()
}

// signalLocked wakes everyone waiting on a change of held or paused.
func (c *ShareConsumer) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Run joins the share group with Lanes clients built from base (the
// connection options: seeds, TLS, SASL, logger) and hands the records to
// h until ctx is done or an output cannot be written, then drains: stops
// acquiring, releases the records not yet dispatched, lets the records in
// flight finish within DrainTimeout, releases the rest and leaves the
// group. admin (any client of the cluster) sets up the group's
// configuration and reads its members. The error is nil after a clean
// drain.
func (c *ShareConsumer) Run(ctx context.Context, admin *kgo.Client, base []kgo.Opt, h ShareHandler) error {
	c.h = h
	defer c.stopWork()
	if err := c.setupGroup(ctx, admin); err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return err
	}
	fetchBytes := fetchMaxBytes(c.cfg.MaxBufferedBytes)
	for i := range c.cfg.Lanes {
		opts := append(append([]kgo.Opt(nil), base...),
			kgo.ShareGroup(c.cfg.Group),
			kgo.ConsumeTopics(c.cfg.Topic),
			// At most a batch per fetch, and a fetch only while a
			// lane polls: nothing is acquired that is not handed
			// to the dispatcher at once.
			kgo.ShareMaxRecords(int32(c.batch)),
			kgo.ShareMaxRecordsStrict(),
			kgo.FetchMaxBytes(int32(fetchBytes)),
			kgo.FetchMaxPartitionBytes(int32(fetchMaxPartitionBytes(c.cfg.MaxBufferedBytes))),
			kgo.MaxDecompressBatchBytes(maxDecompressBatchBytes(c.cfg.MaxBufferedBytes)),
			kgo.FetchMaxWait(500*time.Millisecond),
		)
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			c.closeLanes()
			return fmt.Errorf("consumer: share lane client: %w", err)
		}
		c.lanes = append(c.lanes, &shareLane{c: c, id: i, cl: cl})
	}
	defer c.closeLanes()
	c.bytes.setClient(c)

	stopDispatching := c.dispatch.start()
	defer stopDispatching()

	stopBackground := make(chan struct{})
	var background sync.WaitGroup
	background.Go(func() { c.renewLoop(stopBackground) })
	background.Go(func() { c.flushLoop(stopBackground) })
	background.Go(func() { c.watchShare(admin, stopBackground) })
	defer func() {
		close(stopBackground)
		background.Wait()
	}()

	pollCtx, cancelPoll := c.fatal.pollContext(ctx)
	defer cancelPoll()

	c.ready.Store(true)
	c.log.Info().Str("group", c.cfg.Group).Str("topic", c.cfg.Topic).Int("lanes", c.cfg.Lanes).
		Int("batch", c.batch).Msg("consuming (share group)")
	// A fetch under way when the member stops has acquired records: its
	// poll may end (at most FetchMaxWait with nothing to fetch) and its
	// records are finished in the drain, instead of being released
	// unseen, which would count a delivery against each.
	fetchCtx, cancelFetches := context.WithCancel(context.Background())
	defer cancelFetches()
	stopFetches := context.AfterFunc(pollCtx, func() {
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-fetchCtx.Done():
		}
		cancelFetches()
	})
	defer stopFetches()
	var lanes sync.WaitGroup
	for _, l := range c.lanes {
		lanes.Go(func() { l.run(pollCtx, fetchCtx) })
	}
	lanes.Wait()
	cancelFetches()
	c.ready.Store(false)

	c.log.Info().Stringer("drain_timeout", c.cfg.DrainTimeout).Msg("draining")
	c.drain(stopDispatching)
	c.log.Info().Msg("drained")
	return c.fatal.Err()
}

// drain lets the records acquired, queued or in flight, finish within
// DrainTimeout: each released record counts a delivery toward
// MaxDeliveries, so the member does not give back what it can finish. Then
// it stops dispatching (stopDispatching), abandons and releases the rest
// and flushes the acknowledgements, so the group hands them to other
// members now rather than when their locks expire.
func (c *ShareConsumer) drain(stopDispatching func()) {
	deadline := time.NewTimer(c.cfg.DrainTimeout)
	defer deadline.Stop()
wait:
	for {
		c.mu.Lock()
		n, changed := len(c.held), c.changed
		c.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-changed:
		case <-deadline.C:
			c.log.Warn().Int("records_unfinished", n).Msg("drain deadline passed; releasing the records not finished")
			break wait
		}
	}
	stopDispatching()
	for _, e := range c.queue.stop() {
		c.finish(e, errReleased, false)
	}
	c.stopWork() // abandoned handlers ack with an error: released
	c.handlers.Wait()
	// A handler may ack after returning (its outputs were being
	// produced); what is still held now is released by leaving.
	c.mu.Lock()
	left := make([]*shareEntry, 0, len(c.held))
	for e := range c.held {
		left = append(left, e)
	}
	c.mu.Unlock()
	for _, e := range left {
		c.finish(e, errReleased, false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range c.lanes {
		if err := l.cl.FlushAcks(ctx); err != nil {
			c.log.Warn().Err(err).Msg("cannot flush acknowledgements; unacknowledged records return when their locks expire")
			break
		}
	}
}

// closeLanes closes the lane clients (leaving the group); a record still
// acquired is released by the close.
func (c *ShareConsumer) closeLanes() {
	for _, l := range c.lanes {
		l.cl.Close()
	}
	c.lanes = nil
}

// fail records the first fatal error and stops polling; Run returns it.
func (c *ShareConsumer) fail(err error) { c.fatal.fail(c.log, err) }

func (c *ShareConsumer) observe(event string, n int) {
	if c.cfg.Observer != nil && n > 0 {
		c.cfg.Observer.ShareRecords(event, n)
	}
}

// shareLane is one share consumer of the member.
type shareLane struct {
	c  *ShareConsumer
	id int
	cl *kgo.Client

	left   int           // records of the current batch not finished; guarded by the consumer's mu
	done   chan struct{} // closed when left drops to 0
	unsent bool          // acknowledged records not yet flushed; guarded by the consumer's mu
}

// run polls a batch when the member has room for it, waits until every
// record of the batch is acknowledged, and polls again, until ctx is done;
// a poll under way then may go on until fetchCtx is done.
func (l *shareLane) run(ctx, fetchCtx context.Context) {
	c := l.c
	for {
		if !c.waitRoom(ctx) {
			return
		}
		fetches := l.cl.PollRecords(fetchCtx, c.batch)
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			c.log.Warn().Err(err).Str("topic", t).Int32("partition", p).Msg("share fetch error")
		})
		recs := fetches.Records()
		if len(recs) == 0 {
			if ctx.Err() != nil || fetchCtx.Err() != nil {
				return
			}
			continue
		}
		// Taken even when ctx ended meanwhile: the drain releases them.
		done := c.take(l, recs)
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
		// The batch's acknowledgements reach the broker before the
		// lane asks for more, rather than riding on the next fetch:
		// what is finished is not delivered again if the member dies
		// meanwhile (and a fetch answer carrying both acknowledgement
		// results and records is where kfake repeats a partition, whose
		// records franz-go then drops until their locks expire).
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = l.cl.FlushAcks(fctx) // late or failed: the fetch carries them
		cancel()
	}
}

// waitRoom waits until the member may acquire a batch more: fetching is
// not paused, and the records held leave a batch's worth of dispatch
// slots. It reports false when ctx ended first.
func (c *ShareConsumer) waitRoom(ctx context.Context) bool {
	for {
		c.mu.Lock()
		ok := !c.paused && len(c.held)+c.batch <= max(c.cfg.MaxDispatched, c.batch)
		changed := c.changed
		c.mu.Unlock()
		if ok {
			return ctx.Err() == nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// take holds the records of one poll of l and queues them for dispatch;
// the channel is closed once all of them are acknowledged.
func (c *ShareConsumer) take(l *shareLane, recs []*kgo.Record) <-chan struct{} {
	now := time.Now()
	var bytes int64
	redelivered, limited := 0, 0
	queued := make([]*shareEntry, 0, len(recs))
	c.mu.Lock()
	l.left = len(recs)
	l.done = make(chan struct{})
	done := l.done
	for _, rec := range recs {
		detach(rec)
		e := &shareEntry{rec: rec, lane: l, size: recordSize(rec) + handlerCopySize, delivery: int(rec.DeliveryCount())}
		if e.delivery > 1 {
			redelivered++
			e.limit = e.delivery >= c.cfg.MaxDeliveries
		}
		lock := time.Duration(0)
		if dl := rec.AcquisitionDeadline(); !dl.IsZero() {
			lock = dl.Sub(now)
		}
		// Each deadline seen is at most the lock's duration (it ran
		// while the fetch travelled): the longest is the best guess.
		c.lockDur = max(c.lockDur, lock)
		e.renewAt = now.Add(max(lock, 0) / 2)
		c.held[e] = struct{}{}
		bytes += e.size
		k := keyOf(rec)
		if w, ok := c.working[k]; ok {
			// Acquired again while in work here: calling it twice
			// would pay the call twice and publish two results.
			for w.next != nil {
				w = w.next
			}
			w.next = e
			c.log.Warn().Str("topic", rec.Topic).Int32("partition", rec.Partition).Int64("offset", rec.Offset).
				Int("delivery", e.delivery).
				Msg("a record's acquisition lock lapsed while it was in work and this member acquired it again; it is finished once, on the newer acquisition")
			continue
		}
		c.working[k] = e
		queued = append(queued, e)
		if e.limit {
			limited++
		}
	}
	c.signalLocked()
	c.mu.Unlock()
	c.bytes.add(bytes)
	c.observe(ShareAcquired, len(recs))
	c.observe(ShareRedelivered, redelivered)
	c.observe(ShareDeliveryLimit, limited)
	c.queue.push(queued)
	return done
}

// finish gives e its final acknowledgement: accepted when err is nil,
// released otherwise. A record whose delivery-limit outputs cannot be
// written stops the member: released again, it would be archived by the
// broker without a trace once the group's limit is reached.
func (c *ShareConsumer) finish(e *shareEntry, err error, dispatched bool) {
	if dispatched {
		defer c.dispatch.done()
	}
	status, event := kgo.AckAccept, ShareAccepted
	if err != nil {
		status, event = kgo.AckRelease, ShareReleased
		switch {
		case errors.Is(err, errReleased) || c.workCtx.Err() != nil:
		case e.limit:
			c.fail(fmt.Errorf("the dead letter of a record past %d deliveries: %w", c.cfg.MaxDeliveries, err))
		default:
			c.log.Warn().Err(err).Str("topic", e.rec.Topic).Int32("partition", e.rec.Partition).
				Int64("offset", e.rec.Offset).Msg("a record's outputs could not be written; releasing it for another delivery")
		}
	}
	c.mu.Lock()
	if e.finished {
		c.mu.Unlock()
		return
	}
	e.finished = true
	// Acknowledged before the lane may poll again: a poll accepts what
	// the previous one returned and was not acknowledged.
	e.rec.Ack(status)
	e.lane.unsent = true
	delete(c.held, e)
	if k := keyOf(e.rec); c.working[k] == e {
		delete(c.working, k)
	}
	next := e.next
	l := e.lane
	if l.left--; l.left == 0 {
		close(l.done)
	}
	c.signalLocked()
	c.mu.Unlock()
	select {
	case c.acked <- struct{}{}:
	default:
	}
	c.bytes.add(-e.size)
	c.observe(event, 1)
	if next != nil {
		if err != nil {
			err = errReleased // e's error is told above
		}
		c.finish(next, err, false)
	}
}

// flushPace is the least time between two flushes of the
// acknowledgements, as between two commits of a consumer group member:
// what finishes meanwhile goes in the next.
const flushPace = 20 * time.Millisecond

// flushLoop sends the lanes' acknowledgements as they come, at most one
// flush per flushPace, until stop is closed: franz-go otherwise holds them
// up to a second, or until the lane polls again, and a member killed
// meanwhile would have its finished records delivered, and called, again.
func (c *ShareConsumer) flushLoop(stop <-chan struct{}) {
	now, cancel := context.WithCancel(context.Background())
	cancel() // FlushAcks with a done context only asks for the flush
	pace := time.NewTimer(0)
	defer pace.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.acked:
		}
		c.mu.Lock()
		var lanes []*shareLane
		for _, l := range c.lanes {
			if l.unsent {
				l.unsent = false
				lanes = append(lanes, l)
			}
		}
		c.mu.Unlock()
		for _, l := range lanes {
			_ = l.cl.FlushAcks(now)
		}
		pace.Reset(flushPace)
		select {
		case <-stop:
			return
		case <-pace.C:
		}
	}
}

// shareQueue holds the acquired records waiting for a dispatch slot, in
// the order they were acquired.
type shareQueue struct {
	c *ShareConsumer

	mu      sync.Mutex
	q       []*shareEntry
	stopped bool
}

func (q *shareQueue) push(entries []*shareEntry) {
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		for _, e := range entries {
			q.c.finish(e, errReleased, false)
		}
		return
	}
	q.q = append(q.q, entries...)
	q.mu.Unlock()
	q.c.dispatch.wake(q)
}

// dispatchOne implements recordQueue.
func (q *shareQueue) dispatchOne() bool {
	q.mu.Lock()
	if q.stopped || len(q.q) == 0 {
		q.mu.Unlock()
		return false
	}
	e := q.q[0]
	q.q[0] = nil
	q.q = q.q[1:]
	if len(q.q) == 0 {
		q.q = nil
	}
	q.mu.Unlock()
	c := q.c
	// The handler's own copy: it may set rec.Context (Handler) while
	// renewDue and finish read e.rec's, the acquisition's, at any time.
	rec := new(kgo.Record)
	*rec = *e.rec
	ack := func(err error) { c.finish(e, err, true) }
	c.handlers.Go(func() {
		if e.limit {
			c.h.HandleDeliveryLimit(c.workCtx, rec, e.delivery, ack)
			return
		}
		c.h.Handle(c.workCtx, rec, ack)
	})
	return true
}

// stop ends dispatching and returns the records still queued.
func (q *shareQueue) stop() []*shareEntry {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	out := q.q
	q.q = nil
	return out
}
