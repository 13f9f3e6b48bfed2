package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// latencyProfile is how long the simulated API takes to answer: base for
// most requests, base+tail for a fixed fraction of them, picked by a hash
// of the request so every run slows the same records.
type latencyProfile struct {
	name     string
	base     time.Duration
	tailFrac float64 // fraction of answers that take base+tail
	tail     time.Duration
	records  int
}

// mean is the mean answer time, which the ideal rate is C over.
func (lp latencyProfile) mean() time.Duration {
	return lp.base + time.Duration(lp.tailFrac*float64(lp.tail))
}

func (lp latencyProfile) latency(body []byte) time.Duration {
	h := fnv.New64a()
	h.Write(body)
	if float64(h.Sum64()%100_000) < lp.tailFrac*100_000 {
		return lp.base + lp.tail
	}
	return lp.base
}

// BenchmarkPipelineThroughput measures one partition through the whole
// pipeline with SLUICE_MAX_IN_FLIGHT=C and default settings otherwise,
// against an API whose latency follows a profile: fixed, heavy-tailed (a
// reasoning model: 2% of answers 3 s slower) and rare-long-tailed (0.5%
// of answers 20 s slower). It reports the steady-state rate (between the
// 10% and the 90% answer) as a ratio of the ideal C / mean latency.
//
//	go test -run '^$' -bench PipelineThroughput -benchtime 1x ./cmd/sluice
func BenchmarkPipelineThroughput(b *testing.B) {
	const inFlight = 256
	for _, lp := range []latencyProfile{
		{name: "fixed", base: 100 * time.Millisecond, records: 8000},
		{name: "heavy-tail", base: 100 * time.Millisecond, tailFrac: 0.02, tail: 3 * time.Second, records: 20000},
		{name: "rare-long-tail", base: 100 * time.Millisecond, tailFrac: 0.005, tail: 20 * time.Second, records: 20000},
	} {
		b.Run(lp.name, func(b *testing.B) {
			for range b.N {
				benchThroughput(b, lp, inFlight, config.AtLeastOnce)
			}
		})
		if lp.name == "fixed" {
			b.Run(lp.name+"/exactly-once", func(b *testing.B) {
				for range b.N {
					benchThroughput(b, lp, inFlight, config.ExactlyOnce)
				}
			})
		}
	}
}

// commitCounter counts the commits a member sends: OffsetCommit requests
// (at least once) and EndTxn requests (exactly once).
type commitCounter struct{ n atomic.Int64 }

func (c *commitCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil && (key == int16(kmsg.OffsetCommit) || key == int16(kmsg.EndTxn)) {
		c.n.Add(1)
	}
}

func benchThroughput(b *testing.B, lp latencyProfile, inFlight int, mode string) {
	b.StopTimer()
	s := newTestStack(b, 1)
	api := latencyAPI(lp.latency)
	defer api.Close()
	s.cfg.BaseURL = api.URL
	s.cfg.MaxInFlight = inFlight
	s.cfg.CommitInterval = time.Second
	s.cfg.Mode = mode
	s.cfg.TransactionalID = "bench-0"
	s.cfg.RequestTimeout = 2 * (lp.base + lp.tail + time.Second)
	recs := make([]*kgo.Record, lp.records)
	for i := range recs {
		recs[i] = &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"p-%d"}`, i, i)}
	}
	s.produce(b, recs...)
	reader := s.client(b, kgo.ConsumeTopics("completions"))
	b.StartTimer()
	start, cpuStart := time.Now(), cpuTime()
	commits := &commitCounter{}
	stop := s.member(b, kgo.WithHooks(commits))
	var at []time.Duration // when each result arrived
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	for len(at) < lp.records && ctx.Err() == nil {
		n := len(reader.PollFetches(ctx).Records())
		now := time.Since(start)
		for range n {
			at = append(at, now)
		}
	}
	cancel()
	cpu := cpuTime() - cpuStart
	b.StopTimer()
	_ = stop()
	s.cluster.Close()
	if len(at) < lp.records {
		b.Fatalf("%d of %d results", len(at), lp.records)
	}
	slices.Sort(at)
	lo, hi := lp.records/10, lp.records*9/10
	rate := float64(hi-lo) / (at[hi] - at[lo]).Seconds()
	ideal := float64(inFlight) / lp.mean().Seconds()
	b.ReportMetric(rate, "records/s")
	b.ReportMetric(rate/ideal, "ratio_to_ideal")
	// The whole process: kafka, the API stub and the pipeline.
	cpuPerRecord := cpu / time.Duration(lp.records)
	b.ReportMetric(float64(cpuPerRecord.Microseconds()), "cpu_us/record")
	commitRate := float64(commits.n.Load()) / at[len(at)-1].Seconds()
	b.ReportMetric(commitRate, "commits/s")
	fmt.Printf("pipeline throughput %s (%s): %d records, steady state (10%%-90%%) %.0f records/s; ideal C/mean latency = %d/%s = %.0f; ratio %.3f; CPU %s/record (whole test process); %.1f commits/s\n",
		lp.name, mode, lp.records, rate, inFlight, lp.mean(), ideal, rate/ideal, cpuPerRecord, commitRate)
}

// latencyAPI is a chat-completions endpoint answering every request after
// latency(its body).
func latencyAPI(latency func(body []byte) time.Duration) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(body)
		select { // the simulated API latency
		case <-time.After(latency(body)):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`)
	}))
}

// cpuTime is the CPU time this process used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
