package consumer

import (
	"context"
	"errors"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// errReleased is the cause given to a partition's context when its
// unfinished records are abandoned (revoked past the deadline, lost, or the
// drain timed out).
var errReleased = errors.New("consumer: partition released")

// partition is the state of one assigned partition: records fetched but not
// yet dispatched (queue), records dispatched but not yet committable
// (window), and the pause state of its fetching. All of it is guarded by mu.
type partition struct {
	c      *Consumer
	topic  string
	id     int32
	ctx    context.Context // handlers of this partition run under it
	cancel context.CancelCauseFunc

	mu          sync.Mutex
	queue       []*kgo.Record
	window      *offsetWindow
	outstanding int           // dispatched records whose ack has not come
	idle        chan struct{} // closed when outstanding drops to 0; nil when nobody waits
	stopped     bool          // no more dispatching: revoked, lost or draining
	paused      bool          // fetching is paused because queue is full
	committed   int64         // last offset committed by this member, -1 if none
}

func newPartition(c *Consumer, topic string, id int32) *partition {
	ctx, cancel := context.WithCancelCause(c.workCtx)
	return &partition{c: c, topic: topic, id: id, ctx: ctx, cancel: cancel, window: newOffsetWindow(), committed: -1}
}

// enqueue adds fetched records and dispatches what the window allows.
// When the queue is full the partition's fetching is paused: franz-go keeps
// the position, so nothing fetched is lost, only fetched again later.
func (p *partition) enqueue(recs []*kgo.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.queue = append(p.queue, recs...)
	if !p.paused && len(p.queue) >= p.c.cfg.PartitionWindow {
		p.paused = true
		p.c.cl.PauseFetchPartitions(p.topicPartitions())
	}
	p.pumpLocked()
}

// pumpLocked dispatches queued records while the window has room.
func (p *partition) pumpLocked() {
	for !p.stopped && len(p.queue) > 0 && p.window.len() < p.c.cfg.PartitionWindow {
		rec := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		e := p.window.push(rec.Offset, rec.LeaderEpoch)
		p.outstanding++
		p.c.handlers.Add(1)
		go func() {
			defer p.c.handlers.Done()
			p.c.handler.Handle(p.ctx, rec, func(err error) { p.ack(e, err) })
		}()
	}
	if len(p.queue) == 0 {
		p.queue = nil // let the old backing array go
	}
	if p.paused && len(p.queue) <= p.c.cfg.PartitionWindow/2 {
		p.paused = false
		p.c.cl.ResumeFetchPartitions(p.topicPartitions())
	}
}

// ack is the handler's report for one record: nil once its outputs are
// acknowledged by the brokers.
func (p *partition) ack(e *entry, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outstanding--
	switch {
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

// commitOffset returns the offset to commit when it moved past the last
// commit.
func (p *partition) commitOffset() (kgo.EpochOffset, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, epoch, ok := p.window.committable()
	if !ok || off <= p.committed {
		return kgo.EpochOffset{}, false
	}
	return kgo.EpochOffset{Epoch: epoch, Offset: off}, true
}

func (p *partition) setCommitted(off int64) {
	p.mu.Lock()
	p.committed = max(p.committed, off)
	p.mu.Unlock()
}

// uncommitted is the number of records held: queued plus in the window.
func (p *partition) uncommitted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) + p.window.len()
}

func (p *partition) topicPartitions() map[string][]int32 {
	return map[string][]int32{p.topic: {p.id}}
}
