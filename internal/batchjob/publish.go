package batchjob

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/semaphore"

	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/record"
)

// Results streams a provider batch's results: it calls fn once per
// result, in any order, and returns fn's first error or its own.
type Results func(fn func(batchapi.Result) error) error

// Bounds of what publishing a job holds at once.
const (
	// maxPublishingBytes bounds the results handed to the publisher and
	// not yet acknowledged.
	maxPublishingBytes = 32 << 20
	// maxFailedBytes bounds the failed results held until their chunks
	// are read back for the dead letters' input values.
	maxFailedBytes = 8 << 20
)

// publish publishes one result per record of the job as the provider's
// results stream in (results may be nil: no result for any), then one
// for every record the provider gave none, waits for them, and
// tombstones the job's records. A success is published as its result
// comes; a failure waits, with at most maxFailedBytes of others, for its
// chunk to be read back: its dead letter carries the input value.
func (r *Runner) publish(ctx context.Context, js *jobState, chunks []Chunk, b batchapi.Batch, results Results) error {
	if js.job.Step != StepPublishing {
		js.job.Step = StepPublishing
		if err := r.save(ctx, js); err != nil {
			return err
		}
	}
	refused := map[int]string{}
	for _, f := range js.job.Refused {
		refused[f.Chunk] = f.Message
	}
	// Where each request is: index in chunks, index in its chunk.
	type at struct{ chunk, req int }
	where := map[string]at{}
	for i, c := range chunks {
		for j, q := range c.Requests {
			where[q.ID] = at{i, j}
		}
	}
	n := len(where)
	// Exactly once, the results, their dead letters, the job's last
	// record and its tombstones commit together: a crash before leaves
	// none of them, and the next owner publishes them again.
	err := r.txn(ctx, func() error {
		out := r.newOutbox(ctx)
		published := make(map[string]bool, n)
		failed := map[int][]failure{} // by chunk index
		failedBytes := 0
		flush := func() error {
			for i, fs := range failed {
				c, err := r.loadChunk(ctx, js, chunks[i])
				if err != nil {
					return fmt.Errorf("read job %s chunk %d back for its dead letters: %w", js.id, chunks[i].Seq, err)
				}
				for _, f := range fs {
					if err := out.publish(c.Requests[f.req].Input(), f.res); err != nil {
						return err
					}
				}
			}
			clear(failed)
			failedBytes = 0
			return nil
		}
		one := func(br *batchapi.Result, id string) error {
			w, ok := where[id]
			if !ok || published[id] {
				return nil // not this job's, or a second result for it
			}
			published[id] = true
			c := chunks[w.chunk]
			res := r.resultOf(js, c.Requests[w.req], b, br, refused, c.Seq)
			if res.Error == nil {
				return out.publish(c.Requests[w.req].Input(), res)
			}
			failed[w.chunk] = append(failed[w.chunk], failure{w.req, res})
			if failedBytes += resultBytes(res); failedBytes >= maxFailedBytes {
				return flush()
			}
			return nil
		}
		if results != nil {
			if err := results(func(br batchapi.Result) error { return one(&br, br.ID) }); err != nil {
				return fmt.Errorf("results: %w", err)
			}
		}
		for id := range where {
			if err := one(nil, id); err != nil {
				return err
			}
		}
		if err := flush(); err != nil {
			return err
		}
		if err := out.wait(); err != nil {
			return fmt.Errorf("publish results: %w", err)
		}
		js.job.Step = StepDone
		if err := r.writeJob(ctx, js); err != nil {
			return err
		}
		// Tombstones: the chunks, seal and cancel first, the job last (a
		// reader that sees the job's tombstone forgets the job).
		var recs []*kgo.Record
		for _, c := range chunks {
			recs = append(recs, &kgo.Record{Key: []byte(ChunkKey(js.id, c.Seq))})
		}
		recs = append(recs, &kgo.Record{Key: []byte(SealKey(js.id))}, &kgo.Record{Key: []byte(CancelKey(js.id))}, &kgo.Record{Key: []byte(JobKey(js.id))})
		for _, rec := range recs {
			rec.Topic, rec.Partition = r.cfg.JobsTopic, js.partition
		}
		if err := r.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("tombstone job %s: %w", js.id, err)
		}
		return nil
	})
	if err != nil {
		js.job.Step = StepPublishing
		return err
	}
	r.log.Info().Str("job", js.id).Str("batch_id", js.job.BatchID).Int("results", n).Int64("cost_usd_ticks", b.CostUSDTicks).Msg("batch job done")
	r.mu.Lock()
	if jp := r.parts[js.partition]; jp != nil && jp.jobs[js.id] == js {
		delete(jp.jobs, js.id)
	}
	r.mu.Unlock()
	return nil
}

