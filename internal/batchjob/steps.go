package batchjob

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/batchapi"
)

// The steps of a job with each provider: create, add (at most once), poll.

// noAnswer reports whether err left it unknown whether the call
// happened (a timeout, a dropped connection).
func noAnswer(err error) bool {
	return errors.Is(err, api.ErrTimeout) || errors.Is(err, api.ErrTransport) || errors.Is(err, context.DeadlineExceeded)
}

// stepXAI: create the batch, add every chunk once, poll, publish.
func (r *Runner) stepXAI(ctx context.Context, js *jobState, chunks []Chunk, seal *Seal, cancel bool) error {
	x := r.cfg.XAI
	if js.job.BatchID == "" {
		// Creating twice after a crash leaves an empty batch: no
		// request is in two batches.
		b, err := x.Create(ctx, "sluice-"+js.id)
		if err != nil {
			return fmt.Errorf("create batch: %w", err)
		}
		js.job.BatchID, js.job.ProviderState = b.ID, string(b.State)
		if err := r.save(ctx, js); err != nil {
			return err
		}
		r.stateChange(js, "", b.State)
	}
	if js.job.Adding != nil {
		// An add was begun and not recorded as done: the batch's count
		// says whether it happened.
		seq := *js.job.Adding
		b, err := x.Get(ctx, js.job.BatchID)
		if err != nil {
			return fmt.Errorf("check add: %w", err)
		}
		n := 0
		if i := slices.IndexFunc(chunks, func(c Chunk) bool { return c.Seq == seq }); i >= 0 {
			n = len(chunks[i].Requests)
		}
		if b.Total >= js.job.TotalBefore+n {
			js.job.Added = append(js.job.Added, seq)
		}
		js.job.Adding = nil
		if err := r.save(ctx, js); err != nil {
			return err
		}
	}
	for _, c := range chunks {
		if slices.Contains(js.job.Added, c.Seq) {
			continue
		}
		if len(c.Requests) == 0 { // only second copies
			js.job.Added = append(js.job.Added, c.Seq)
			continue
		}
		reqs, err := r.requests(ctx, js, c)
		if err != nil {
			return fmt.Errorf("add chunk %d: %w", c.Seq, err)
		}
		b, err := x.Get(ctx, js.job.BatchID)
		if err != nil {
			return fmt.Errorf("read batch before an add: %w", err)
		}
		seq := c.Seq
		js.job.Adding, js.job.TotalBefore = &seq, b.Total
		if err := r.save(ctx, js); err != nil {
			return err
		}
		parts, err := batchapi.XAIChunks(reqs)
		if err == nil {
			for _, part := range parts {
				if err = x.Add(ctx, js.job.BatchID, part); err != nil {
					break
				}
			}
		}
		if err != nil {
			if noAnswer(err) || api.Retryable(err) {
				return fmt.Errorf("add chunk %d: %w", seq, err) // Adding stays: checked next time
			}
			r.log.Warn().Err(err).Str("job", js.id).Int("chunk", seq).Msg("the provider refused a chunk of a batch job; its records get error results")
			js.job.Refused = append(js.job.Refused, Refusal{Chunk: seq, Message: api.Truncate(err.Error(), 512)})
		} else {
			js.job.Added = append(js.job.Added, seq)
		}
		js.job.Adding = nil
		if err := r.save(ctx, js); err != nil {
			return err
		}
	}
	if !r.ready(chunks, seal) {
		return nil // more chunks may come
	}
	if js.job.Step == StepSealed {
		js.job.Step = StepSubmitted
		if err := r.save(ctx, js); err != nil {
			return err
		}
	}
	if cancel && js.job.ProviderState != string(batchapi.StateCancelled) && js.job.ProviderState != string(batchapi.StateCancelling) {
		if _, err := x.Cancel(ctx, js.job.BatchID); err != nil {
			return fmt.Errorf("cancel: %w", err)
		}
	}
	b, err := x.Get(ctx, js.job.BatchID)
	if err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	if err := r.observe(ctx, js, b); err != nil {
		return err
	}
	if b.Pending > 0 && !b.State.Terminal() {
		r.later(js)
		return nil
	}
	// The results are read a page at a time as they are published.
	results := func(fn func(batchapi.Result) error) error {
		for page := ""; ; {
			rs, next, err := x.Results(ctx, js.job.BatchID, page)
			if err != nil {
				return err
			}
			for _, res := range rs {
				if err := fn(res); err != nil {
					return err
				}
			}
			if page = next; page == "" {
				return nil
			}
		}
	}
	return r.publish(ctx, js, chunks, b, results)
}

