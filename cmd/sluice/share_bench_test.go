package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkShareThroughput measures share-group members on a 1-partition
// topic, each with SLUICE_MAX_IN_FLIGHT=50, against an API answering in
// 200 ms: a consumer group would keep one member busy whatever the replica
// count. It reports the steady-state rate (between the 10% and the 90%
// answer) as a ratio of the ideal members x 50 / 200 ms.
//
//	go test -run '^$' -bench ShareThroughput -benchtime 1x ./cmd/sluice
func BenchmarkShareThroughput(b *testing.B) {
	const inFlight, latency = 50, 200 * time.Millisecond
	for _, members := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("members-%d", members), func(b *testing.B) {
			for range b.N {
				benchShare(b, members, inFlight, latency)
			}
		})
	}
}

func benchShare(b *testing.B, members, inFlight int, latency time.Duration) {
	b.StopTimer()
	s := newShareStack(b, 30*time.Second)
	api := latencyAPI(func([]byte) time.Duration { return latency })
	defer api.Close()
	s.cfg.BaseURL = api.URL
	s.cfg.MaxInFlight = inFlight
	ideal := float64(members*inFlight) / latency.Seconds()
	records := int(ideal * 10) // about 10 s at the ideal rate
	recs := make([]*kgo.Record, records)
	for i := range recs {
		recs[i] = &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"p-%d"}`, i, i)}
	}
	s.produce(b, recs...)
	reader := s.client(b, kgo.ConsumeTopics("completions"))
	b.StartTimer()
	start := time.Now()
	stops := make([]func() error, members)
	for i := range stops {
		stops[i] = s.member(b)
	}
	var at []time.Duration // when each result arrived
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	for len(at) < records && ctx.Err() == nil {
		n := len(reader.PollFetches(ctx).Records())
		now := time.Since(start)
		for range n {
			at = append(at, now)
		}
	}
	cancel()
	b.StopTimer()
	for _, stop := range stops {
		_ = stop()
	}
	s.cluster.Close()
	if len(at) < records {
		b.Fatalf("%d of %d results", len(at), records)
	}
	slices.Sort(at)
	lo, hi := records/10, records*9/10
	rate := float64(hi-lo) / (at[hi] - at[lo]).Seconds()
	b.ReportMetric(rate, "records/s")
	b.ReportMetric(rate/ideal, "ratio_to_ideal")
	fmt.Printf("share throughput, %d members on 1 partition: %d records, steady state (10%%-90%%) %.0f records/s; ideal %d x %d / %s = %.0f; ratio %.3f\n",
		members, records, rate, members, inFlight, latency, ideal, rate/ideal)
}
