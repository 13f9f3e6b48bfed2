package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// errReleased is the cause given to a partition's context when its
// unfinished records are abandoned (revoked past the deadline, lost, or the
// drain timed out).
var errReleased = errors.New("consumer: partition released")

// maxOutputFailures is how many times one record's outputs may fail to be
// written before the member stops: a failure is retried (the record is
// processed again), a record whose outputs never fit in Kafka is not.
const maxOutputFailures = 3

// maxRunAhead bounds how far, in offsets, a partition runs ahead of its
// watermark: within it every gap of the offset map encodes in at most 3
// bytes, which the exactly-once reservation counts on (offsetMapRoom).
const maxRunAhead = 1<<21 - 1

// partition is the state of one assigned partition: every record fetched
// and not yet finished (window), those of them waiting for dispatch
// (queue), and the pause state of its fetching. All of it is guarded by mu.
type partition struct {
	c      *Consumer
	topic  string
	id     int32
	ctx    context.Context // handlers of this partition run under it
	cancel context.CancelCauseFunc

	mu          sync.Mutex
	window      *offsetWindow
	queue       []*entry       // queued entries, offset order
	busyKeys    map[string]int // key ordering: dispatched records per key
	outstanding int            // dispatched records whose ack has not come
	// produced are the records finished in the open transaction
	// (exactly-once): their outputs are in it, so they count as finished
	// for its commit, but they are queued again if it aborts. txnBase is
	// what the last committed transaction covered. failed are records
	// whose outputs failed in the open transaction, which therefore
	// aborts: they are queued again then.
	produced []*entry
	failed   []*entry
	txnBase  finishedSet
	// payload is the run-length size of the window's offset map, kept
	// current as records finish.
	payload       int
	idle          chan struct{} // closed when outstanding drops to 0; nil when nobody waits
	stopped       bool          // no more dispatching: revoked, lost or draining
	paused        bool          // fetching of this partition is paused: it cannot run further ahead
	committed     int64         // last offset committed by this member, -1 if none
	committedMeta string        // the offset map committed with it
	skip          *offsetMap    // records already done per the committed offset map
	skipped       int64         // records skipped thanks to skip
}

func newPartition(c *Consumer, topic string, id int32, skip *offsetMap) *partition {
	ctx, cancel := context.WithCancelCause(c.workCtx)
	return &partition{
		c: c, topic: topic, id: id, ctx: ctx, cancel: cancel,
		window: newOffsetWindow(), busyKeys: make(map[string]int), committed: -1, skip: skip,
		txnBase: finishedSet{next: -1},
	}
}

// enqueue adds fetched records to the queue; the dispatcher hands them to
// the handler as slots free. Records the committed offset map lists as
// done are finished at once.
func (p *partition) enqueue(recs []*kgo.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	var added int64
	for _, rec := range recs {
		if p.window.seen(rec.Offset) {
			continue // fetched again after an aborted transaction: already held
		}
		first := !p.window.started()
		e := p.window.push(rec.Offset, rec.LeaderEpoch)
		if first {
			p.txnBase = finishedSet{next: e.from}
		}
		if p.skipDone(rec.Offset) {
			p.window.finish(e)
			if p.c.exactlyOnce() {
				p.txnBase.add(e.from, e.offset) // finished before any transaction of ours
			}
			p.skipped++
			p.c.skippedOne()
			continue
		}
		detach(rec)
		e.rec, e.size = rec, recordSize(rec)
		added += e.size
		p.queue = append(p.queue, e)
	}
	p.finishedLocked()
	p.c.bytes.add(added)
	if len(p.queue) > 0 {
		p.c.dispatch.wake(p)
	}
}

// skipDone reports whether the committed offset map lists offset as done;
// the map is dropped once fetching passed its last offset.
func (p *partition) skipDone(offset int64) bool {
	if p.skip == nil {
		return false
	}
	if last, ok := p.skip.last(); !ok || offset > last {
		if p.skipped > 0 {
			p.c.log.Info().Str("topic", p.topic).Int32("partition", p.id).Int64("skipped", p.skipped).
				Msg("skipped records the previous owner had finished")
		}
		p.skip = nil
		return false
	}
	return p.skip.done(offset)
}

// dispatchOne hands one queued record to the handler, if the ordering and
// the offset map's room allow one; the caller holds a dispatch slot, which
// the record keeps until its ack. It reports whether it dispatched.
func (p *partition) dispatchOne() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || len(p.queue) == 0 {
		return false
	}
	i := p.nextLocked()
	if i < 0 {
		return false
	}
	e := p.queue[i]
	if !p.roomLocked(e) {
		p.pauseLocked(true)
		return false
	}
	if i == 0 {
		p.queue[0] = nil
		p.queue = p.queue[1:]
	} else {
		p.queue = slices.Delete(p.queue, i, i+1)
	}
	if len(p.queue) == 0 {
		p.queue = nil // let the old backing array go
	}
	if e.rec.Key != nil && p.c.cfg.Ordering == OrderKey {
		e.key, e.keyed = string(e.rec.Key), true
		p.busyKeys[e.key]++
	}
	rec := e.rec
	e.state = dispatched
	p.outstanding++
	p.c.handlers.Add(1)
	go func() {
		defer p.c.handlers.Done()
		p.c.handler.Handle(p.ctx, rec, func(err error) { p.ack(e, err) })
	}()
	return true
}

