package consumer

import (
	"cmp"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
)

// offsetWindow tracks one partition's records between fetch and commit.
// Records finish in any order; the committable offset (the watermark) only
// moves over a contiguous prefix of finished offsets (Parallel Consumer's
// "contiguous watermark"), so a commit never passes an unfinished record.
//
// An unfinished record is an entry; a finished one keeps nothing but its
// offset, in a list of runs (inclusive ranges) above the watermark, the
// same shape the committed offset map has. So a partition can run far
// ahead of one slow record at the cost of a few bytes per run, not per
// record, and what a commit can say is exactly what the window holds.
//
// Offsets need not be contiguous: compaction, transaction markers and
// aborted records leave gaps that are never delivered. A finished record
// marks the gap below it as finished too, so gaps never split runs. Not
// safe for concurrent use: the owning partition's mutex guards it.
type offsetWindow struct {
	// pending holds the unfinished entries in offset order, from head.
	pending []*entry
	head    int
	// finishedSet is the watermark and the finished runs above it.
	finishedSet
	// start is the offset of the first record pushed: where consuming
	// began; -1 before the first push.
	start int64
	// last and lastEpoch are the offset and leader epoch of the last
	// record pushed; last is -1 before the first push.
	last      int64
	lastEpoch int32
}

// entryState is where an unfinished record is in its life.
type entryState uint8

const (
	// queued: fetched, waiting to be dispatched.
	queued entryState = iota
	// dispatched: handed to the handler, no ack yet.
	dispatched
	// produced: its outputs are written in the open transaction
	// (exactly-once); finished once the transaction commits, queued again
	// if it aborts.
	produced
)

// entry is one unfinished record.
type entry struct {
	offset int64
	// from is the first offset this record accounts for: one past the
	// record pushed before it, so its finish covers the gap below it.
	from  int64
	epoch int32
	state entryState
	// rec is held until the record finishes (or is given up): it may have
	// to be handed to the handler again.
	rec *kgo.Record
	// failures counts the times its outputs could not be written.
	failures int
	// size is what the record counts against the member's byte budget.
	size int64
	// key is the record key while it is dispatched in key order (keyed).
	key   string
	keyed bool
}

func newOffsetWindow() *offsetWindow {
	return &offsetWindow{finishedSet: finishedSet{next: -1}, start: -1, last: -1, lastEpoch: -1}
}

// finishedSet is a partition's finished offsets: all below the watermark
// next, and the runs above it.
type finishedSet struct {
	// next is the watermark: every offset below it is finished; -1 before
	// the first push.
	next int64
	// runs are the finished offsets above next, flattened inclusive
	// ranges [runs[2k], runs[2k+1]] (offsetMap's runs), ascending, not
	// touching each other or next.
	runs []int64
}

// add marks [from, to] finished and moves the watermark over a run that
// starts at it.
func (f *finishedSet) add(from, to int64) {
	f.runs = addRun(f.runs, from, to)
	if len(f.runs) > 0 && f.runs[0] == f.next {
		f.next = f.runs[1] + 1
		f.runs = f.runs[2:]
		if len(f.runs) == 0 {
			f.runs = nil // let the backing array go
		}
	}
}

// clone is a copy that shares nothing with f.
func (f finishedSet) clone() finishedSet {
	return finishedSet{next: f.next, runs: slices.Clone(f.runs)}
}

// asMap is the offset map of f. It shares memory with f: encode it before
// f changes.
func (f finishedSet) asMap() offsetMap { return offsetMap{base: f.next, runs: f.runs} }

// push appends a fetched record; offsets must increase.
func (w *offsetWindow) push(offset int64, epoch int32) *entry {
	from := w.last + 1
	if w.last < 0 {
		from, w.next, w.start = offset, offset, offset
	}
	e := &entry{offset: offset, from: from, epoch: epoch}
	w.pending = append(w.pending, e)
	w.last, w.lastEpoch = offset, epoch
	return e
}

// seen reports whether offset was pushed already (franz-go fetches again
// from the committed offset after an aborted transaction).
func (w *offsetWindow) seen(offset int64) bool { return w.last >= 0 && offset <= w.last }

// started reports whether any record was pushed.
func (w *offsetWindow) started() bool { return w.last >= 0 }

// finish removes e from the pending entries and marks its offsets
// finished. Entries finish near the head (records are dispatched in offset
// order), so the removal moves few pointers.
func (w *offsetWindow) finish(e *entry) {
	live := w.pending[w.head:]
	i, found := slices.BinarySearchFunc(live, e.offset, func(x *entry, o int64) int {
		return cmp.Compare(x.offset, o)
	})
	if !found || live[i] != e {
		return // not pending (finished already)
	}
	copy(live[1:i+1], live[:i])
	live[0] = nil
	w.head++
	if w.head > 0 && w.head >= len(w.pending)/2 {
		n := copy(w.pending, w.pending[w.head:])
		clear(w.pending[n:])
		w.pending = w.pending[:n]
		w.head = 0
	}
	w.add(e.from, e.offset)
}

// addRun inserts the finished range [from, to] into runs, merging it with
// the runs it touches. The range must not overlap a run.
func addRun(runs []int64, from, to int64) []int64 {
	k, _ := slices.BinarySearch(runs, from) // first bound >= from
	if k%2 == 1 {
		return runs // inside a run: finished already
	}
	joinLeft := k > 0 && runs[k-1] == from-1
	joinRight := k < len(runs) && runs[k] == to+1
	switch {
	case joinLeft && joinRight:
		runs[k-1] = runs[k+1]
		return slices.Delete(runs, k, k+2)
	case joinLeft:
		runs[k-1] = to
		return runs
	case joinRight:
		runs[k] = from
		return runs
	}
	return slices.Insert(runs, k, from, to)
}

// len is the number of unfinished records.
func (w *offsetWindow) len() int { return len(w.pending) - w.head }

// live returns the unfinished entries, oldest first.
func (w *offsetWindow) live() []*entry { return w.pending[w.head:] }

// base is the watermark with the leader epoch to commit it with: that of
// the first unfinished record, or of the last record when all finished
// (KIP-320 only needs an epoch in which the offset exists). ok is false
// before the first push.
func (w *offsetWindow) base() (offset int64, epoch int32, ok bool) {
	if w.last < 0 {
		return 0, -1, false
	}
	if live := w.live(); len(live) > 0 && live[0].from == w.next {
		return w.next, live[0].epoch, true
	}
	return w.next, w.lastEpoch, true
}

// restore returns the finished state to f and makes entries pending
// again; they must be the records finished since f was current
// (exactly-once: f is what the last committed transaction covered, and
// entries the records of the transaction that aborted).
func (w *offsetWindow) restore(f finishedSet, entries []*entry) {
	w.finishedSet = f.clone()
	live := append(w.live(), entries...)
	slices.SortFunc(live, func(a, b *entry) int { return cmp.Compare(a.offset, b.offset) })
	w.pending, w.head = live, 0
}
