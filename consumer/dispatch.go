package consumer

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The member bounds its work three ways, each with its own job:
//
//   - dispatch slots (Config.MaxDispatched): records handed to the handler
//     at once, across partitions. A record waits in its partition's queue,
//     with no goroutine, until a slot frees; slots go to partitions in
//     turn, one record each, so no partition's backlog starves another's.
//   - bytes (Config.MaxBufferedBytes): what the fetched records held by the
//     member weigh, queued or dispatched (recordSize). Fetching pauses when
//     the bound is reached and resumes below it; a record larger than the
//     bound is still taken, alone.
//   - the uncommitted span (offsetMapRoom): a partition runs ahead of a
//     slow record only as far as the committed offset map can list what
//     finished above it, so a crash redoes no finished record.

// recordOverhead is what a held record costs besides its key, value and
// headers: the kgo.Record, the entry and their bookkeeping.
const recordOverhead = 320

// recordSize is what rec counts against the byte budget: its key, value
// and headers twice, once as fetched and once for what the handler builds
// from them while the record is in flight (the request body is about the
// size of the value), plus the bookkeeping. So the bound is on memory,
// not on a part of it.
func recordSize(rec *kgo.Record) int64 {
	n := int64(len(rec.Key) + len(rec.Value))
	for _, h := range rec.Headers {
		n += int64(len(h.Key) + len(h.Value) + 32)
	}
	return recordOverhead + 2*n
}

// detach gives rec's key, value and header values memory of their own.
// franz-go slices them out of the fetch response (or the decompressed
// batch), so one record held for a slow call would otherwise pin the
// whole response and the byte budget would not bound memory.
func detach(rec *kgo.Record) {
	n := len(rec.Key) + len(rec.Value)
	for _, h := range rec.Headers {
		n += len(h.Value)
	}
	buf := make([]byte, 0, n)
	take := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	rec.Key, rec.Value = take(rec.Key), take(rec.Value)
	if len(rec.Headers) > 0 {
		hs := make([]kgo.RecordHeader, len(rec.Headers))
		for i, h := range rec.Headers {
			hs[i] = kgo.RecordHeader{Key: h.Key, Value: take(h.Value)}
		}
		rec.Headers = hs
	}
}

// recordQueue is what the dispatcher asks for records: a partition of a
// consumer group member, or the queue of a share-group member (share.go).
type recordQueue interface {
	// dispatchOne hands one queued record to the handler if it may; the
	// caller holds a dispatch slot, which the record keeps until its
	// ack. It reports whether it dispatched.
	dispatchOne() bool
}

// dispatcher hands records to the handler as slots free: one goroutine,
// owned by run, takes a slot and gives it to the next queue in line that
// has a record it may dispatch.
type dispatcher struct {
	slots chan struct{} // a dispatched record holds one

	mu     sync.Mutex
	line   []recordQueue            // queues that may have a dispatchable record, FIFO
	inLine map[recordQueue]struct{} // the queues in line
	ready  chan struct{}            // wakes the loop when line was empty
}

func newDispatcher(maxDispatched int) *dispatcher {
	return &dispatcher{
		slots:  make(chan struct{}, maxDispatched),
		inLine: make(map[recordQueue]struct{}),
		ready:  make(chan struct{}, 1),
	}
}

// wake puts q in line (once) to be asked for a record.
func (d *dispatcher) wake(q recordQueue) {
	d.mu.Lock()
	if _, ok := d.inLine[q]; !ok {
		d.inLine[q] = struct{}{}
		d.line = append(d.line, q)
	}
	d.mu.Unlock()
	select {
	case d.ready <- struct{}{}:
	default:
	}
}

// next takes the first queue out of line; nil when none.
func (d *dispatcher) next() recordQueue {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.line) == 0 {
		return nil
	}
	p := d.line[0]
	d.line[0] = nil
	d.line = d.line[1:]
	if len(d.line) == 0 {
		d.line = nil
	}
	delete(d.inLine, p)
	return p
}

