package consumer

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitTimeout bounds one commit request, retries included. Commits do
// not use the work context: the final commits of a drain come after it ends.
const commitTimeout = 10 * time.Second

// maxOffsetMapBytes keeps the offset map within Kafka's default
// offset.metadata.max.bytes (4096). It also bounds how far a partition
// runs ahead of a slow record (offsetMapRoom).
const maxOffsetMapBytes = 4000

// minCommitGap spaces the commits that follow finished records: at most
// one commit (exactly once: one transaction end) in flight and about 50 a
// second per member, so a crash repeats the calls in flight plus what
// finished in the last 20 ms and the commit under way, not a whole commit
// interval of finished work.
const minCommitGap = 20 * time.Millisecond

// commitLoop commits until stop is closed: as soon as records finished,
// one commit at a time, at least minCommitGap apart, and every
// CommitInterval (which retries a failed commit). Exactly once, a commit
// ends the open transaction and begins the next, and the next starts no
// sooner than the last one took again: outputs wait while a transaction
// ends, so they are held back at most about half the time.
func (c *Consumer) commitLoop(stop <-chan struct{}) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-c.finishedCh:
		}
		sent := time.Now()
		c.commitMu.Lock()
		if c.exactlyOnce() {
			if err := c.endTxn(); err != nil {
				c.fail(err)
			}
		} else {
			c.commitLocked(c.assignedPartitions())
		}
		c.commitMu.Unlock()
		gap := minCommitGap
		if c.exactlyOnce() {
			// Produces wait while a transaction ends: spend at most
			// about half the time ending transactions.
			gap = max(gap, 2*time.Since(sent))
		}
		if wait := gap - time.Since(sent); wait > 0 {
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
		}
	}
}

// finished tells the commit loop that records finished.
func (c *Consumer) finished() {
	select {
	case c.finishedCh <- struct{}{}:
	default:
	}
}

// mapLimit is the most bytes an offset map may take: what Kafka's default
// offset.metadata.max.bytes allows, or 0 once the brokers refused maps.
func (c *Consumer) mapLimit() int {
	if c.noMeta.Load() {
		return 0
	}
	return maxOffsetMapBytes
}

// offsetMap encodes m for the commit metadata: "" when it is empty or the
// brokers refused metadata before. A map that does not fit lists the
// longest prefix of its runs that does: listing fewer finished records
// only redoes them. (Dispatching keeps the map within the limit, see
// offsetMapRoom; only the first record finishing far ahead of an old
// watermark can overflow it.)
func (c *Consumer) offsetMap(m offsetMap) string {
	limit := c.mapLimit()
	if len(m.runs) == 0 || limit == 0 {
		return ""
	}
	if meta, ok := m.encode(limit); ok {
		return meta
	}
	runs := m.runs
	k := sort.Search(len(runs)/2, func(k int) bool { // first prefix of k+1 runs that does not fit
		_, ok := offsetMap{base: m.base, runs: runs[:2*(k+1)]}.encode(limit)
		return !ok
	})
	meta, _ := offsetMap{base: m.base, runs: runs[:2*k]}.encode(limit)
	return meta
}

// commitLocked commits the offsets (and offset maps) of parts that moved
// since their last commit. The caller holds commitMu. Failures are logged
// and retried at the next tick: an offset that is not committed is only
// redone, never lost.
func (c *Consumer) commitLocked(parts []*partition) {
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	metas := make(map[topicPartition]string)
	byTP := make(map[topicPartition]*partition)
	for _, p := range parts {
		eo, meta, ok := p.commitOffset()
		if !ok {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = make(map[int32]kgo.EpochOffset)
		}
		tp := topicPartition{p.topic, p.id}
		offsets[p.topic][p.id] = eo
		metas[tp], byTP[tp] = meta, p
	}
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				// Always ours: franz-go would write its member id, which a
				// reader would take for a map it cannot decode.
				meta := metas[topicPartition{t.Topic, t.Partitions[j].Partition}]
				t.Partitions[j].Metadata = &meta
			}
		}
		return nil
	})
	c.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			c.log.Warn().Err(err).Msg("offset commit failed; will retry")
			return
		}
		for _, t := range resp.Topics {
			for _, rp := range t.Partitions {
				tp := topicPartition{t.Topic, rp.Partition}
				p := byTP[tp]
				if p == nil {
					continue
				}
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					c.metadataRefused(err)
					c.log.Warn().Err(err).Str("topic", t.Topic).Int32("partition", rp.Partition).Msg("offset commit failed; will retry")
					continue
				}
				p.setCommitted(offsets[t.Topic][rp.Partition].Offset, metas[tp])
			}
		}
	})
}

// metadataRefused turns the offset map off when the brokers' metadata
// limit is below it: plain offsets still commit, only re-calls grow.
func (c *Consumer) metadataRefused(err error) {
	if errors.Is(err, kerr.OffsetMetadataTooLarge) && !c.noMeta.Swap(true) {
		c.log.Warn().Msg("brokers refuse the offset map (offset.metadata.max.bytes); committing plain offsets")
	}
}

// offsetsFetched reads the offset maps committed with the offsets this
// member starts from, so the records they list are skipped.
func (c *Consumer) offsetsFetched(_ context.Context, _ *kgo.Client, resp *kmsg.OffsetFetchResponse) error {
	read := func(topic string, partition int32, offset int64, meta *string, code int16) {
		if topic != c.cfg.Topic || code != 0 || offset < 0 || meta == nil || *meta == "" {
			return
		}
		m, err := decodeOffsetMap(*meta, offset)
		if errors.Is(err, errOffsetMapVersion) && !looksLikeOffsetMap(*meta) {
			return // metadata another committer wrote (franz-go writes its member id)
		}
		if err != nil {
			c.log.Warn().Err(err).Str("topic", topic).Int32("partition", partition).
				Msg("ignoring the committed offset map; records above the offset are processed again")
			return
		}
		c.setSkip(topicPartition{topic, partition}, &m)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			read(t.Topic, p.Partition, p.Offset, p.Metadata, p.ErrorCode)
		}
	}
	for _, g := range resp.Groups {
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				read(t.Topic, p.Partition, p.Offset, p.Metadata, p.ErrorCode)
			}
		}
	}
	return nil
}

// setSkip gives a partition the offset map it starts from.
func (c *Consumer) setSkip(tp topicPartition, m *offsetMap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.parts[tp]; p != nil {
		p.mu.Lock()
		if !p.window.started() && p.skip == nil {
			p.skip = m
		}
		p.mu.Unlock()
		return
	}
	c.pendingSkips[tp] = m
}

// looksLikeOffsetMap reports whether meta has the shape of any version of
// the offset map, "s<digits>:...", so that only a map this build cannot read
// is worth a warning.
func looksLikeOffsetMap(meta string) bool {
	i := 1
	for i < len(meta) && meta[i] >= '0' && meta[i] <= '9' {
		i++
	}
	return len(meta) > 2 && meta[0] == 's' && i > 1 && i < len(meta) && meta[i] == ':'
}
