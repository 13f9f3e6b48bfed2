package main

import (
	"fmt"
	"testing"
	"time"
)

// Every member exports the whole group's lag, per partition, on /metrics:
// also for the partitions it does not own.
func TestGroupLagMetric(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 4)
	// The calls never end: give up on them at once.
	s.cfg.DrainTimeout, s.cfg.RevokeTimeout = 100*time.Millisecond, 100*time.Millisecond
	const perPartition = 5
	// "slow" prompts wait for a release that never comes: nothing is
	// committed, and the lag is every record.
	recs := make([]string, 0, 4*perPartition)
	for i := range 4 * perPartition {
		recs = append(recs, fmt.Sprintf("slow-%d", i))
	}
	s.produceSpreadPrompts(t, recs, 4)

	var addrs []string
	for _, name := range []string{"A", "B"} {
		cfg := s.cfg
		cfg.HTTPAddr = freeAddr(t)
		addrs = append(addrs, cfg.HTTPAddr)
		runMember(t, cfg, name)
	}
	for _, addr := range addrs {
		waitFor(t, 10*time.Second, "the ops endpoint on "+addr, func() bool { return readyz(addr) == 200 })
		waitFor(t, 20*time.Second, "the group's lag on "+addr, func() bool {
			m := scrape(t, addr)
			for p := range 4 {
				if m[fmt.Sprintf(`sluice_consumer_group_lag_records{partition="%d",topic="prompts"}`, p)] != perPartition {
					return false
				}
			}
			return true
		})
	}
}
