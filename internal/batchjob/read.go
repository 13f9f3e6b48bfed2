package batchjob

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// JobInfo is what the jobs topic says of one job, for sluice batches.
type JobInfo struct {
	ID        string
	Partition int32
	API       string
	Endpoint  string
	Model     string
	// Chunks and Requests: what was gathered so far.
	Chunks, Requests int
	Sealed           bool
	// Job is the owner's last progress record; HasJob is false before
	// the owner took the job up.
	Job    Job
	HasJob bool
	// Cancel is set once a cancel was requested.
	Cancel bool
	// Gathered is when its oldest record was gathered.
	Gathered time.Time
}

// ReadJobs reads the jobs topic through cl (a client without a group)
// up to its end and returns the live jobs, oldest first.
func ReadJobs(ctx context.Context, cl *kgo.Client, topic string) ([]JobInfo, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("batchjob: end offsets of %s: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("batchjob: end offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	start := map[string]map[int32]kgo.Offset{topic: {}}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			start[topic][o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	jobs := map[string]*JobInfo{}
	if len(want) > 0 {
		cl.AddConsumePartitions(start)
		defer cl.RemoveConsumePartitions(map[string][]int32{topic: slices.Collect(func(yield func(int32) bool) {
			for p := range want {
				if !yield(p) {
					return
				}
			}
		})})
	}
	for len(want) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("batchjob: read %s: %w", topic, context.Cause(ctx))
		}
		if fs.Empty() {
			break // the ends were compacted away: all there is was read
		}
		fs.EachRecord(func(rec *kgo.Record) {
			if rec.Offset+1 >= want[rec.Partition] {
				delete(want, rec.Partition)
			}
			applyInfo(jobs, rec)
		})
	}
	out := make([]JobInfo, 0, len(jobs))
	for _, j := range jobs {
		if j.Chunks > 0 || j.HasJob {
			out = append(out, *j)
		}
	}
	slices.SortFunc(out, func(a, b JobInfo) int { return a.Gathered.Compare(b.Gathered) })
	return out, nil
}

// applyInfo folds one jobs record into jobs.
func applyInfo(jobs map[string]*JobInfo, rec *kgo.Record) {
	id, kind, _, ok := ParseKey(rec.Key)
	if !ok || rec.Attrs.IsControl() {
		return
	}
	if kind == KindJob && rec.Value == nil {
		delete(jobs, id)
		return
	}
	j := jobs[id]
	if j == nil {
		if rec.Value == nil {
			return
		}
		j = &JobInfo{ID: id, Partition: rec.Partition}
		jobs[id] = j
	}
	switch kind {
	case KindChunk:
		if c, err := DecodeChunk(rec.Value); err == nil {
			j.API, j.Endpoint, j.Model = c.API, c.Endpoint, c.Model
			j.Chunks++
			j.Requests += len(c.Requests)
			for _, q := range c.Requests {
				if j.Gathered.IsZero() || q.Gathered.Before(j.Gathered) {
					j.Gathered = q.Gathered
				}
			}
		}
	case KindSeal:
		j.Sealed = rec.Value != nil
	case KindCancel:
		j.Cancel = rec.Value != nil
	case KindJob:
		if jb, err := DecodeJob(rec.Value); err == nil {
			j.Job, j.HasJob = jb, true
		}
	}
}

// RequestCancel asks the owner of job id (in partition) to cancel its
// provider batch: it writes the job's cancel record through cl, whose
// partitioner must be Partitioner's or ManualPartitioner.
func RequestCancel(ctx context.Context, cl *kgo.Client, topic string, partition int32, id string) error {
	value := fmt.Appendf(nil, `{"v":%d,"job":%q,"requested":%q}`, Version, id, time.Now().UTC().Format(time.RFC3339))
	rec := &kgo.Record{Topic: topic, Partition: partition, Key: []byte(CancelKey(id)), Value: value}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("batchjob: request cancel of %s: %w", id, err)
	}
	return nil
}
