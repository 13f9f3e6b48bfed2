package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

// Result is one result record read from the output topic.
type Result struct {
	// Result is the decoded value: custom_id, response or error, ...
	record.Result
	// Value is the record value as published (the OpenAI Batch output
	// line plus sluice's fields), byte for byte.
	Value []byte
	// Batch is the record's sluice.batch header (HeaderBatch): the id of
	// the batch its prompt was submitted in, empty for a prompt produced
	// without one.
	Batch string
	// Partition and Offset locate the record on the output topic.
	Partition int32
	Offset    int64
}

// Results reads the output topic from start (see Batch.ResultStart: nil,
// or a partition missing from it, reads from the beginning) and yields
// every record: decoded, or with an error when the value is not a result
// record (the sequence goes on after that). It ends when ctx ends or the
// loop breaks; a failure to read ends it with a last (zero Result, error).
// Pass c.EndOffsets(ctx) as start to tail only new results.
func (c *Client) Results(ctx context.Context, start map[int32]int64) iter.Seq2[Result, error] {
	return func(yield func(Result, error) bool) {
		err := c.scan(ctx, c.cfg.OutputTopic, start, false, func(rec *kgo.Record) (bool, error) {
			r, err := decode(rec)
			return yield(r, err), nil
		})
		if err != nil && ctx.Err() == nil {
			yield(Result{}, err)
		}
	}
}

// Await calls fn with the first result of every custom_id of b, in the
// order they arrive, reading b.OutputTopic from b.ResultStart, and returns
// nil once every id has one. A result is b's when its sluice.batch header
// is b.ID, or when it has none (a prompt produced without it) and its
// custom_id is one of b's; with b.ID empty, custom_id alone decides. Later
// results for the same id (redelivery under at-least-once) and results of
// other ids or batches are skipped. When ctx
// ends first, the error wraps ErrIncomplete and ctx's error and says how
// many ids are missing. An error from fn stops Await and is returned.
func (c *Client) Await(ctx context.Context, b *Batch, fn func(Result) error) error {
	return c.await(ctx, b, false, fn)
}

// Collect is Await that stops at the output topic's current end instead
// of waiting: results not yet published are missing, and the error then
// wraps ErrIncomplete.
func (c *Client) Collect(ctx context.Context, b *Batch, fn func(Result) error) error {
	return c.await(ctx, b, true, fn)
}

func (c *Client) await(ctx context.Context, b *Batch, untilEnd bool, fn func(Result) error) error {
	waiting := make(map[string]bool, len(b.CustomIDs))
	for _, id := range b.CustomIDs {
		waiting[id] = true
	}
	total, missing := len(waiting), len(waiting)
	if missing == 0 {
		return nil
	}
	topic := b.OutputTopic
	if topic == "" {
		topic = c.cfg.OutputTopic
	}
	err := c.scan(ctx, topic, b.ResultStart, untilEnd, func(rec *kgo.Record) (bool, error) {
		r, err := decode(rec)
		if err != nil || !waiting[r.CustomID] || (b.ID != "" && r.Batch != "" && r.Batch != b.ID) {
			return true, nil
		}
		waiting[r.CustomID] = false
		missing--
		if err := fn(r); err != nil {
			return false, err
		}
		return missing > 0, nil
	})
	switch {
	case missing == 0:
		return nil
	case err == nil:
		return fmt.Errorf("producer: %d of %d ids have no result yet: %w", missing, total, ErrIncomplete)
	case ctx.Err() != nil:
		return fmt.Errorf("producer: %d of %d ids have no result: %w: %w", missing, total, ErrIncomplete, err)
	}
	return err
}

// Produced returns the custom_ids of b that are on its input topic: the
// records from b.InputStart to the end that carry b's id in the
// sluice.batch header (committed ones only). It tells which ids a batch
// that stopped half-way (Batch.State) has written, to await those and
// resume with the rest.
func (c *Client) Produced(ctx context.Context, b *Batch) (map[string]bool, error) {
	if b.InputStart == nil {
		return nil, fmt.Errorf("producer: batch %q has no input_start in its manifest", b.ID)
	}
	topic := b.InputTopic
	if topic == "" {
		topic = c.cfg.InputTopic
	}
	ids := make(map[string]bool)
	err := c.scan(ctx, topic, b.InputStart, true, func(rec *kgo.Record) (bool, error) {
		if header(rec, HeaderBatch) == b.ID {
			ids[string(rec.Key)] = true
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// header returns the value of the last header key of rec, "" when none.
func header(rec *kgo.Record, key string) string {
	for i := len(rec.Headers) - 1; i >= 0; i-- {
		if rec.Headers[i].Key == key {
			return string(rec.Headers[i].Value)
		}
	}
	return ""
}

func decode(rec *kgo.Record) (Result, error) {
	r := Result{Value: rec.Value, Batch: header(rec, HeaderBatch), Partition: rec.Partition, Offset: rec.Offset}
	if err := json.Unmarshal(rec.Value, &r.Result); err != nil {
		return r, fmt.Errorf("producer: %s/%d@%d is not a result record: %w", rec.Topic, rec.Partition, rec.Offset, err)
	}
	return r, nil
}

// scan reads topic from start with a direct (non-group), read_committed
// consumer and calls fn for every record until fn returns false or an
// error, ctx ends, or, with untilEnd, every partition has been read up to
// its last stable offset listed when scan began. Records of aborted
// transactions are never seen; transaction markers are read (to know
// where a partition ends) but not passed to fn.
func (c *Client) scan(ctx context.Context, topic string, start map[int32]int64, untilEnd bool, fn func(*kgo.Record) (bool, error)) error {
	offs, err := c.endOffsets(ctx, topic)
	if err != nil {
		return err
	}
	ends := offs[topic]
	var firsts map[int32]int64
	if untilEnd {
		listed, err := c.adm.ListStartOffsets(ctx, topic)
		if err != nil {
			return fmt.Errorf("producer: list start offsets: %w", err)
		}
		firsts = make(map[int32]int64)
		for p, o := range listed[topic] {
			firsts[p] = o.Offset
		}
		// read_committed reads up to the last stable offset: an open
		// transaction's records are not readable yet.
		if listed, err = c.adm.ListCommittedOffsets(ctx, topic); err != nil {
			return fmt.Errorf("producer: list committed offsets: %w", err)
		}
		for p, o := range listed[topic] {
			if _, ok := ends[p]; ok && o.Err == nil {
				ends[p] = o.Offset
			}
		}
	}
	from := make(map[int32]kgo.Offset, len(ends))
	remaining := make(map[int32]int64) // untilEnd: partitions not yet read up to their end
	for p, end := range ends {
		at, ok := start[p]
		if ok {
			from[p] = kgo.NewOffset().At(at)
		} else {
			from[p] = kgo.NewOffset().AtStart()
		}
		if untilEnd && max(at, firsts[p]) < end {
			remaining[p] = end
		}
	}
	if untilEnd && len(remaining) == 0 {
		return nil
	}
	opts := append(append([]kgo.Opt(nil), c.cl.Opts()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords())
	cc, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("producer: results consumer: %w", err)
	}
	defer cc.Close()
	for {
		fs := cc.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("producer: read %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		for it := fs.RecordIter(); !it.Done(); {
			rec := it.Next()
			if rec.Topic != topic {
				continue
			}
			if !rec.Attrs.IsControl() {
				more, err := fn(rec)
				if err != nil || !more {
					return err
				}
			}
			if end, ok := remaining[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(remaining, rec.Partition)
			}
		}
		if untilEnd && len(remaining) == 0 {
			return nil
		}
	}
}
