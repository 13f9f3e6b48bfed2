package consumer

import "github.com/twmb/franz-go/pkg/kgo"

// offsetWindow tracks the records of one partition that were fetched but
// are not yet committable, in offset order. Records finish in any order;
// the committable offset only moves over a contiguous prefix of finished
// records (Parallel Consumer's "contiguous watermark"), so a commit never
// passes an unfinished record. Offsets need not be contiguous (compaction
// and transaction markers leave gaps). Not safe for concurrent use: the
// owning partition's mutex guards it.
type offsetWindow struct {
	entries []*entry // fetched, oldest first; entries[head:] are live
	head    int
	// next is the offset to commit: one past the last record of the
	// finished prefix; -1 until a record finishes.
	next  int64
	epoch int32 // leader epoch of the record before next
	// start is the offset of the first record pushed: where consuming
	// began, a valid offset to commit an offset map with before any prefix
	// finished; -1 before the first push.
	start int64
	// last is the offset of the last record pushed, -1 before the first.
	last int64
}

// entryState is where a record is in its life.
type entryState uint8

const (
	// queued: fetched, waiting to be dispatched.
	queued entryState = iota
	// dispatched: handed to the handler, no ack yet.
	dispatched
	// produced: its outputs are written in the open transaction
	// (exactly-once); done once the transaction commits, queued again if
	// it aborts.
	produced
	// done: its outputs are in Kafka for good.
	done
)

// entry is one fetched record.
type entry struct {
	offset int64
	epoch  int32
	state  entryState
	// rec is held while the record may still have to be handed to the
	// handler: until dispatched, or in exactly-once mode until done.
	rec *kgo.Record
	// key is the record key while it is dispatched in key order (keyed).
	key   string
	keyed bool
}

func newOffsetWindow() *offsetWindow { return &offsetWindow{next: -1, epoch: -1, start: -1, last: -1} }

// push appends a fetched record; offsets must increase.
func (w *offsetWindow) push(offset int64, epoch int32) *entry {
	e := &entry{offset: offset, epoch: epoch}
	w.entries = append(w.entries, e)
	if w.start < 0 {
		w.start = offset
	}
	w.last = offset
	return e
}

// seen reports whether offset was pushed already (franz-go fetches again
// from the committed offset after an aborted transaction).
func (w *offsetWindow) seen(offset int64) bool { return w.last >= 0 && offset <= w.last }

// base is the offset an offset map is written against: the watermark, or
// before any prefix finished, where consuming started.
func (w *offsetWindow) base() (offset int64, epoch int32, ok bool) {
	if w.next >= 0 {
		return w.next, w.epoch, true
	}
	return w.start, -1, w.start >= 0
}

// finish marks e done and advances the watermark over the finished prefix.
func (w *offsetWindow) finish(e *entry) {
	e.state, e.rec = done, nil
	for w.head < len(w.entries) && w.entries[w.head].state == done {
		first := w.entries[w.head]
		w.next, w.epoch = first.offset+1, first.epoch
		w.entries[w.head] = nil
		w.head++
	}
	// Reclaim the popped prefix once it is half the slice, so the backing
	// array stays within twice the window.
	if w.head > 0 && w.head >= len(w.entries)/2 {
		n := copy(w.entries, w.entries[w.head:])
		clear(w.entries[n:])
		w.entries = w.entries[:n]
		w.head = 0
	}
}

// len is the number of fetched records not yet committable.
func (w *offsetWindow) len() int { return len(w.entries) - w.head }

// live returns the entries not yet committable, oldest first.
func (w *offsetWindow) live() []*entry { return w.entries[w.head:] }

// committable returns the offset to commit and its epoch; ok is false until
// some prefix finished.
func (w *offsetWindow) committable() (offset int64, epoch int32, ok bool) {
	return w.next, w.epoch, w.next >= 0
}

// doneAbove lists the finished offsets above the watermark (for the
// offset-map commit metadata).
func (w *offsetWindow) doneAbove() []int64 { return w.above(done) }

// above lists the offsets above the watermark whose state is at least s.
func (w *offsetWindow) above(s entryState) []int64 {
	var out []int64
	for _, e := range w.live() {
		if e.state >= s {
			out = append(out, e.offset)
		}
	}
	return out
}

// tentative is what committable and doneAbove would return if every
// produced record were done: what a transaction may commit together with
// those records' outputs.
func (w *offsetWindow) tentative() (offset int64, epoch int32, ok bool, doneAbove []int64) {
	offset, epoch, ok = w.base()
	if !ok {
		return offset, epoch, false, nil
	}
	live := w.live()
	i := 0
	for ; i < len(live) && live[i].state >= produced; i++ {
		offset, epoch = live[i].offset+1, live[i].epoch
	}
	for _, e := range live[i:] {
		if e.state >= produced {
			doneAbove = append(doneAbove, e.offset)
		}
	}
	return offset, epoch, true, doneAbove
}
