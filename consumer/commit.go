package consumer

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitTimeout bounds one commit request, retries included. Commits do
// not use the work context: the final commits of a drain come after it ends.
const commitTimeout = 10 * time.Second

// commitLoop commits every partition's contiguous-done offset each
// CommitInterval until stop is closed.
func (c *Consumer) commitLoop(stop <-chan struct{}) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			parts := c.assignedPartitions()
			c.commitMu.Lock()
			c.commitLocked(parts)
			c.commitMu.Unlock()
		}
	}
}

// commitLocked commits the offsets of parts that moved since their last
// commit. The caller holds commitMu. Failures are logged and retried at
// the next tick: an offset that is not committed is only redone, never lost.
func (c *Consumer) commitLocked(parts []*partition) {
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	byTP := make(map[topicPartition]*partition)
	for _, p := range parts {
		eo, ok := p.commitOffset()
		if !ok {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = make(map[int32]kgo.EpochOffset)
		}
		offsets[p.topic][p.id] = eo
		byTP[topicPartition{p.topic, p.id}] = p
	}
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	c.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			c.log.Warn().Err(err).Msg("offset commit failed; will retry")
			return
		}
		for _, t := range resp.Topics {
			for _, rp := range t.Partitions {
				p := byTP[topicPartition{t.Topic, rp.Partition}]
				if p == nil {
					continue
				}
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					c.log.Warn().Err(err).Str("topic", t.Topic).Int32("partition", rp.Partition).Msg("offset commit failed; will retry")
					continue
				}
				p.setCommitted(offsets[t.Topic][rp.Partition].Offset)
			}
		}
	})
}