// nextLocked returns the index in the queue of the record to dispatch
// next, or -1 when the ordering holds every queued record back.
func (p *partition) nextLocked() int {
	switch p.c.cfg.Ordering {
	case OrderPartition:
		if p.outstanding > 0 {
			return -1
		}
	case OrderKey:
		// The first record whose key has no earlier record queued or in
		// flight; records without a key are not ordered.
		var blocked map[string]bool
		for i, e := range p.queue {
			if e.rec.Key == nil {
				return i
			}
			k := string(e.rec.Key)
			if p.busyKeys[k] == 0 && !blocked[k] {
				return i
			}
			if blocked == nil {
				blocked = make(map[string]bool)
			}
			blocked[k] = true
		}
		return -1
	}
	return 0
}

// roomLocked reports whether e may be dispatched without the offset map
// outgrowing what a commit can carry should every dispatched record finish
// (offsetMapRoom). The lowest unfinished record always may: its finish
// only moves the watermark.
func (p *partition) roomLocked(e *entry) bool {
	if live := p.window.live(); len(live) > 0 && live[0] == e {
		return true
	}
	span := p.window.last - p.window.next + 1
	if p.c.exactlyOnce() {
		if span > maxRunAhead {
			return false
		}
		span = maxRunAhead // reserve for the span the partition may reach
	} else if p.c.noMeta.Load() {
		return true // no map to protect: a crash redoes what is above the watermark
	}
	return offsetMapRoom(p.window.next, p.payload, p.outstanding+1, span, p.c.mapLimit())
}

// offsetMapRoom reports whether an offset map with base, a run-length
// payload of payload bytes, and inFlight more records finishing each as a
// run of its own within span offsets, still encodes in limit bytes. Each
// such record splits a gap in two, adding at most two uvarints of the
// span's size.
func offsetMapRoom(base int64, payload, inFlight int, span int64, limit int) bool {
	if limit <= 0 {
		return false
	}
	grown := payload + inFlight*2*uvarintLen(uint64(max(span, 1)))
	header := len(offsetMapVersion) + 2 + len(strconv.FormatInt(base, 10)) + 1
	return header+offsetMapBase64.EncodedLen(grown) <= limit
}

// finishedLocked keeps payload current after records finished, lets
// fetching resume when the partition can run ahead again, and puts it in
// the dispatcher's line when it has records to dispatch.
func (p *partition) finishedLocked() {
	p.payload = runsPayloadLen(p.window.next, p.window.runs)
	if p.paused && (len(p.queue) == 0 || p.roomLocked(p.queue[0])) {
		p.pauseLocked(false)
	}
	if !p.stopped && len(p.queue) > 0 {
		p.c.dispatch.wake(p)
	}
}

// pauseLocked pauses or resumes fetching this partition. Its queue may
// hold a fetch's worth, no more, while it cannot run further ahead.
func (p *partition) pauseLocked(pause bool) {
	if p.paused == pause {
		return
	}
	p.paused = pause
	if pause {
		p.c.cl.PauseFetchPartitions(p.topicPartitions())
		return
	}
	p.c.cl.ResumeFetchPartitions(p.topicPartitions())
}

// ack is the handler's report for one record: nil once its outputs are
// acknowledged by the brokers.
func (p *partition) ack(e *entry, err error) {
	defer p.c.dispatch.done()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outstanding--
	if e.keyed {
		if p.busyKeys[e.key]--; p.busyKeys[e.key] <= 0 {
			delete(p.busyKeys, e.key)
		}
		e.keyed = false
	}
	switch {
	case p.c.exactlyOnce() && p.ctx.Err() != nil && !errors.Is(err, errReleased) && !errors.Is(err, context.Canceled):
		// Released (revoked, lost, or drained past its timeout), but its
		// outputs, all or some, went into the open transaction, which
		// will not carry its offset: were it to commit, the partition's
		// next owner would publish the record a second time. Abort it.
		p.c.txnFailed.Store(true)
		p.releaseLocked(e)
		p.c.log.Warn().Str("topic", p.topic).Int32("partition", p.id).Int64("offset", e.offset).
			Msg("outputs of a released partition's record went into the open transaction; aborting it")
	case err == nil && p.c.exactlyOnce():
		// In the open transaction: finished if it commits.
		e.state = produced
		p.window.finish(e)
		p.produced = append(p.produced, e)
		p.c.finished()
	case err == nil:
		p.window.finish(e)
		p.releaseLocked(e)
		p.c.finished()
	case p.ctx.Err() != nil:
		// Abandoned: the record stays unfinished and is redone by
		// whoever consumes the partition next.
		p.releaseLocked(e)
	case e.failures+1 >= maxOutputFailures:
		// Its outputs cannot be written: stop this partition short of
		// the record (nothing is committed past it) and stop.
		p.releaseLocked(e)
		p.stopLocked()
		p.c.fail(fmt.Errorf("%w (%d times)", err, e.failures+1))
	case p.c.exactlyOnce():
		// Some of its outputs may be in the open transaction: it must
		// abort, and the record is processed again after it.
		e.failures++
		e.state = queued
		p.failed = append(p.failed, e)
		p.c.outputFailed(p, err)
	default:
		// At least once: process it again.
		e.failures++
		e.state = queued
		p.queue = append(p.queue, e)
		slices.SortFunc(p.queue, func(a, b *entry) int { return cmp.Compare(a.offset, b.offset) })
		p.c.outputFailed(p, err)
		p.c.redone(1)
	}
	if p.outstanding == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.finishedLocked()
}

