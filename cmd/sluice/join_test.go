package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluice-dev/sluice/internal/config"
)

// TestJoinAndLeaveRepeatNoCall: a member works through heavy-tailed calls
// (most 300 ms, one in ten 2.5 s) with calls in flight on every partition;
// a second member joins, which moves partitions away from the first with
// calls in flight and finished records not yet committed, and later leaves
// gracefully, which moves them back. In both delivery modes no API call is
// made twice: a revoked partition's records finish and commit before it is
// given up (exactly once, inside the revoke callback, in the transaction
// that commits every partition's finished records).
func TestJoinAndLeaveRepeatNoCall(t *testing.T) {
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		t.Run(mode, func(t *testing.T) {
			s := newTestStack(t, 4)
			s.cfg.Mode = mode
			s.cfg.MaxInFlight = 16
			s.cfg.RevokeTimeout = 2 * time.Minute // longer than any call, however loaded the machine
			s.cfg.DrainTimeout = 2 * time.Minute
			const n = 240
			prompts := make([]string, n)
			for i := range prompts {
				ms := 300
				if i%10 == 0 {
					ms = 2500
				}
				prompts[i] = fmt.Sprintf("sleep-%d p-%d", ms, i)
			}
			s.produceSpreadPrompts(t, prompts, 4)

			a := s.cfg
			a.TransactionalID = "member-a"
			runMember(t, a, "a")
			waitFor(t, time.Minute, "calls in flight", func() bool { return s.api.active.Load() >= 12 })

			b := s.cfg
			b.TransactionalID = "member-b"
			stopB := runMember(t, b, "b")
			adm := kadm.NewClient(s.client(t))
			waitFor(t, time.Minute, "a stable group of two, each with partitions", func() bool {
				topics, ok := s.stableAssignment(t, adm, 2)
				return ok && !slices.ContainsFunc(topics, func(n int) bool { return n <= 0 })
			})
			joined := s.api.calls.Load()
			// Let the new member get calls in flight, then leave.
			waitFor(t, time.Minute, "calls after the join", func() bool { return s.api.calls.Load() >= joined+8 })
			if err := stopB(); err != nil {
				t.Fatalf("member b: %v", err)
			}

			s.wantEveryResult(t, mode, n)
			repeated := s.api.calls.Load() - n
			t.Logf("%s: %d records, %d calls by the join, %d repeated", mode, n, joined, repeated)
			if repeated != 0 {
				s.api.logRepeated(t)
				t.Errorf("%d calls repeated, want 0", repeated)
			}
		})
	}
}

// TestCommitsGoOnDuringRevocation: a partition moving to a new member has
// a call that does not end (a stuck head), so the revocation waits its
// SLUICE_REVOKE_TIMEOUT; meanwhile the member's other records finish, and
// their commits (exactly once: transactions) must go on, or a crash
// during a long revocation would repeat everything finished in it.
func TestCommitsGoOnDuringRevocation(t *testing.T) {
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		t.Run(mode, func(t *testing.T) {
			s := newTestStack(t, 4)
			s.cfg.Mode = mode
			s.cfg.MaxInFlight = 8
			s.cfg.RevokeTimeout = 2 * time.Minute  // the stuck heads hold the revocation until unblocked
			s.cfg.RequestTimeout = 5 * time.Minute // and are not retried
			const fast = 60                        // per partition, 200 ms each: ~6 s of work at 8 in flight
			n := s.slowHeadRecordsOf(t, 4, fast, "sleep-200")
			a := s.cfg
			a.TransactionalID = "member-a"
			runMember(t, a, "a")
			waitFor(t, time.Minute, "calls in flight", func() bool { return s.api.active.Load() >= 8 })

			b := s.cfg
			b.TransactionalID = "member-b"
			runMember(t, b, "b")
			adm := kadm.NewClient(s.client(t))
			// B is in the group with nothing assigned while A revokes the
			// partitions B is to get, waiting for their stuck heads.
			waitFor(t, time.Minute, "the revocation to begin", func() bool {
				topics, ok := s.stableAssignment(t, adm, 2)
				return ok && slices.Contains(topics, 0)
			})
			before := s.committedMetaWith(t, adm)
			waitFor(t, time.Minute, "a commit during the revocation", func() bool {
				time.Sleep(100 * time.Millisecond) // between reads of the committed offsets
				return fmt.Sprint(s.committedMetaWith(t, adm)) != fmt.Sprint(before)
			})
			s.api.unblock()
			s.wantEveryResult(t, mode, n)
			if repeated := s.api.calls.Load() - int64(n); repeated != 0 {
				s.api.logRepeated(t)
				t.Errorf("%d calls repeated, want 0", repeated)
			}
		})
	}
}

// stableAssignment returns, when the group is Stable with the given number
// of members, how many topics each member is assigned (0: nothing yet, or
// its partitions are being revoked from another member; -1: an assignment
// that is not a consumer's).
func (s *testStack) stableAssignment(t testing.TB, adm *kadm.Client, members int) ([]int, bool) {
	t.Helper()
	groups, err := adm.DescribeGroups(t.Context(), s.cfg.Group)
	if err != nil {
		return nil, false
	}
	g := groups[s.cfg.Group]
	if g.State != "Stable" || len(g.Members) != members {
		return nil, false
	}
	topics := make([]int, 0, members)
	for _, m := range g.Members {
		c, ok := m.Assigned.AsConsumer()
		if !ok {
			topics = append(topics, -1)
			continue
		}
		topics = append(topics, len(c.Topics))
	}
	return topics, true
}
