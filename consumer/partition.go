package consumer

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// errReleased is the cause given to a partition's context when its
// unfinished records are abandoned (revoked past the deadline, lost, or the
// drain timed out).
var errReleased = errors.New("consumer: partition released")

// partition is the state of one assigned partition: every record fetched
// and not yet committable (window), those of them waiting for dispatch
// (queue), and the pause state of its fetching. All of it is guarded by mu.
type partition struct {
	c      *Consumer
	topic  string
	id     int32
	ctx    context.Context // handlers of this partition run under it
	cancel context.CancelCauseFunc

	mu            sync.Mutex
	window        *offsetWindow
	queue         []*entry       // queued entries, offset order
	busyKeys      map[string]int // key ordering: dispatched records per key
	outstanding   int            // dispatched records whose ack has not come
	idle          chan struct{}  // closed when outstanding drops to 0; nil when nobody waits
	stopped       bool           // no more dispatching: revoked, lost or draining
	paused        bool           // fetching is paused because the window is full
	committed     int64          // last offset committed by this member, -1 if none
	committedMeta string         // the offset map committed with it
	skip          *offsetMap     // records already done per the committed offset map
	skipped       int64          // records skipped thanks to skip
}

func newPartition(c *Consumer, topic string, id int32, skip *offsetMap) *partition {
	ctx, cancel := context.WithCancelCause(c.workCtx)
	return &partition{
		c: c, topic: topic, id: id, ctx: ctx, cancel: cancel,
		window: newOffsetWindow(), busyKeys: make(map[string]int), committed: -1, skip: skip,
	}
}

// enqueue adds fetched records and dispatches what the ordering allows.
// Records the committed offset map lists as done are finished at once.
// When the window is full the partition's fetching is paused: franz-go
// keeps the position, so nothing fetched is lost, only fetched again later.
func (p *partition) enqueue(recs []*kgo.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	for _, rec := range recs {
		if p.window.seen(rec.Offset) {
			continue // fetched again after an aborted transaction: already held
		}
		e := p.window.push(rec.Offset, rec.LeaderEpoch)
		if p.skipDone(rec.Offset) {
			p.window.finish(e)
			p.skipped++
			continue
		}
		e.rec = rec
		p.queue = append(p.queue, e)
	}
	if !p.paused && p.window.len() >= p.c.cfg.PartitionWindow {
		p.paused = true
		p.c.cl.PauseFetchPartitions(p.topicPartitions())
	}
	p.pumpLocked()
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

// pumpLocked dispatches queued records as the ordering mode allows.
func (p *partition) pumpLocked() {
	if !p.stopped && len(p.queue) > 0 {
		switch p.c.cfg.Ordering {
		case OrderPartition:
			if p.outstanding == 0 {
				p.dispatchLocked(p.queue[0])
				p.queue[0] = nil
				p.queue = p.queue[1:]
			}
		case OrderKey:
			p.pumpKeysLocked()
		default:
			// At most a window of records in flight per partition: a
			// revoked partition then has a bounded amount to finish, and
			// one partition's backlog does not queue up in the limiter
			// ahead of every other partition's.
			n := 0
			for ; n < len(p.queue) && p.outstanding < p.c.cfg.PartitionWindow; n++ {
				p.dispatchLocked(p.queue[n])
				p.queue[n] = nil
			}
			p.queue = p.queue[n:]
		}
	}
	if len(p.queue) == 0 {
		p.queue = nil // let the old backing array go
	}
	if p.paused && p.window.len() <= p.c.cfg.PartitionWindow/2 {
		p.paused = false
		p.c.cl.ResumeFetchPartitions(p.topicPartitions())
	}
}

// pumpKeysLocked dispatches, in offset order, every queued record whose
// key has no earlier record queued or in flight; records without a key are
// not ordered.
func (p *partition) pumpKeysLocked() {
	var blocked map[string]bool
	kept := p.queue[:0]
	for _, e := range p.queue {
		if e.rec.Key == nil {
			p.dispatchLocked(e)
			continue
		}
		k := string(e.rec.Key)
		if p.busyKeys[k] > 0 || blocked[k] {
			if blocked == nil {
				blocked = make(map[string]bool)
			}
			blocked[k] = true
			kept = append(kept, e)
			continue
		}
		e.key, e.keyed = k, true
		p.busyKeys[k]++
		p.dispatchLocked(e)
	}
	clear(p.queue[len(kept):])
	p.queue = kept
}

// dispatchLocked hands e's record to the handler in a goroutine of its own.
func (p *partition) dispatchLocked(e *entry) {
	rec := e.rec
	e.state = dispatched
	if !p.c.exactlyOnce() {
		e.rec = nil // the handler holds it now
	}
	p.outstanding++
	p.c.handlers.Add(1)
	go func() {
		defer p.c.handlers.Done()
		p.c.handler.Handle(p.ctx, rec, func(err error) { p.ack(e, err) })
	}()
}

// ack is the handler's report for one record: nil once its outputs are
// acknowledged by the brokers.
func (p *partition) ack(e *entry, err error) {
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
	case err == nil && p.c.exactlyOnce():
		// In the open transaction: done when it commits.
		e.state = produced
	case err == nil:
		p.window.finish(e)
	case p.ctx.Err() != nil:
		// Abandoned: the record stays unfinished and is redone by
		// whoever consumes the partition next.
	default:
		// Its outputs could not be written: stop this partition short
		// of the record (nothing is committed past it) and stop.
		p.stopped = true
		p.queue = nil
		p.c.fail(err)
	}
	if p.outstanding == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.pumpLocked()
}