// stepOpenAI: once sealed, upload the file and create the batch (once),
// poll, publish.
func (r *Runner) stepOpenAI(ctx context.Context, js *jobState, chunks []Chunk, seal *Seal, cancel bool) error {
	o := r.cfg.OpenAI
	if !r.ready(chunks, seal) {
		return nil
	}
	if js.job.BatchID == "" && js.job.Creating {
		// A create was begun and not recorded: find its batch by the
		// job id in its metadata.
		b, found, err := r.findOpenAI(ctx, js.id)
		if err != nil {
			return err
		}
		if found {
			js.job.BatchID = b.ID
		}
		js.job.Creating = false
		if err := r.save(ctx, js); err != nil {
			return err
		}
	}
	if js.job.BatchID == "" {
		file, err := o.Upload(ctx, js.id+".jsonl", r.lines(ctx, js, chunks))
		if err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		js.job.FileID, js.job.Creating = file, true
		if err := r.save(ctx, js); err != nil {
			return err
		}
		b, err := o.Create(ctx, file, js.job.Endpoint, map[string]string{"sluice_job": js.id})
		if err != nil {
			return fmt.Errorf("create batch: %w", err) // Creating stays: looked for next time
		}
		js.job.BatchID, js.job.Creating, js.job.Step = b.ID, false, StepSubmitted
		js.job.ProviderState = string(b.State)
		if err := r.save(ctx, js); err != nil {
			return err
		}
		r.stateChange(js, "", b.State)
	}
	if cancel && !batchapi.State(js.job.ProviderState).Terminal() && js.job.ProviderState != string(batchapi.StateCancelling) {
		if _, err := o.Cancel(ctx, js.job.BatchID); err != nil {
			return fmt.Errorf("cancel: %w", err)
		}
	}
	b, err := o.Get(ctx, js.job.BatchID)
	if err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	if err := r.observe(ctx, js, b); err != nil {
		return err
	}
	if !b.State.Terminal() {
		r.later(js)
		return nil
	}
	// The output and error files are read a line at a time as they are
	// published.
	results := func(fn func(batchapi.Result) error) error {
		for _, f := range []string{b.OutputFileID, b.ErrorFileID} {
			if f == "" {
				continue
			}
			if err := o.Results(ctx, f, fn); err != nil {
				return err
			}
		}
		return nil
	}
	if err := r.publish(ctx, js, chunks, b, results); err != nil {
		return err
	}
	// The job is done: its files would otherwise stay in the provider's
	// storage until deleted by hand.
	for _, f := range []string{js.job.FileID, b.OutputFileID, b.ErrorFileID} {
		if f == "" {
			continue
		}
		if err := o.DeleteFile(ctx, f); err != nil {
			r.log.Warn().Err(err).Str("job", js.id).Str("file_id", f).Msg("cannot delete a finished batch's file; delete it by hand")
		}
	}
	return nil
}

// findOpenAI looks through the newest batches for the job's.
func (r *Runner) findOpenAI(ctx context.Context, jobID string) (batchapi.Batch, bool, error) {
	after := ""
	for range 20 { // the newest 2000 batches
		page, next, err := r.cfg.OpenAI.List(ctx, after, 100)
		if err != nil {
			return batchapi.Batch{}, false, fmt.Errorf("look for the batch: %w", err)
		}
		for _, b := range page {
			if b.Metadata["sluice_job"] == jobID {
				return b, true, nil
			}
		}
		if after = next; after == "" {
			break
		}
	}
	return batchapi.Batch{}, false, nil
}
