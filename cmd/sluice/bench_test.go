package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkPipelineThroughput measures one partition through the whole
// pipeline against an API of fixed latency L with SLUICE_MAX_IN_FLIGHT=C,
// and reports the ratio of the achieved rate to the ideal C/L.
//
//	go test -run '^$' -bench PipelineThroughput -benchtime 1x ./cmd/sluice
func BenchmarkPipelineThroughput(b *testing.B) {
	const (
		records  = 6000
		inFlight = 256
		latency  = 100 * time.Millisecond
	)
	for range b.N {
		b.StopTimer()
		s := newTestStack(b, 1)
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(latency) // the simulated API latency
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`)
		}))
		s.cfg.BaseURL = api.URL
		s.cfg.MaxInFlight = inFlight
		s.cfg.PartitionWindow = 4 * inFlight
		s.cfg.CommitInterval = time.Second
		recs := make([]*kgo.Record, records)
		for i := range recs {
			recs[i] = &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"p-%d"}`, i, i)}
		}
		s.produce(b, recs...)
		reader := s.client(b, kgo.ConsumeTopics("completions"))
		b.StartTimer()
		start := time.Now()
		stop := s.member(b)
		got := 0
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for got < records && ctx.Err() == nil {
			got += len(reader.PollFetches(ctx).Records())
		}
		elapsed := time.Since(start)
		cancel()
		b.StopTimer()
		_ = stop()
		api.Close()
		s.cluster.Close()
		rate := float64(got) / elapsed.Seconds()
		ideal := float64(inFlight) / latency.Seconds()
		b.ReportMetric(rate, "records/s")
		b.ReportMetric(rate/ideal, "ratio_to_C/L")
		fmt.Printf("pipeline throughput: %d records in %s = %.0f records/s; ideal C/L = %.0f; ratio %.3f\n",
			got, elapsed.Round(time.Millisecond), rate, ideal, rate/ideal)
	}
}