// done frees the slot of a record whose handler acknowledged it.
func (d *dispatcher) done() { <-d.slots }

// start runs the dispatcher in a goroutine it owns and returns the
// function that stops it and waits for it to return; that function may be
// called more than once (the drain stops dispatching early, a deferred call
// covers the other exits).
func (d *dispatcher) start() (stop func()) {
	done := make(chan struct{})
	stopc := make(chan struct{})
	go func() {
		defer close(done)
		d.run(stopc)
	}()
	return sync.OnceFunc(func() {
		close(stopc)
		<-done
	})
}

// run dispatches until stop is closed.
func (d *dispatcher) run(stop <-chan struct{}) {
	for {
		select {
		case d.slots <- struct{}{}:
		case <-stop:
			return
		}
		for {
			p := d.next()
			if p == nil {
				select {
				case <-d.ready:
					continue
				case <-stop:
					<-d.slots
					return
				}
			}
			// Taken out of line before it is asked: a change after the
			// answer puts it back.
			if p.dispatchOne() {
				d.wake(p) // it may have more: behind the others
				break
			}
		}
	}
}

// fetchPauser pauses and resumes fetching of topics: a *kgo.Client, or the
// gate of a share-group member's polls (share.go).
type fetchPauser interface {
	PauseFetchTopics(topics ...string) []string
	ResumeFetchTopics(topics ...string)
}

// byteBudget counts the bytes of the records the member holds and pauses
// fetching of the topic while they are at the bound (or while the member
// is held, see Hold).
type byteBudget struct {
	topic string
	max   int64

	mu       sync.Mutex
	cl       fetchPauser // nil until the consumer runs
	held     int64
	full     bool // fetching paused for the bytes
	holding  bool // fetching paused by Hold
	paused   bool // the topic's fetching is paused (full or holding)
	resumeAt int64
}

func newByteBudget(topic string, maxBytes int64) *byteBudget {
	// Resume once a fetch's worth is free again, so fetching does not
	// flap at the bound.
	return &byteBudget{topic: topic, max: maxBytes, resumeAt: maxBytes - fetchMaxBytes(maxBytes)}
}

// setClient starts pausing and resuming cl's fetching.
func (b *byteBudget) setClient(cl fetchPauser) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cl = cl
	b.applyLocked()
}

// add counts n more bytes held (negative: released).
func (b *byteBudget) add(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held += n
	switch {
	case !b.full && b.held >= b.max:
		b.full = true
	case b.full && b.held <= b.resumeAt:
		b.full = false
	default:
		return
	}
	b.applyLocked()
}

// hold pauses fetching for Hold, or undoes that.
func (b *byteBudget) hold(held bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = held
	b.applyLocked()
}

// applyLocked pauses or resumes the topic's fetching as full and holding
// say. A topic-level pause: independent of the partition-level pauses of
// partitions that cannot run further ahead.
func (b *byteBudget) applyLocked() {
	want := b.full || b.holding
	if want == b.paused || b.cl == nil {
		return
	}
	b.paused = want
	if want {
		b.cl.PauseFetchTopics(b.topic)
		return
	}
	b.cl.ResumeFetchTopics(b.topic)
}

// bytes returns the bytes held now.
func (b *byteBudget) bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// fetchMaxBytes is the most one fetch response may carry for a byte budget
// of maxBytes: an eighth of it, between 64 KiB and franz-go's default of
// 50 MiB. A poll then overshoots the budget by little.
func fetchMaxBytes(maxBytes int64) int64 {
	return min(max(maxBytes/8, 64<<10), 50<<20)
}

// fetchMaxPartitionBytes is the most one partition contributes to a fetch:
// Kafka's default of 1 MiB, or less under a small budget. A larger record
// is still fetched, alone.
func fetchMaxPartitionBytes(maxBytes int64) int64 {
	return min(fetchMaxBytes(maxBytes), 1<<20)
}
