package consumer

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// assigned starts tracking newly assigned partitions. Fetching starts from
// the group's committed offsets; partitions are resumed in case an earlier
// ownership left them paused.
func (c *Consumer) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	for t, ps := range assigned {
		for _, id := range ps {
			tp := topicPartition{t, id}
			if _, ok := c.parts[tp]; !ok {
				c.parts[tp] = newPartition(c, t, id, c.pendingSkips[tp])
			}
			delete(c.pendingSkips, tp)
		}
	}
	c.mu.Unlock()
	cl.ResumeFetchPartitions(assigned)
	c.signalRebalance()
	c.log.Info().Interface("partitions", assigned).Msg("partitions assigned")
}

// revoked lets the revoked partitions' in-flight records finish within
// RevokeTimeout, commits what is contiguous-done (exactly once: ends the
// open transaction, which commits every partition's finished records) and
// forgets them. It runs before the rebalance completes, so the next owner
// starts after our commit.
func (c *Consumer) revoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	parts := c.take(revoked)
	cl.ResumeFetchPartitions(revoked)
	c.signalRebalance()
	if len(parts) == 0 {
		return
	}
	c.log.Info().Interface("partitions", revoked).Msg("partitions revoked; finishing in-flight records")
	c.release(parts, c.cfg.RevokeTimeout, true)
}

// lost abandons partitions that are no longer ours (session expired,
// fenced): nothing may be committed for them.
func (c *Consumer) lost(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	parts := c.take(lost)
	cl.ResumeFetchPartitions(lost)
	if c.exactlyOnce() {
		// The open transaction's offsets belong to a generation that is
		// gone: it aborts, at once, so the outputs of partitions
		// assigned next do not go into it.
		c.txnLost.Store(true)
		c.finished()
	}
	if len(parts) == 0 {
		return
	}
	c.log.Warn().Interface("partitions", lost).Msg("partitions lost; abandoning in-flight records")
	c.release(parts, 0, false)
}

// take returns the tracked partitions among tps.
func (c *Consumer) take(tps map[string][]int32) []*partition {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []*partition
	for t, ps := range tps {
		for _, id := range ps {
			if p, ok := c.parts[topicPartition{t, id}]; ok {
				parts = append(parts, p)
			}
		}
	}
	return parts
}

// release stops parts, waits up to timeout for their in-flight records,
// abandons the rest, commits (when commit is set; in exactly-once mode by
// ending the open transaction, for every partition) and forgets them. It
// holds commitMu from the abandoning on, so no commit for these partitions
// can land after they are released.
func (c *Consumer) release(parts []*partition, timeout time.Duration, commit bool) {
	idle := make([]<-chan struct{}, len(parts))
	for i, p := range parts {
		idle[i] = p.stop()
	}
	if timeout > 0 {
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
	wait:
		for i, ch := range idle {
			select {
			case <-ch:
			case <-deadline.C:
				c.log.Warn().Int("partitions_unfinished", len(idle)-i).Msg("release deadline passed; abandoning in-flight records")
				break wait
			}
		}
	}
	// Not while waiting: the commit loop goes on committing every
	// partition's finished records meanwhile, these included (they are
	// still ours), so a crash during a long revocation or drain repeats
	// only what is in flight.
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	for _, p := range parts {
		p.cancel(errReleased)
	}
	switch {
	case commit && c.exactlyOnce():
		// The partitions are still assigned here, so their finished
		// records commit with the others'.
		if err := c.endTxn(); err != nil {
			c.fail(err)
		}
	case commit:
		c.commitLocked(parts)
	}
	c.mu.Lock()
	for _, p := range parts {
		if c.parts[topicPartition{p.topic, p.id}] == p {
			delete(c.parts, topicPartition{p.topic, p.id})
		}
	}
	c.mu.Unlock()
	for _, p := range parts {
		p.forget()
	}
}
