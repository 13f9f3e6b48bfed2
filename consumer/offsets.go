package consumer

// offsetWindow tracks the records of one partition that were dispatched but
// are not yet committable, in offset order. Records finish in any order; the
// committable offset only moves over a contiguous prefix of finished records
// (Parallel Consumer's "contiguous watermark"), so a commit never passes an
// unfinished record. Offsets need not be contiguous (compaction and
// transaction markers leave gaps). Not safe for concurrent use: the owning
// partition's mutex guards it.
type offsetWindow struct {
	entries []*entry // dispatched, oldest first; entries[head:] are live
	head    int
	// next is the offset to commit: one past the last record of the
	// finished prefix; -1 until a record finishes.
	next  int64
	epoch int32 // leader epoch of the record before next
}

// entry is one dispatched record.
type entry struct {
	offset int64
	epoch  int32
	done   bool
}

func newOffsetWindow() *offsetWindow { return &offsetWindow{next: -1, epoch: -1} }

// push appends a dispatched record; offsets must increase.
func (w *offsetWindow) push(offset int64, epoch int32) *entry {
	e := &entry{offset: offset, epoch: epoch}
	w.entries = append(w.entries, e)
	return e
}

// finish marks e done and advances the watermark over the finished prefix.
func (w *offsetWindow) finish(e *entry) {
	e.done = true
	for w.head < len(w.entries) && w.entries[w.head].done {
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

// len is the number of dispatched records not yet committable.
func (w *offsetWindow) len() int { return len(w.entries) - w.head }

// committable returns the offset to commit and its epoch; ok is false until
// some prefix finished.
func (w *offsetWindow) committable() (offset int64, epoch int32, ok bool) {
	return w.next, w.epoch, w.next >= 0
}

// doneAbove lists the finished offsets above the watermark (for the
// offset-map commit metadata and for tests).
func (w *offsetWindow) doneAbove() []int64 {
	var out []int64
	for _, e := range w.entries[w.head:] {
		if e.done {
			out = append(out, e.offset)
		}
	}
	return out
}
