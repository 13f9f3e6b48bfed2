package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sethvargo/go-retry"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Exactly-once transactions are managed here on the plain transactional
// group client, not with kgo.GroupTransactSession: the session aborts the
// open transaction after any revocation, so every join made a member throw
// away the records it had finished and abandon those in flight on the
// partitions that moved, and their API calls were paid again. Here a
// revocation lets the revoked partitions' records finish (RevokeTimeout)
// and commits them, with the offsets of every partition, inside the revoke
// callback, before the partitions are given up, exactly as at-least-once
// commits on revoke. Only a lost assignment (session expired, fenced)
// aborts.
//
// The steps are Kafka's (KIP-98, KIP-447): produce the outputs, flush,
// AddOffsetsToTxn, TxnOffsetCommit carrying the group's generation and
// member id (the group coordinator refuses a member of an older
// generation), EndTxn. With KIP-447 (Kafka 2.5+, required) the coordinator
// holds back a new owner's offset fetch (RequireStableFetchOffsets) while
// the transaction that commits its offsets is open, so a transaction
// ending while the group rebalances is still safe.

// txnVersions are franz-go's default request versions with TxnOffsetCommit
// capped at v4, which names topics (v6 takes topic IDs) and follows an
// AddOffsetsToTxn (v5 is only for KIP-890 part 2 transactions, which
// franz-go uses or not depending on the cluster): the request sent here
// is then valid for every transaction franz-go runs. v3 and v4 carry the
// generation and member id (KIP-447).
func txnVersions() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(kmsg.TxnOffsetCommit.Int16(), 4)
	return v
}

// errNoKIP447 is returned when the brokers are too old for exactly-once as
// sluice does it.
var errNoKIP447 = errors.New("exactly-once needs brokers with KIP-447 (Kafka 2.5 or later): TxnOffsetCommit v3")

// endTxn ends the open transaction, committing the outputs produced in it
// with the offsets and offset maps of every assigned partition, or
// aborting it when an output failed or the assignment was lost, then
// begins the next one. Produces wait meanwhile (txnMu). The caller holds
// commitMu. An abort is not an error: its records are processed again.
// The error is fatal.
func (c *Consumer) endTxn() error {
	c.txnMu.Lock()
	defer c.txnMu.Unlock()
	// Read under the gate: every partition whose records produced into
	// this transaction is here, so each one is settled below. A partition
	// missed would keep records marked produced after an abort, and the
	// next transaction would commit past them.
	parts := c.assignedPartitions()
	// Every output produced in the transaction is acknowledged or failed
	// after the flush (produces wait at the gate).
	if err := c.cl.Flush(context.Background()); err != nil {
		return fmt.Errorf("end transaction: flush: %w", err)
	}
	commit := true
	if c.txnFailed.Swap(false) {
		// It holds part of a record's outputs.
		commit = false
		c.log.Warn().Msg("aborting the transaction: an output in it could not be written; its records are processed again")
	}
	if c.txnLost.Swap(false) {
		commit = false
	}
	if commit && !slices.ContainsFunc(parts, (*partition).hasTxnWork) {
		return nil // nothing to commit: the transaction stays open (it exists only in the client)
	}

	plan := make(map[*partition]kgo.EpochOffset)
	metas := make(map[*partition]string)
	for _, p := range parts {
		if eo, meta, ok := p.commitOffset(); ok {
			plan[p], metas[p] = eo, meta
		}
	}
	var fatal error
	offsetsInTxn := false
	switch {
	case !commit:
	case !slices.ContainsFunc(parts, (*partition).producedInTxn):
		// Only offsets moved (records the committed offset map listed as
		// done): none of their outputs is in the transaction, so they
		// commit plainly. A transaction carrying offsets and no records
		// could not be ended: franz-go ends only transactions it
		// produced in.
		c.commitLocked(parts)
	default:
		err := c.txnOffsetCommit(plan, metas)
		switch {
		case err == nil:
			offsetsInTxn = true
		case abortableCommitErr(err):
			commit = false
			c.log.Info().Err(err).Msg("transaction aborted: its offsets could not be committed (the group is rebalancing, or its coordinator moved); its records are processed again")
		default:
			commit, fatal = false, err
		}
	}

	committed, err := c.endTransaction(commit)
	if !committed && commit {
		c.log.Info().Msg("transaction aborted by the brokers; its records are processed again")
	}
	for _, p := range parts {
		off, meta := int64(-1), "" // nothing of it was in the commit
		if eo, ok := plan[p]; ok && offsetsInTxn && committed {
			off, meta = eo.Offset, metas[p]
		}
		p.settle(committed, off, meta)
	}
	switch {
	case fatal != nil:
		return fmt.Errorf("end transaction: %w", fatal)
	case err != nil:
		return fmt.Errorf("end transaction: %w", err)
	}
	if err := c.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	return nil
}

