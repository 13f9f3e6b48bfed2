package consumer

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestFetchSizerFollowsTheCompressionRatio(t *testing.T) {
	const budget = 8 << 20
	s := newFetchSizer(budget)
	full := int32(fetchMaxBytes(budget))

	fetch, part := s.limits()
	if want := full / assumedRatio; fetch != want || part > fetch {
		t.Fatalf("before any batch: limits %d/%d, want %d and the partition's no larger", fetch, part, want)
	}

	// A batch of 1 MB of records that travelled as 4 KB: the next fetches
	// ask for what decompresses to the budget's share.
	s.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{UncompressedBytes: 1 << 20, CompressedBytes: 4 << 10})
	if fetch, _ = s.limits(); int64(fetch)*256 > int64(full)+minFetchBytes*256 {
		t.Fatalf("after a 256x batch: fetch limit %d decompresses to %d, over the share %d", fetch, int64(fetch)*256, full)
	}

	// Incompressible batches bring the limit back up, gradually.
	s.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{UncompressedBytes: 1 << 20, CompressedBytes: 1 << 20})
	if next, _ := s.limits(); next > 2*fetch {
		t.Fatalf("one incompressible batch after a 256x one: limit %d -> %d; want a gradual rise", fetch, next)
	}
	for range 500 {
		s.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{UncompressedBytes: 1 << 20, CompressedBytes: 1 << 20})
	}
	if fetch, part = s.limits(); fetch < full*7/8 || part < int32(fetchMaxPartitionBytes(budget))*7/8 {
		t.Fatalf("after many incompressible batches: limits %d/%d, want about %d/%d", fetch, part, full, fetchMaxPartitionBytes(budget))
	}

	// A more compressible batch is adopted at once.
	s.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{UncompressedBytes: 1 << 20, CompressedBytes: 8 << 10})
	if fetch, _ = s.limits(); int64(fetch)*128 > int64(full)+minFetchBytes*128 {
		t.Fatalf("after a 128x batch: fetch limit %d, want about %d", fetch, int64(full)/128)
	}
}

// countingHook sums the decompressed bytes of the batches a client reads.
type countingHook struct{ read atomic.Int64 }

func (h *countingHook) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.read.Add(int64(m.UncompressedBytes))
}

// A backlog of repetitive prompts compressed ~100-fold, with nothing ever
// finishing: what the member reads from the brokers, decompressed, stays
// near the byte budget instead of a hundred fetch shares.
func TestCompressedBacklogStaysNearTheBudget(t *testing.T) {
	const (
		topic  = "prompts"
		budget = 2 << 20
		n      = 120
		size   = 200_000
	)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	addrs := cluster.ListenAddrs()

	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ProducerBatchCompression(kgo.GzipCompression()),
		kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sentence := "Summarise the following quarterly report in three bullet points. "
	body := strings.Repeat(sentence, size/len(sentence))
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Value: fmt.Appendf(nil, "%d %s", i, body)}
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	prod.Close()

	c := New(Config{Group: "g", Topic: topic, MaxBufferedBytes: budget, MaxDispatched: 8, DrainTimeout: time.Millisecond}, zerolog.Nop())
	read := &countingHook{}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.WithHooks(read)}, c.ClientOpts()...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)

	ctx, cancel := context.WithCancel(context.Background())
	stuck := HandlerFunc(func(ctx context.Context, _ *kgo.Record, ack func(error)) {
		<-ctx.Done()
		ack(ctx.Err())
	})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, cl, stuck) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	// Nothing finishes, so the member fills its budget and pauses.
	for c.BufferedBytes() < budget {
		if read.read.Load() > 3*budget {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := read.read.Load(); got > 3*budget {
		t.Fatalf("read %d MiB decompressed with a %d MiB budget and nothing finishing; want at most 3x the budget",
			got>>20, budget>>20)
	}
}
