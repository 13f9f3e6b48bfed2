package consumer

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka's fetch limits (fetch.max.bytes, max.partition.fetch.bytes) count
// the bytes on the wire, compressed; the client decompresses every batch
// it receives whole. A topic of repetitive prompts compressed 100-fold
// would turn one fetch sized for the byte budget into a hundred times that
// much memory. fetchSizer learns the compression ratio of the batches read
// (kgo.HookFetchBatchRead) and sizes the next fetches so their
// decompressed bytes, not their wire bytes, fit the budget's fetch share.
//
// Until a batch has been read the ratio is taken to be assumedRatio, so a
// backlog waiting at startup is first fetched in a small bite; the first
// batches read then set the real ratio. A higher ratio is adopted at
// once, a lower one gradually (ratioDecay per batch), so a topic mixing
// compressible and incompressible producers is sized for the former.
//
// Kafka returns the first batch of a fetch even when it is larger than
// the limits, so one batch is always read whatever its ratio; its size is
// bounded by kgo.MaxDecompressBatchBytes (maxDecompressBatchBytes).
type fetchSizer struct {
	maxBytes     int64 // decompressed bytes one fetch may carry
	maxPartBytes int64 // decompressed bytes one partition may add to a fetch

	mu      sync.Mutex
	cl      *kgo.Client // nil until the consumer runs
	ratio   float64     // decompressed / wire bytes, 0 until a batch is read
	applied [2]int32    // the fetch and partition limits the client has
}

const (
	// assumedRatio is the compression ratio assumed before any batch is
	// read: repetitive text compresses this much and more.
	assumedRatio = 64
	// ratioDecay is how much of the gap to a lower observed ratio one
	// batch closes.
	ratioDecay = 0.05
	// minFetchBytes is the smallest fetch limit asked for; Kafka returns
	// at least one batch whatever the limit.
	minFetchBytes = 4 << 10
	// maxFetchBytes is franz-go's default fetch.max.bytes (50 MiB).
	maxFetchBytes = 50 << 20
)

func newFetchSizer(budget int64) *fetchSizer {
	s := &fetchSizer{
		maxBytes:     fetchMaxBytes(budget),
		maxPartBytes: fetchMaxPartitionBytes(budget),
	}
	s.applied = s.limitsLocked()
	return s
}

// limits returns the fetch.max.bytes and max.partition.fetch.bytes to ask
// for now.
func (s *fetchSizer) limits() (fetchBytes, partBytes int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limitsLocked()
	return l[0], l[1]
}

func (s *fetchSizer) limitsLocked() [2]int32 {
	r := s.ratio
	if r == 0 {
		r = assumedRatio
	}
	r = max(r, 1)
	fetch := clampFetch(float64(s.maxBytes) / r)
	part := min(clampFetch(float64(s.maxPartBytes)/r), fetch)
	return [2]int32{int32(fetch), int32(part)}
}

func clampFetch(n float64) int64 {
	return int64(min(max(n, minFetchBytes), maxFetchBytes))
}

// setClient starts applying the limits to cl.
func (s *fetchSizer) setClient(cl *kgo.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cl = cl
	s.applyLocked()
}

// OnFetchBatchRead implements kgo.HookFetchBatchRead: it folds the batch's
// compression ratio into the estimate and resizes the fetches when the
// limits move by more than an eighth.
func (s *fetchSizer) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	if m.CompressedBytes <= 0 || m.UncompressedBytes <= 0 {
		return
	}
	r := max(float64(m.UncompressedBytes)/float64(m.CompressedBytes), 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ratio == 0 || r >= s.ratio:
		s.ratio = r
	default:
		s.ratio -= (s.ratio - r) * ratioDecay
	}
	s.applyLocked()
}

func (s *fetchSizer) applyLocked() {
	want := s.limitsLocked()
	if s.cl == nil || (!movedAnEighth(s.applied[0], want[0]) && !movedAnEighth(s.applied[1], want[1])) {
		return
	}
	s.applied = want
	s.cl.UpdateFetchMaxBytes(want[0], want[1])
}

func movedAnEighth(from, to int32) bool {
	d := int64(to) - int64(from)
	return d*8 > int64(from) || -d*8 > int64(from)
}

// maxDecompressBatchBytes bounds the one batch a fetch always carries,
// decompressed: the byte budget, at least 64 MiB (a few full batches of
// Kafka's default 1 MiB max.message.bytes at a high ratio), at most
// franz-go's default of 1 GiB. A batch past it stops its partition (kgo
// logs the offsets; see poll).
func maxDecompressBatchBytes(budget int64) int {
	return int(min(max(budget, 64<<20), 1<<30))
}