// failure is a failed result waiting for its chunk's values.
type failure struct {
	req int // index in its chunk
	res *record.Result
}

// resultBytes is about what res holds in memory.
func resultBytes(res *record.Result) int {
	n := 256 + len(res.CustomID)
	if res.Response != nil {
		n += len(res.Response.Body)
	}
	if res.Error != nil {
		n += len(res.Error.Message)
	}
	return n
}

// outbox hands a job's results to the publisher with at most
// maxPublishingBytes of them unacknowledged, tells the observer of each
// acknowledged one, and keeps the first error.
type outbox struct {
	r   *Runner
	ctx context.Context
	sem *semaphore.Weighted
	wg  sync.WaitGroup

	mu  sync.Mutex
	err error
}

func (r *Runner) newOutbox(ctx context.Context) *outbox {
	return &outbox{r: r, ctx: ctx, sem: semaphore.NewWeighted(maxPublishingBytes)}
}

// publish hands one result (and its dead letter) to the publisher,
// first waiting for room; it returns the first error so far.
func (o *outbox) publish(in *kgo.Record, res *record.Result) error {
	w := int64(min(resultBytes(res)+len(in.Value)+len(in.Key), maxPublishingBytes))
	if err := o.sem.Acquire(o.ctx, w); err != nil {
		return fmt.Errorf("publish results: %w", err)
	}
	o.wg.Add(1)
	o.r.pub.Publish(o.ctx, in, res, func(err error) {
		defer o.wg.Done()
		defer o.sem.Release(w)
		o.mu.Lock()
		defer o.mu.Unlock()
		if err != nil && o.err == nil {
			o.err = err
		}
		if err == nil && o.r.cfg.Observer != nil {
			o.r.cfg.Observer.BatchResult(res)
		}
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// wait waits for every result handed over and returns the first error.
func (o *outbox) wait() error {
	o.wg.Wait()
	return o.err
}

// resultOf is the result record of request q of the job.
// br is the provider's result, nil when it gave none.
func (r *Runner) resultOf(js *jobState, q Request, b batchapi.Batch, br *batchapi.Result, refused map[int]string, seq int) *record.Result {
	res := &record.Result{
		ID: record.NewID(), CustomID: q.CustomID, Attempts: 1,
		Source:    record.Source{Topic: q.Topic, Partition: q.Partition, Offset: q.Offset},
		LatencyMS: r.now().Sub(q.Gathered).Milliseconds(),
		Tier:      record.TierBatch, BatchID: js.job.BatchID,
	}
	if msg, ok := refused[seq]; ok {
		res.Error = &record.Error{Code: record.CodeAPIError, Message: msg}
		return res
	}
	if br == nil {
		switch b.State {
		case batchapi.StateCancelled, batchapi.StateCancelling:
			res.Error = &record.Error{Code: record.CodeCancelled, Message: "the provider batch " + b.ID + " was cancelled before the request ran"}
		case batchapi.StateExpired:
			res.Error = &record.Error{Code: record.CodeExpired, Message: "the provider batch " + b.ID + " expired before the request ran"}
		default:
			if !b.ExpiresAt.IsZero() && r.now().After(b.ExpiresAt) {
				res.Error = &record.Error{Code: record.CodeExpired, Message: "the provider batch " + b.ID + " passed its expiry without a result for the request"}
				break
			}
			res.Error = &record.Error{Code: record.CodeAPIError, Message: "the provider batch " + b.ID + " ended (" + string(b.State) + ") without a result for the request"}
		}
		return res
	}
	res.CostUSDTicks = br.CostUSDTicks
	if br.Body != nil || br.StatusCode != 0 {
		res.Response = &record.Response{StatusCode: br.StatusCode, Body: br.Body}
		if br.RequestID != "" {
			id := br.RequestID
			res.Response.RequestID = &id
		}
	}
	switch br.Outcome {
	case batchapi.Succeeded:
	case batchapi.Expired:
		res.Error = &record.Error{Code: record.CodeExpired, Message: br.Error.Message}
	case batchapi.Cancelled:
		res.Error = &record.Error{Code: record.CodeCancelled, Message: br.Error.Message}
	default:
		msg := br.Error.Message
		if br.Error.Code != "" {
			msg = br.Error.Code + ": " + msg
		}
		res.Error = &record.Error{Code: record.CodeAPIError, Message: msg}
	}
	return res
}
