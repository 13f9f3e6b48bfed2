package consumer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestOffsetWindowWatermark(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		offsets []int64 // dispatched, in order
		finish  []int   // indexes into offsets, in finishing order
		want    int64   // watermark afterwards
		runs    []int64 // finished runs above it
		held    int     // unfinished records
	}{
		{"nothing finished", []int64{0, 1, 2}, nil, 0, nil, 3},
		{"head unfinished", []int64{0, 1, 2}, []int{1, 2}, 0, []int64{1, 2}, 1},
		{"prefix", []int64{0, 1, 2}, []int{0, 2}, 1, []int64{2, 2}, 1},
		{"all out of order", []int64{0, 1, 2, 3}, []int{3, 1, 2, 0}, 4, nil, 0},
		{"gaps from compaction or markers", []int64{10, 13, 20}, []int{0, 1}, 14, nil, 1},
		{"a finished record covers the gap below it", []int64{10, 13, 20}, []int{2}, 10, []int64{14, 20}, 2},
		{"all with gaps", []int64{10, 13, 20}, []int{2, 0, 1}, 21, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newOffsetWindow()
			var es []*entry
			for _, o := range tt.offsets {
				es = append(es, w.push(o, 7))
			}
			for _, i := range tt.finish {
				w.finish(es[i])
			}
			got, epoch, ok := w.base()
			if !ok || got != tt.want || w.len() != tt.held || !slices.Equal(w.runs, tt.runs) {
				t.Fatalf("base = %d (ok %v), runs %v, held = %d; want %d, %v, %d", got, ok, w.runs, w.len(), tt.want, tt.runs, tt.held)
			}
			if epoch != 7 {
				t.Fatalf("epoch = %d, want 7", epoch)
			}
		})
	}
}

// TestOffsetWindowRandomOrder finishes records in random order and checks
// after every step that the watermark equals one past the longest finished
// prefix, never more, and that the runs above it are exactly the finished
// records.
func TestOffsetWindowRandomOrder(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			w := newOffsetWindow()
			const n = 500
			es := make([]*entry, n)
			for i := range n {
				es[i] = w.push(int64(i), 0)
			}
			done := make([]bool, n)
			finished := 0
			for _, i := range rng.Perm(n) {
				w.finish(es[i])
				done[i] = true
				finished++
				prefix := 0
				for prefix < n && done[prefix] {
					prefix++
				}
				got, _, _ := w.base()
				if got != int64(prefix) {
					t.Fatalf("after finishing %d: watermark %d, want %d", i, got, prefix)
				}
				if w.len() != n-finished {
					t.Fatalf("held %d, want %d", w.len(), n-finished)
				}
				m := w.asMap()
				for o := prefix; o < n; o++ {
					if m.done(int64(o)) != done[o] {
						t.Fatalf("offset %d: map says %v, finished %v", o, m.done(int64(o)), done[o])
					}
				}
			}
			if cap(w.pending) > 2*n {
				t.Fatalf("backing array grew to %d", cap(w.pending))
			}
		})
	}
}

// TestOffsetWindowFinishedCostsNoEntry runs a partition far ahead of one
// slow record: what finished is one run, not an entry per record.
func TestOffsetWindowFinishedCostsNoEntry(t *testing.T) {
	t.Parallel()
	w := newOffsetWindow()
	slow := w.push(0, 0)
	for o := int64(1); o <= 100_000; o++ {
		w.finish(w.push(o, 0))
	}
	if w.len() != 1 || len(w.runs) != 2 || w.runs[0] != 1 || w.runs[1] != 100_000 {
		t.Fatalf("held %d, runs %v; want 1 held and one run 1-100000", w.len(), w.runs)
	}
	if cap(w.pending) > 4 {
		t.Fatalf("pending entries kept a backing array of %d", cap(w.pending))
	}
	w.finish(slow)
	if got, _, _ := w.base(); got != 100_001 || w.len() != 0 || len(w.runs) != 0 {
		t.Fatalf("after the slow record: watermark %d, held %d, runs %v", got, w.len(), w.runs)
	}
}

// TestOffsetWindowRestore is the exactly-once abort: the records finished
// since the last committed transaction become pending again.
func TestOffsetWindowRestore(t *testing.T) {
	t.Parallel()
	w := newOffsetWindow()
	var es []*entry
	for o := range int64(6) {
		es = append(es, w.push(o, 0))
	}
	w.finish(es[0])
	w.finish(es[2])
	base := w.clone()
	w.finish(es[1])
	w.finish(es[4])
	w.restore(base, []*entry{es[4], es[1]})
	if got, _, _ := w.base(); got != 1 || !slices.Equal(w.runs, []int64{2, 2}) || w.len() != 4 {
		t.Fatalf("watermark %d, runs %v, held %d; want 1, [2 2], 4", got, w.runs, w.len())
	}
	if live := w.live(); live[0] != es[1] || live[1] != es[3] || live[2] != es[4] || live[3] != es[5] {
		t.Fatal("pending entries are not in offset order")
	}
}
