package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkMemoryBigRecords runs `sluice consume` in a child process over
// a backlog of 1,600 prompts of 200 KB (320 MB) on 8 partitions with an
// API that never answers, and reports the child's peak RSS (VmHWM) and Go
// heap once its buffered bytes stop growing, against
// SLUICE_MAX_BUFFERED_BYTES: 64MiB (target: peak RSS ≤ 192 MiB) and the
// default 256MiB (target ≤ 384 MiB). The gzip cases repeat them with
// prompts of repetitive text produced gzip-compressed (~200-fold on the
// wire), where Kafka's fetch limits, counting wire bytes, say little about
// memory.
//
//	go test -run '^$' -bench MemoryBigRecords -benchtime 1x ./cmd/sluice
func BenchmarkMemoryBigRecords(b *testing.B) {
	for _, bc := range []struct {
		name       string
		env        []string
		targetMiB  float64
		compressed bool
	}{
		{"bound=64MiB", []string{"SLUICE_MAX_BUFFERED_BYTES=64MiB"}, 192, false},
		{"bound=default", nil, 384, false},
		{"bound=64MiB/gzip", []string{"SLUICE_MAX_BUFFERED_BYTES=64MiB"}, 192, true},
		{"bound=default/gzip", nil, 384, true},
	} {
		b.Run("stuck/"+bc.name, func(b *testing.B) {
			for range b.N {
				rss, heap := stuckBacklogPeak(b, bc.compressed, bc.env...)
				b.ReportMetric(rss, "peak_rss_MiB")
				b.ReportMetric(rss/bc.targetMiB, "ratio_to_target")
				fmt.Printf("memory %s: peak RSS %.0f MiB, Go heap in use %.0f MiB; target ≤ %.0f MiB; ratio %.2f\n",
					bc.name, rss, heap, bc.targetMiB, rss/bc.targetMiB)
			}
		})
	}
}

// BenchmarkMemoryBoundFinishes is the other side of the byte bound: 1,600
// prompts of 200 KB with SLUICE_MAX_BUFFERED_BYTES=1MiB and an answering
// API all finish (every record is taken alone when it is larger than the
// bound). It reports the peak RSS and the records per second.
func BenchmarkMemoryBoundFinishes(b *testing.B) {
	for range b.N {
		b.StopTimer()
		const partitions, n = 8, 1600
		s := newTestStack(b, partitions)
		s.produceSpreadPrompts(b, bigPrompts(n, 200_000, "big"), partitions)
		b.StartTimer()
		start := time.Now()
		cmd := s.startProcess(b, "SLUICE_MAX_BUFFERED_BYTES=1MiB")
		got := len(s.collect(b, "completions", n))
		elapsed := time.Since(start)
		rss := peakRSSMiB(b, cmd.Process.Pid)
		b.StopTimer()
		b.ReportMetric(rss, "peak_rss_MiB")
		fmt.Printf("memory bound=1MiB, API answering: %d of %d results in %s (%.0f records/s), peak RSS %.0f MiB\n",
			got, n, elapsed.Round(time.Millisecond), float64(got)/elapsed.Seconds(), rss)
	}
}

// bigPrompts returns n prompts of about size bytes of incompressible text,
// each starting with prefix (the stub API hangs on "slow").
func bigPrompts(n, size int, prefix string) []string {
	raw := make([]byte, size*3/4)
	prompts := make([]string, n)
	for i := range prompts {
		_, _ = rand.Read(raw)
		prompts[i] = prefix + " " + strconv.Itoa(i) + " " + base64.StdEncoding.EncodeToString(raw)
	}
	return prompts
}

// repetitivePrompts returns n prompts of about size bytes of one sentence
// repeated, each starting with prefix: gzip shrinks them ~200-fold.
func repetitivePrompts(n, size int, prefix string) []string {
	const sentence = "Summarise the following quarterly report in three bullet points. "
	body := strings.Repeat(sentence, size/len(sentence))
	prompts := make([]string, n)
	for i := range prompts {
		prompts[i] = prefix + " " + strconv.Itoa(i) + " " + body
	}
	return prompts
}

func stuckBacklogPeak(b *testing.B, compressed bool, env ...string) (rssMiB, heapMiB float64) {
	b.StopTimer()
	const partitions = 8
	s := newTestStack(b, partitions)
	if compressed {
		s.produceSpreadPrompts(b, repetitivePrompts(1600, 200_000, "slow"), partitions,
			kgo.ProducerBatchCompression(kgo.GzipCompression()))
	} else {
		s.produceSpreadPrompts(b, bigPrompts(1600, 200_000, "slow"), partitions)
	}
	addr := freeAddr(b)
	b.StartTimer()
	cmd := s.startProcess(b, append([]string{"SLUICE_HTTP_ADDR=" + addr}, env...)...)
	// Steady: calls in flight and the buffered bytes unchanged for 3 s.
	last, since := -1.0, time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond) // sampling an endpoint
		m, err := tryScrape(addr)
		if err != nil {
			continue
		}
		if v := m["sluice_buffered_bytes"]; v != last || s.api.active.Load() == 0 {
			last, since = v, time.Now()
			continue
		}
		if time.Since(since) > 3*time.Second {
			heapMiB = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
			break
		}
	}
	rssMiB = peakRSSMiB(b, cmd.Process.Pid)
	b.StopTimer()
	return rssMiB, heapMiB
}

// peakRSSMiB reads a process's peak resident set (VmHWM) on Linux.
func peakRSSMiB(t testing.TB, pid int) float64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