// releaseLocked gives back the bytes e counted.
func (p *partition) releaseLocked(e *entry) {
	e.rec = nil
	p.c.bytes.add(-e.size)
	e.size = 0
}

// hasTxnWork reports whether the open transaction holds something of p
// (exactly-once): outputs produced or failed in it, or an offset or map
// to commit.
func (p *partition) hasTxnWork() bool {
	p.mu.Lock()
	work := len(p.produced) > 0 || len(p.failed) > 0
	p.mu.Unlock()
	if work {
		return true
	}
	_, _, moved := p.commitOffset()
	return moved
}

// producedInTxn reports whether outputs of p's records were produced in
// the open transaction (exactly-once).
func (p *partition) producedInTxn() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.produced) > 0
}

// settle ends the transaction's part in this partition: its produced
// records are finished for good when it committed, and queued again when
// it aborted (their outputs are gone; they must be processed again).
func (p *partition) settle(committed bool, off int64, meta string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prod, failed := p.produced, p.failed
	p.produced, p.failed = nil, nil
	switch {
	case committed:
		for _, e := range prod {
			p.releaseLocked(e)
		}
		p.txnBase = p.window.clone()
		if off >= 0 {
			p.committed, p.committedMeta = max(p.committed, off), meta
		}
		prod = nil
	case p.stopped:
		// Not processed again here (the partition is being given up),
		// but unfinished again: the commit that releases the partition
		// must not pass them.
		p.window.restore(p.txnBase, prod)
		for _, e := range prod {
			p.releaseLocked(e)
		}
		return // the failed ones are pending: forget gives their bytes back
	default:
		for _, e := range prod {
			e.state = queued
		}
		p.window.restore(p.txnBase, prod)
	}
	if len(prod)+len(failed) > 0 {
		p.queue = append(append(p.queue, prod...), failed...)
		slices.SortFunc(p.queue, func(a, b *entry) int { return cmp.Compare(a.offset, b.offset) })
		p.c.redone(len(prod) + len(failed))
	}
	p.finishedLocked()
}

// stop ends dispatching and returns a channel closed once every dispatched
// record has been acknowledged or abandoned.
func (p *partition) stop() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
	if p.outstanding == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	return p.idle
}

// stopLocked ends dispatching and gives back the bytes of the queue.
func (p *partition) stopLocked() {
	p.stopped = true
	for _, e := range p.queue {
		p.releaseLocked(e)
	}
	p.queue = nil
}

// forget gives back every byte the partition still counts: it is no
// longer ours, and abandoned handlers let go of their records soon.
func (p *partition) forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
	for _, e := range p.window.live() {
		p.releaseLocked(e)
	}
	for _, e := range p.produced {
		p.releaseLocked(e)
	}
}

// commitOffset returns the offset to commit and its offset map when either
// changed since the last commit. In exactly-once mode it is what a
// transaction ending now commits: the produced records count as finished.
func (p *partition) commitOffset() (kgo.EpochOffset, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, epoch, ok := p.window.base()
	if !ok {
		return kgo.EpochOffset{}, "", false
	}
	meta := p.c.offsetMap(p.window.asMap())
	switch {
	case off == p.window.start && meta == "", // nothing finished yet
		off < p.committed,
		off == p.committed && meta == p.committedMeta:
		return kgo.EpochOffset{}, "", false
	}
	return kgo.EpochOffset{Epoch: epoch, Offset: off}, meta, true
}

func (p *partition) setCommitted(off int64, meta string) {
	p.mu.Lock()
	if off >= p.committed {
		p.committed, p.committedMeta = off, meta
	}
	p.mu.Unlock()
}

// uncommitted is the number of records held unfinished (queued, in flight,
// or, in exactly-once mode, produced in the open transaction).
func (p *partition) uncommitted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.window.len() + len(p.produced)
}

func (p *partition) topicPartitions() map[string][]int32 {
	return map[string][]int32{p.topic: {p.id}}
}
