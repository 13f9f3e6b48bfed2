package batchjob

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/record"
)

// publish publishes one result per record of the job, waits for them,
// then tombstones the job's records.
func (r *Runner) publish(ctx context.Context, js *jobState, chunks []Chunk, b batchapi.Batch, results map[string]batchapi.Result) error {
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
	n := 0
	// Exactly once, the results, their dead letters, the job's last
	// record and its tombstones commit together: a crash before leaves
	// none of them, and the next owner publishes them again.
	err := r.txn(ctx, func() error {
		var wg sync.WaitGroup
		var errMu sync.Mutex
		var firstErr error
		var published []*record.Result
		for _, c := range chunks {
			for _, q := range c.Requests {
				res := r.resultOf(js, q, b, results, refused, c.Seq)
				wg.Add(1)
				n++
				r.pub.Publish(ctx, q.Input(), res, func(err error) {
					errMu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					if err == nil {
						published = append(published, res)
					}
					errMu.Unlock()
					wg.Done()
				})
			}
		}
		wg.Wait()
		if firstErr != nil {
			return fmt.Errorf("publish results: %w", firstErr)
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
		if r.cfg.Observer != nil {
			for _, res := range published {
				r.cfg.Observer.BatchResult(res)
			}
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

// resultOf is the result record of request q of the job.
func (r *Runner) resultOf(js *jobState, q Request, b batchapi.Batch, results map[string]batchapi.Result, refused map[int]string, seq int) *record.Result {
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
	br, ok := results[q.ID]
	if !ok {
		switch b.State {
		case batchapi.StateCancelled, batchapi.StateCancelling:
			res.Error = &record.Error{Code: record.CodeCancelled, Message: "the provider batch " + b.ID + " was cancelled before the request ran"}
		case batchapi.StateExpired:
			res.Error = &record.Error{Code: record.CodeExpired, Message: "the provider batch " + b.ID + " expired before the request ran"}
		default:
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
