package consumer

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestOffsetWindowWatermark(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		offsets []int64 // dispatched, in order
		finish  []int   // indexes into offsets, in finishing order
		want    int64   // committable offset afterwards, -1 = none
		held    int
	}{
		{"nothing finished", []int64{0, 1, 2}, nil, -1, 3},
		{"head unfinished", []int64{0, 1, 2}, []int{1, 2}, -1, 3},
		{"prefix", []int64{0, 1, 2}, []int{0, 2}, 1, 2},
		{"all out of order", []int64{0, 1, 2, 3}, []int{3, 1, 2, 0}, 4, 0},
		{"gaps from compaction or markers", []int64{10, 13, 20}, []int{0, 1}, 14, 1},
		{"all with gaps", []int64{10, 13, 20}, []int{2, 0, 1}, 21, 0},
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
			got, epoch, ok := w.committable()
			if !ok {
				got = -1
			}
			if got != tt.want || w.len() != tt.held {
				t.Fatalf("committable = %d, held = %d; want %d, %d", got, w.len(), tt.want, tt.held)
			}
			if ok && epoch != 7 {
				t.Fatalf("epoch = %d, want 7", epoch)
			}
		})
	}
}

// TestOffsetWindowRandomOrder finishes records in random order and checks
// after every step that the watermark equals one past the longest finished
// prefix, never more.
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
			for _, i := range rng.Perm(n) {
				w.finish(es[i])
				done[i] = true
				prefix := 0
				for prefix < n && done[prefix] {
					prefix++
				}
				got, _, ok := w.committable()
				if (prefix == 0 && ok) || (prefix > 0 && got != int64(prefix)) {
					t.Fatalf("after finishing %d: committable %d (ok=%v), want %d", i, got, ok, prefix)
				}
				if w.len() != n-prefix {
					t.Fatalf("held %d, want %d", w.len(), n-prefix)
				}
			}
			if cap(w.entries) > 2*n {
				t.Fatalf("backing array grew to %d", cap(w.entries))
			}
		})
	}
}
