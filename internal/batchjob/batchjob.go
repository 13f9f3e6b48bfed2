// Package batchjob is the batch tier's state in Kafka: which tier a
// record takes (Tier), the stable id of its request in a provider batch
// (RequestID), and the records of the compacted jobs topic
// (SLUICE_BATCH_JOBS_TOPIC) that describe each provider batch and the
// input records it holds (Job, Chunk), so that any replica can finish
// any job after kill -9, a rebalance or a scale to zero.
//
// # The jobs topic
//
// A job holds the records of one input partition for one endpoint and
// model. Every record of a job is keyed under its id and sent to the
// jobs partition of its input partition (JobsPartition), so one member
// of the jobs group sees all of a job, and every copy of a record:
//
//   - "job/<id>/chunk/<seq>" holds a Chunk, written by the gatherer:
//     the job's API, endpoint and model and input records gathered for
//     it, each with its source coordinates, key, headers, value (for the
//     dead letter, and to rebuild the request body) and custom_id. The
//     input offsets of a chunk's records are committed once it is
//     acknowledged.
//   - "job/<id>/seal" holds the Seal, written after the job's last chunk
//     (SLUICE_BATCH_MAX_REQUESTS or SLUICE_BATCH_MAX_WAIT reached): how
//     many chunks and requests it has.
//   - "job/<id>" holds the Job, written by the job's owner: its provider
//     batch (batch_id, file_id), how far adding got, and the provider's
//     last state and counts. It is rewritten at every step.
//   - "job/<id>/cancel" asks the owner to cancel the provider batch.
//
// Once a job's results are acknowledged, all its records are tombstoned.
//
// # At most one add
//
// A request's id in the provider batch is RequestID(topic, partition,
// offset): stable across replicas and restarts. A record gathered twice
// (a crash after its chunk was written and before its offset was
// committed) appears twice in its jobs partition; every owner, reading
// the partition in order, keeps the first copy and drops the others. Before an add (xAI) or a
// create (OpenAI) the job records the step it is about to take (Job.Adding
// with Job.TotalBefore, Job.Creating); after it, the step's outcome. A new
// owner that finds a step begun and not recorded as done asks the
// provider before repeating it: xAI's batch counts say whether the chunk
// arrived (Total >= TotalBefore + the chunk's requests); OpenAI's batches
// are listed for the job's id in their metadata.
//
//	tier, err := batchjob.Tier(rec, cfg.Tier) // err wraps record.ErrInvalidInput
//	id := batchjob.RequestID(rec.Topic, rec.Partition, rec.Offset)
package batchjob

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

// ErrUnknownTier is wrapped (with record.ErrInvalidInput) by Tier for a
// sluice.tier header sluice cannot serve.
var ErrUnknownTier = errors.New("unknown tier")

// Tier returns the tier of rec: its sluice.tier header ("realtime" or
// "batch"), else def (SLUICE_TIER). Any other header value is an error
// wrapping ErrUnknownTier and record.ErrInvalidInput: the record gets an
// error result and a dead letter, as invalid input does.
func Tier(rec *kgo.Record, def string) (string, error) {
	for _, h := range rec.Headers {
		if h.Key != record.HeaderTier {
			continue
		}
		switch v := string(h.Value); v {
		case record.TierRealtime, record.TierBatch:
			return v, nil
		default:
			const max = 64
			if len(v) > max {
				v = v[:max] + "..."
			}
			return "", fmt.Errorf("%w: %w: header %s is %q; it must be %q or %q",
				record.ErrInvalidInput, ErrUnknownTier, record.HeaderTier, v, record.TierRealtime, record.TierBatch)
		}
	}
	return def, nil
}

// RequestID is the id of the request of the input record at topic,
// partition and offset in a provider batch (xAI's batch_request_id,
// OpenAI's custom_id): "<topic>-<partition>-<offset>", unique per input
// record and the same for every replica, so that a request added twice
// would be seen as such.
func RequestID(topic string, partition int32, offset int64) string {
	return topic + "-" + strconv.Itoa(int(partition)) + "-" + strconv.FormatInt(offset, 10)
}

// JobsPartition is the jobs topic partition, of n, of every record of
// a job gathering records of input partition p: all of a job's records
// go to one member of the jobs group, and so do all the jobs of one
// input partition, so that a record gathered twice (its offset was not
// committed before a crash) is seen twice by the same owner.
func JobsPartition(p, n int32) int32 {
	if n <= 0 || p < 0 {
		return 0
	}
	return p % n
}

// Partitioner sends the records of the jobs topic to the partition they
// name (Partition of their job) and every other record as def does, so
// one client can produce results and jobs records alike.
func Partitioner(jobsTopic string, def kgo.Partitioner) kgo.Partitioner {
	return partitioner{jobs: jobsTopic, def: def, manual: kgo.ManualPartitioner()}
}

type partitioner struct {
	jobs        string
	def, manual kgo.Partitioner
}

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.jobs {
		return p.manual.ForTopic(topic)
	}
	return p.def.ForTopic(topic)
}
