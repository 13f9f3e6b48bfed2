package batchjob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/record"
)

// A job waits for its provider batch for up to a day, and a member owns
// every job of its jobs partitions: holding their prompts would grow
// memory with the batch tier's traffic of a whole day. The runner holds
// a chunk's requests without their values and reads the chunk back from
// the jobs topic, one at a time, when it needs them: to add the chunk to
// the provider batch, and to publish dead letters.

// errChunkMoved: the chunk's record is no longer at the offset the
// runner read it at (it was written again and compacted); the step is
// retried once the runner has read the newer copy.
var errChunkMoved = errors.New("batchjob: chunk record moved")

// loadChunk returns chunk held of job js with its input values, read
// back from its record in the jobs topic; only the requests held keeps
// (the first copies) are returned, in order.
func (r *Runner) loadChunk(ctx context.Context, js *jobState, held Chunk) (Chunk, error) {
	r.mu.Lock()
	offset, ok := js.offsets[held.Seq]
	r.mu.Unlock()
	if !ok {
		return Chunk{}, fmt.Errorf("%w: job %s chunk %d has no record", errChunkMoved, js.id, held.Seq)
	}
	// One chunk read back at a time: memory holds one chunk's values.
	r.readMu.Lock()
	defer r.readMu.Unlock()
	opts := append(slices.Clip(r.cfg.Connect),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.cfg.JobsTopic: {js.partition: kgo.NewOffset().At(offset)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxPartitionBytes(1<<20),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return Chunk{}, fmt.Errorf("batchjob: read chunk back: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollRecords(ctx, 1)
		if ctx.Err() != nil {
			return Chunk{}, fmt.Errorf("batchjob: read job %s chunk %d back: %w", js.id, held.Seq, context.Cause(ctx))
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return Chunk{}, fmt.Errorf("batchjob: read job %s chunk %d back: %w", js.id, held.Seq, ferr)
		}
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		rec := recs[0]
		if rec.Offset != offset || !bytes.Equal(rec.Key, []byte(ChunkKey(js.id, held.Seq))) || rec.Value == nil {
			return Chunk{}, fmt.Errorf("%w: job %s chunk %d: offset %d holds another record", errChunkMoved, js.id, held.Seq, offset)
		}
		c, err := DecodeChunk(rec.Value)
		if err != nil {
			return Chunk{}, fmt.Errorf("batchjob: read job %s chunk %d back: %w", js.id, held.Seq, err)
		}
		values := make(map[string][]byte, len(c.Requests))
		for _, q := range c.Requests {
			values[q.ID] = q.Value
		}
		out := held
		out.Requests = slices.Clone(held.Requests)
		for i := range out.Requests {
			out.Requests[i].Value = values[out.Requests[i].ID]
		}
		return out, nil
	}
}

// requests returns the provider requests of chunk held, its values read
// back.
func (r *Runner) requests(ctx context.Context, js *jobState, held Chunk) ([]batchapi.Request, error) {
	c, err := r.loadChunk(ctx, js, held)
	if err != nil {
		return nil, err
	}
	return ProviderRequests(c, r.cfg.Parse), nil
}

// ProviderRequests returns the provider requests of chunk c, whose
// values are held: each value parsed as the gatherer's replica parsed
// it (opts: DefaultModel, Endpoint), under its request id.
func ProviderRequests(c Chunk, opts record.Options) []batchapi.Request {
	out := make([]batchapi.Request, 0, len(c.Requests))
	for _, q := range c.Requests {
		o := opts
		o.FallbackID = q.CustomID
		req, err := record.Parse(q.Value, o)
		body := req.Body
		if err != nil {
			body = q.Value // parsed when gathered; the provider answers an error
		}
		out = append(out, batchapi.Request{ID: q.ID, URL: c.Endpoint, Body: body})
	}
	return out
}

// lines yields the provider requests of chunks, reading one chunk back
// at a time: the input file of an OpenAI batch.
func (r *Runner) lines(ctx context.Context, js *jobState, chunks []Chunk) batchapi.Lines {
	return func(yield func(batchapi.Request) error) error {
		for _, c := range chunks {
			if len(c.Requests) == 0 {
				continue
			}
			reqs, err := r.requests(ctx, js, c)
			if err != nil {
				return err
			}
			for _, q := range reqs {
				if err := yield(q); err != nil {
					return err
				}
			}
		}
		return nil
	}
}