// settle ends the transaction's part in this partition: its produced
// records are done when it committed, and queued again when it aborted
// (their outputs are gone; they must be processed again).
func (p *partition) settle(committed bool, off int64, meta string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var prod []*entry
	for _, e := range p.window.live() {
		if e.state == produced {
			prod = append(prod, e)
		}
	}
	if committed {
		for _, e := range prod {
			p.window.finish(e)
		}
		if off >= 0 {
			p.committed, p.committedMeta = max(p.committed, off), meta
		}
		return
	}
	if p.stopped {
		return
	}
	for _, e := range prod {
		e.state = queued
	}
	p.queue = append(p.queue, prod...)
	slices.SortFunc(p.queue, func(a, b *entry) int { return cmp.Compare(a.offset, b.offset) })
	p.pumpLocked()
}

// stop ends dispatching and returns a channel closed once every dispatched
// record has been acknowledged or abandoned.
func (p *partition) stop() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	p.queue = nil
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

// commitOffset returns the offset to commit and its offset map when either
// changed since the last commit.
func (p *partition) commitOffset() (kgo.EpochOffset, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, epoch, ok := p.window.base()
	if !ok {
		return kgo.EpochOffset{}, "", false
	}
	return p.changedLocked(off, epoch, p.window.doneAbove())
}

// changedLocked returns the commit of off with the map of doneAbove when
// it differs from the last one; an unmoved start without a map is not
// worth a commit.
func (p *partition) changedLocked(off int64, epoch int32, doneAbove []int64) (kgo.EpochOffset, string, bool) {
	meta := p.c.offsetMap(off, doneAbove)
	switch {
	case off <= p.window.start && meta == "", // nothing finished yet
		off < p.committed,
		off == p.committed && meta == p.committedMeta:
		return kgo.EpochOffset{}, "", false
	}
	return kgo.EpochOffset{Epoch: epoch, Offset: off}, meta, true
}

// txnOffset is what a transaction ending now would commit: the offset and
// map counting every produced record as done.
func (p *partition) txnOffset() (kgo.EpochOffset, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, epoch, ok, above := p.window.tentative()
	if !ok {
		return kgo.EpochOffset{}, "", false
	}
	return p.changedLocked(off, epoch, above)
}

func (p *partition) setCommitted(off int64, meta string) {
	p.mu.Lock()
	if off >= p.committed {
		p.committed, p.committedMeta = off, meta
	}
	p.mu.Unlock()
}

// uncommitted is the number of records held: fetched and not committable.
func (p *partition) uncommitted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.window.len()
}

func (p *partition) topicPartitions() map[string][]int32 {
	return map[string][]int32{p.topic: {p.id}}
}
