package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// interval of finished work. Exactly once, it also bounds what a
// rebalance, which aborts the open transaction, throws away.
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
			if err := c.endTxn(nil, true); err != nil {
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

// endTxn ends the open transaction (exactly-once mode), committing the
// outputs produced in it with the offsets and maps of parts (nil: every
// assigned partition) they complete, then begins the next one when again
// is set. Produces wait meanwhile. The
// caller holds commitMu. A transaction aborted by a rebalance is not an
// error: its records are processed again. The error is fatal.
func (c *Consumer) endTxn(parts []*partition, again bool) error {
	c.txnMu.Lock()
	defer c.txnMu.Unlock()
	if parts == nil {
		// Read under the gate: every partition whose records produced
		// into this transaction is here, so each one is settled below.
		// A partition missed would keep records marked produced after an
		// abort, and the next transaction would commit past them.
		parts = c.assignedPartitions()
	}
	type planned struct {
		off   int64
		epoch int32
		meta  string
	}
	plan := make(map[*partition]planned) // what the commit request carries
	ctx := kgo.PreTxnCommitFnContext(context.Background(), func(req *kmsg.TxnOffsetCommitRequest) error {
		// Runs after the flush: every output of the transaction is
		// acknowledged, so produced records count as done. The offsets
		// are ours, not the polled positions franz-go would commit; the
		// entries franz-go built are kept where they can be (they carry
		// the topic IDs newer protocol versions use).
		clear(plan)
		want := make(map[topicPartition]planned)
		for _, p := range parts {
			if eo, meta, ok := p.commitOffset(); ok {
				plan[p] = planned{eo.Offset, eo.Epoch, meta}
				want[topicPartition{p.topic, p.id}] = plan[p]
			}
		}
		set := func(rp *kmsg.TxnOffsetCommitRequestTopicPartition, pl planned) {
			meta := pl.meta // "" rather than franz-go's member id
			rp.Offset, rp.LeaderEpoch, rp.Metadata = pl.off, pl.epoch, &meta
		}
		topics := req.Topics[:0]
		for _, t := range req.Topics {
			kept := t.Partitions[:0]
			for _, rp := range t.Partitions {
				tp := topicPartition{t.Topic, rp.Partition}
				if pl, ok := want[tp]; ok {
					set(&rp, pl)
					kept = append(kept, rp)
					delete(want, tp)
				}
			}
			if t.Partitions = kept; len(kept) > 0 || len(want) > 0 {
				topics = append(topics, t)
			}
		}
		for tp, pl := range want { // progress franz-go does not know of
			i := slices.IndexFunc(topics, func(t kmsg.TxnOffsetCommitRequestTopic) bool { return t.Topic == tp.topic })
			if i < 0 {
				t := kmsg.NewTxnOffsetCommitRequestTopic()
				t.Topic = tp.topic
				topics, i = append(topics, t), len(topics)
			}
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition = tp.partition
			set(&rp, pl)
			topics[i].Partitions = append(topics[i].Partitions, rp)
		}
		req.Topics = slices.DeleteFunc(topics, func(t kmsg.TxnOffsetCommitRequestTopic) bool { return len(t.Partitions) == 0 })
		return nil
	})
	// Every output produced in the transaction is acknowledged or failed
	// after the flush (produces wait at the gate): one that failed means
	// the transaction holds part of a record's outputs, so it aborts.
	try := kgo.TryCommit
	if err := c.sess.Client().Flush(ctx); err != nil {
		return fmt.Errorf("end transaction: flush: %w", err)
	}
	if c.txnFailed.Swap(false) {
		try = kgo.TryAbort
		c.log.Warn().Msg("aborting the transaction: an output in it could not be written; its records are processed again")
	}
	revoked := c.txnRevoked.Swap(false)
	if again && try == kgo.TryCommit && !revoked && !slices.ContainsFunc(parts, (*partition).hasTxnWork) {
		// Nothing to commit: the transaction stays open (an empty one
		// exists only in the client). Ending it anyway is not free:
		// without a TxnOffsetCommit franz-go cannot tell the brokers
		// support KIP-447 and holds the next End back 500 ms. After a
		// revocation it is ended all the same: the session aborts it,
		// and it had better be empty then.
		return nil
	}
	committed, err := c.sess.End(ctx, try)
	ok := committed && err == nil
	if !ok && err == nil && try == kgo.TryCommit {
		c.log.Info().Msg("transaction aborted by a rebalance; its records are processed again")
	}
	for _, p := range parts {
		pl, has := plan[p]
		if !has {
			pl.off = -1 // nothing of it was in the commit
		}
		p.settle(ok, pl.off, pl.meta)
	}
	if err != nil {
		return fmt.Errorf("end transaction: %w", err)
	}
	if again {
		if err := c.sess.Begin(); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
	}
	return nil
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
