package main

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
)

// slowHeadRecords writes, to each of the partitions, one record that the
// stub API holds until unblocked ("slow") followed by fast ones: the
// partition runs far ahead of its oldest unfinished record.
func (s *testStack) slowHeadRecords(t testing.TB, partitions int32, fast int) (total int) {
	t.Helper()
	return s.slowHeadRecordsOf(t, partitions, fast, "sleep-2")
}

// slowHeadRecordsOf is slowHeadRecords with the fast records' prompt
// prefix (the stub's latency) given.
func (s *testStack) slowHeadRecordsOf(t testing.TB, partitions int32, fast int, latency string) (total int) {
	t.Helper()
	var prompts []string
	for i := 0; i < fast+1; i++ {
		for p := range partitions {
			text := fmt.Sprintf("%s p%d-%d", latency, p, i)
			if i == 0 {
				text = fmt.Sprintf("slow p%d-head", p)
			}
			prompts = append(prompts, text)
		}
	}
	s.produceSpreadPrompts(t, prompts, partitions)
	return len(prompts)
}

// waitFinishedCommitted waits until every fast record has a result a
// reader of the mode sees, and the committed offset maps stopped changing:
// what finished is committed.
func (s *testStack) waitFinishedCommitted(t *testing.T, mode string, fast int) {
	t.Helper()
	if mode == config.ExactlyOnce {
		s.collectCommitted(t, "completions", fast)
	} else {
		s.collect(t, "completions", fast)
	}
	var last map[int32]string
	waitFor(t, 30*time.Second, "the offset maps to settle", func() bool {
		m := s.committedMeta(t)
		settled := len(m) > 0 && fmt.Sprint(m) == fmt.Sprint(last)
		last = m
		time.Sleep(300 * time.Millisecond) // several commit intervals between reads
		return settled
	})
}

// wantEveryResult reads the results as a reader of the mode does (read
// committed under exactly-once) until n have come, and checks that every
// record has one: at least one, and exactly one under exactly-once.
func (s *testStack) wantEveryResult(t *testing.T, mode string, n int) {
	t.Helper()
	if mode != config.ExactlyOnce {
		// At least once a killed member's results can repeat: read
		// until every custom_id has one.
		cl := s.client(t, kgo.ConsumeTopics("completions"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		ctx, cancel := context.WithTimeout(context.Background(), watchdog)
		defer cancel()
		seen := map[string]int{}
		for len(seen) < n {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("%d distinct results, want %d", len(seen), n)
			}
			for id, c := range countByID(t, fs.Records()) {
				seen[id] += c
			}
		}
		return
	}
	seen := countByID(t, s.collectCommitted(t, "completions", n))
	if len(seen) != n {
		t.Fatalf("%d distinct results, want %d", len(seen), n)
	}
	{
		for id, c := range seen {
			if c != 1 {
				t.Errorf("%s: %d committed results, want 1", id, c)
			}
		}
	}
}

// TestSlowHeadKill9RepeatsOnlyInFlight: each partition's first record is
// stuck in its call while hundreds above it finish; SIGKILL, restart. In
// both delivery modes the restarted member calls only the stuck records
// again, and nothing is lost or (exactly-once) duplicated.
func TestSlowHeadKill9RepeatsOnlyInFlight(t *testing.T) {
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		t.Run(mode, func(t *testing.T) {
			s := newTestStack(t, 2)
			const fast = 300
			n := s.slowHeadRecords(t, 2, fast)
			env := append([]string{"SLUICE_DELIVERY=" + mode, "SLUICE_TRANSACTIONAL_ID=slow-head-0", "SLUICE_COMMIT_INTERVAL=100ms"}, restartable...)
			cmd := s.startProcess(t, env...)
			s.waitFinishedCommitted(t, mode, n-2)
			inFlight := s.api.active.Load()
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			s.api.unblock() // the stuck calls answer from now on
			calls := s.api.calls.Load()
			cmd2 := s.startProcess(t, env...)
			s.wantEveryResult(t, mode, n)
			waitConsuming(t, cmd2)
			_ = cmd2.Process.Signal(syscall.SIGTERM)
			_ = cmd2.Wait()
			repeated := s.api.calls.Load() - int64(n)
			t.Logf("%s: %d records, %d finished above 2 stuck heads; %d in flight at the kill, %d calls after the restart, %d repeated",
				mode, n, n-2, inFlight, s.api.calls.Load()-calls, repeated)
			if repeated > inFlight {
				t.Errorf("%d calls repeated, want <= %d (those in flight at the kill)", repeated, inFlight)
			}
		})
	}
}

// TestSlowHeadRebalanceRepeatsOnlyInFlight: the same partitions, and a
// second member joins; the partition that moves has its finished records
// skipped by the new owner, which calls only its stuck head again.
func TestSlowHeadRebalanceRepeatsOnlyInFlight(t *testing.T) {
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		t.Run(mode, func(t *testing.T) {
			s := newTestStack(t, 2)
			s.cfg.Mode = mode
			s.cfg.CommitInterval = 100 * time.Millisecond
			s.cfg.RevokeTimeout = time.Second      // the stuck call is abandoned
			s.cfg.RequestTimeout = 5 * time.Minute // and not retried
			const fast = 300
			n := s.slowHeadRecords(t, 2, fast)
			a := s.cfg
			a.TransactionalID = "member-a"
			runMember(t, a, "a")
			s.waitFinishedCommitted(t, mode, n-2)
			before := s.api.calls.Load()
			b := s.cfg
			b.TransactionalID = "member-b"
			runMember(t, b, "b")
			// The moved head is called by its new owner: the rebalance is
			// done.
			waitFor(t, 60*time.Second, "the new owner's call", func() bool { return s.api.calls.Load() > before })
			s.api.unblock()
			s.wantEveryResult(t, mode, n)
			repeated := s.api.calls.Load() - int64(n)
			t.Logf("%s: %d records, %d finished above 2 stuck heads before the join; %d calls repeated", mode, n, n-2, repeated)
			if repeated > 1 {
				s.api.logRepeated(t)
				t.Errorf("%d calls repeated, want <= 1 (the moved partition's stuck head)", repeated)
			}
		})
	}
}