// txnOffsetCommit adds the group's offsets to the open transaction:
// AddOffsetsToTxn, then TxnOffsetCommit of plan (with our offset maps as
// metadata) under the member's current generation. Retriable errors are
// retried for up to commitTimeout.
func (c *Consumer) txnOffsetCommit(plan map[*partition]kgo.EpochOffset, metas map[*partition]string) error {
	if len(plan) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	id, epoch, err := c.cl.ProducerID(ctx)
	if err != nil {
		return fmt.Errorf("producer id: %w", err)
	}
	// The client's own ids, which options given after ClientOpts may
	// have changed: the brokers match them against the producer id.
	txnID, _ := c.cl.OptValue(kgo.TransactionalID).(string)
	group, _ := c.cl.OptValue(kgo.ConsumerGroup).(string)
	backoff := retry.WithCappedDuration(time.Second, retry.NewExponential(20*time.Millisecond))
	err = retry.Do(ctx, backoff, func(ctx context.Context) error {
		add := kmsg.NewPtrAddOffsetsToTxnRequest()
		add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, id, epoch, group
		resp, err := add.RequestWith(ctx, c.cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if retriableTxnErr(err) {
			return retry.RetryableError(err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("add offsets to transaction: %w", err)
	}

	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group = txnID, group
	req.ProducerID, req.ProducerEpoch = id, epoch
	if v := c.cl.OptValues(kgo.InstanceID); len(v) == 2 && v[1] == true {
		iid := v[0].(string)
		req.InstanceID = &iid
	}
	for p, eo := range plan {
		i := slices.IndexFunc(req.Topics, func(t kmsg.TxnOffsetCommitRequestTopic) bool { return t.Topic == p.topic })
		if i < 0 {
			t := kmsg.NewTxnOffsetCommitRequestTopic()
			t.Topic = p.topic
			req.Topics, i = append(req.Topics, t), len(req.Topics)
		}
		rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		meta := metas[p] // "" rather than nil: franz-go would write its member id
		rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = p.id, eo.Offset, eo.Epoch, &meta
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
	}
	return retry.Do(ctx, backoff, func(ctx context.Context) error {
		// A rebalance under way refuses the commit; once it completed the
		// member commits under its new generation. That is safe: the
		// partitions are still ours, since a revocation waits for
		// commitMu, which the caller holds. A member that is out of the
		// group is refused for good (UNKNOWN_MEMBER_ID, or a generation
		// that stays stale) and the transaction aborts.
		req.MemberID, req.Generation = c.cl.GroupMetadata()
		resp, err := req.RequestWith(ctx, c.cl)
		if err != nil {
			return fmt.Errorf("txn offset commit: %w", err)
		}
		if resp.GetVersion() < 3 {
			return errNoKIP447
		}
		var errs []error
		retriable := true
		for _, t := range resp.Topics {
			for _, rp := range t.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					c.metadataRefused(err)
					retriable = retriable && (retriableTxnErr(err) ||
						errors.Is(err, kerr.RebalanceInProgress) || errors.Is(err, kerr.IllegalGeneration))
					errs = append(errs, fmt.Errorf("topic %s partition %d: %w", t.Topic, rp.Partition, err))
				}
			}
		}
		if len(errs) == 0 {
			return nil
		}
		err = fmt.Errorf("txn offset commit: %w", errors.Join(errs...))
		if retriable {
			return retry.RetryableError(err)
		}
		return err
	})
}

// endTransaction ends the open transaction, committing when commit is set
// and the brokers accept it; an EndTxn whose outcome is unknown is retried
// as an abort, as franz-go's GroupTransactSession does.
func (c *Consumer) endTransaction(commit bool) (committed bool, err error) {
	try := kgo.TransactionEndTry(commit)
	for tries := 1; ; tries++ {
		err := c.cl.EndTransaction(context.Background(), try)
		if err == nil {
			return bool(try), nil
		}
		if tries < 10 && (errors.Is(err, kerr.OperationNotAttempted) ||
			errors.Is(err, kerr.TransactionAbortable) || errors.Is(err, kerr.UnknownServerError)) {
			try = kgo.TryAbort
			continue
		}
		return false, err
	}
}

// retriableTxnErr: the request may succeed if sent again (the coordinator
// is loading or moved, or the previous transaction's markers are still
// being written).
func retriableTxnErr(err error) bool {
	return errors.Is(err, kerr.ConcurrentTransactions) ||
		errors.Is(err, kerr.CoordinatorLoadInProgress) ||
		errors.Is(err, kerr.CoordinatorNotAvailable) ||
		errors.Is(err, kerr.NotCoordinator)
}

// abortableCommitErr: the offsets could not be committed but the
// transactional id is sound; aborting lets the records be processed again
// (the same list franz-go's GroupTransactSession aborts on).
func abortableCommitErr(err error) bool {
	for _, e := range []error{
		kerr.IllegalGeneration, kerr.UnknownMemberID, kerr.StaleMemberEpoch,
		kerr.GroupIDNotFound, kerr.RebalanceInProgress, kerr.CoordinatorNotAvailable,
		kerr.CoordinatorLoadInProgress, kerr.NotCoordinator, kerr.ConcurrentTransactions,
		kerr.UnknownServerError, kerr.TransactionAbortable, kerr.OffsetMetadataTooLarge,
		context.DeadlineExceeded,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
