package producer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

// Publisher writes results to the output topic and failed inputs, byte for
// byte, to the dead-letter topic. It is safe for concurrent use.
//
// No record's outputs can be too large to write: each is sized against its
// topic's limit before it is produced and, when it does not fit, shrunk
// step by step, each step leaving a marker (see package result):
//
//  1. a result leaves out the API's body (response.body null,
//     response.body_omitted its size; a success becomes a
//     result_too_large failure, dead-lettered); a dead letter leaves out
//     the input's value (header sluice.value.omitted, its size);
//  2. then the input's headers (sluice.headers.omitted, their count);
//  3. then the key (sluice.key.omitted, its size).
//
// The source headers and the result's source always point at the
// original. A record the brokers still refuse as MESSAGE_TOO_LARGE (its
// limit was lower than known) is produced again at the next step.
type Publisher struct {
	cl          *kgo.Client
	outputTopic string
	dlqTopic    string
	// Gate, when set, is held around the produces of one record's
	// outputs (exactly-once: the consumer's transaction boundary).
	Gate sync.Locker
	// MaxMessageBytes, when set, returns the largest record batch topic
	// takes (its max.message.bytes); 0, or a nil func, means unknown. A
	// record is sized against it and against the client's
	// ProducerBatchMaxBytes for topic, whichever is lower.
	MaxMessageBytes func(topic string) int
}

// NewPublisher returns a Publisher producing through cl, which should be
// configured for acks=all (the franz-go default) and idempotent writes.
func NewPublisher(cl *kgo.Client, outputTopic, dlqTopic string) *Publisher {
	return &Publisher{cl: cl, outputTopic: outputTopic, dlqTopic: dlqTopic}
}

// Publish produces the result of the input record in, plus its dead letter
// when res failed. done is called exactly once: with nil after the brokers
// acknowledged every record, or with the first error. A ctx already done
// when the gate is taken produces nothing (done gets context.Cause(ctx)).
// Otherwise ctx bounds only the wait for buffer space: once buffered, an
// output is not failed by ctx
// (franz-go fails a whole batch, holding other records' outputs, with its
// first record's context), so cancelling one input partition's context
// never fails another partition's outputs.
func (p *Publisher) Publish(ctx context.Context, in *kgo.Record, res *record.Result, done func(error)) {
	pb := &publication{p: p, ctx: ctx, rctx: context.WithoutCancel(ctx), in: in, res: res, acks: newAckGroup(1, done)}
	unlock := p.lock()
	defer unlock()
	if ctx.Err() != nil {
		// The input was given up (its partition revoked or released)
		// while it waited for the gate: an exactly-once transaction
		// must not get outputs whose offset it will not commit.
		pb.acks.ack(context.Cause(ctx))
		return
	}
	pb.result(shrinkNone)
}

// Shrink steps of an output record (see Publisher).
const (
	shrinkNone    = iota
	shrinkBody    // the API's body (result) or the input's value (dead letter)
	shrinkHeaders // and the input's headers
	shrinkKey     // and the key
	shrinkSteps
)

// maxMessageText bounds an error message in a shrunk result and in the
// sluice.error.message header.
const maxMessageText = 1024

// publication is the outputs of one input record.
type publication struct {
	p    *Publisher
	ctx  context.Context // bounds waits for buffer space
	rctx context.Context // the records' context: never cancelled
	in   *kgo.Record
	res  *record.Result
	acks *ackGroup
	dlq  sync.Once
}

// result produces the result record at the first step from step on that
// fits the output topic, and the dead letter once the result is a failure.
// The caller holds the gate.
func (pb *publication) result(step int) {
	limit := pb.p.limit(pb.p.outputTopic)
	var rec *kgo.Record
	var r *record.Result
	for ; ; step++ {
		var err error
		if rec, r, err = pb.p.resultAt(pb.in, pb.res, step); err != nil {
			pb.acks.ack(fmt.Errorf("encode result: %w", err))
			return
		}
		if step == shrinkSteps-1 || batchBytes(rec) <= limit {
			break
		}
	}
	if r.Failed() {
		pb.dlq.Do(func() {
			pb.acks.add(1)
			pb.deadLetter(r, shrinkNone)
		})
	}
	pb.produce(rec, step, pb.result)
}

// deadLetter produces the dead letter of r at the first step from step on
// that fits the dead-letter topic. The caller holds the gate.
func (pb *publication) deadLetter(r *record.Result, step int) {
	limit := pb.p.limit(pb.p.dlqTopic)
	rec := pb.p.deadLetterAt(pb.in, r, step)
	for step < shrinkSteps-1 && batchBytes(rec) > limit {
		step++
		rec = pb.p.deadLetterAt(pb.in, r, step)
	}
	pb.produce(rec, step, func(next int) { pb.deadLetter(r, next) })
}

// produce produces rec, made at step; a MESSAGE_TOO_LARGE answer makes it
// again at the next step (retry, from a goroutine of its own holding the
// gate: not from inside the promise, since a produce may wait for the
// promise worker).
func (pb *publication) produce(rec *kgo.Record, step int, retry func(step int)) {
	pb.send(rec, func(err error) {
		if errors.Is(err, kerr.MessageTooLarge) && step < shrinkSteps-1 {
			go func() {
				unlock := pb.p.lock()
				defer unlock()
				retry(step + 1)
			}()
			return
		}
		pb.acks.ack(err)
	})
}

// bufferRetry is how long a produce waits before trying again when the
// client's buffer is full.
const bufferRetry = 10 * time.Millisecond

// send hands rec to the client under the records' context, which is never
// cancelled: franz-go fails a whole batch when the context of its first
// record ends, and a batch of an output partition holds the outputs of
// many input partitions. Only the wait for buffer space watches pb.ctx:
// a full buffer is waited out here, not inside Produce, so cancelling one
// input partition abandons its own unbuffered outputs and nothing else.
// The caller holds the gate.
func (pb *publication) send(rec *kgo.Record, done func(error)) {
	pb.p.cl.TryProduce(pb.rctx, rec, func(_ *kgo.Record, err error) {
		if !errors.Is(err, kgo.ErrMaxBuffered) {
			done(err)
			return
		}
		go func() {
			t := time.NewTimer(bufferRetry)
			defer t.Stop()
			select {
			case <-pb.ctx.Done():
				done(context.Cause(pb.ctx))
			case <-t.C:
				unlock := pb.p.lock()
				defer unlock()
				pb.send(rec, done)
			}
		}()
	})
}

// limit returns the largest one-record batch topic takes: the client's
// batch cap for it, or the topic's limit when lower.
func (p *Publisher) limit(topic string) int {
	n := clientBatchMaxBytes(p.cl, topic)
	if p.MaxMessageBytes != nil {
		if m := p.MaxMessageBytes(topic); m > 0 {
			n = min(n, m)
		}
	}
	return n
}

// lock takes the gate, if any, and returns its release.
func (p *Publisher) lock() (unlock func()) {
	if p.Gate == nil {
		return func() {}
	}
	p.Gate.Lock()
	return p.Gate.Unlock
}

// resultAt returns the result record of res at shrink step step, and the
// result it carries. It keeps the input's key and headers, until the steps
// that leave them out.
func (p *Publisher) resultAt(in *kgo.Record, res *record.Result, step int) (*kgo.Record, *record.Result, error) {
	r := res
	if step >= shrinkBody {
		small := *res
		if res.Response != nil {
			resp := *res.Response
			resp.Body, resp.BodyOmitted = nil, len(res.Response.Body)
			small.Response = &resp
		}
		if small.Error == nil {
			small.Error = &record.Error{Code: record.CodeResultTooLarge,
				Message: "the API's answer does not fit in one record on " + p.outputTopic}
		} else if len(small.Error.Message) > maxMessageText {
			e := *small.Error
			e.Message = truncate(e.Message, maxMessageText)
			small.Error = &e
		}
		if resp := small.Response; resp != nil && resp.BodyOmitted > 0 && res.Error != nil {
			e := *small.Error
			e.Message += fmt.Sprintf(" (response body of %d bytes left out: it does not fit in one record on %s)", resp.BodyOmitted, p.outputTopic)
			small.Error = &e
		}
		r = &small
	}
	value, err := r.Marshal()
	if err != nil {
		return nil, nil, err
	}
	rec := &kgo.Record{Topic: p.outputTopic, Key: in.Key, Value: value}
	rec.Headers = shrinkInput(rec, in, step)
	return rec, r, nil
}

// deadLetterAt is the input's key and value, byte for byte, so replaying is
// a copy back; the headers say what went wrong and where it came from. At
// shrink step step it leaves out the value, then the input's headers, then
// the key, each with its marker header.
func (p *Publisher) deadLetterAt(in *kgo.Record, res *record.Result, step int) *kgo.Record {
	rec := &kgo.Record{Topic: p.dlqTopic, Key: in.Key, Value: in.Value}
	h := shrinkInput(rec, in, step)
	if step >= shrinkBody {
		rec.Value = nil
		h = append(h, kgo.RecordHeader{Key: record.HeaderValueOmitted, Value: []byte(strconv.Itoa(len(in.Value)))})
	}
	rec.Headers = append(h,
		kgo.RecordHeader{Key: record.HeaderErrorCode, Value: []byte(res.Error.Code)},
		kgo.RecordHeader{Key: record.HeaderErrorMessage, Value: []byte(truncate(res.Error.Message, maxMessageText))},
		kgo.RecordHeader{Key: record.HeaderAttempts, Value: []byte(strconv.Itoa(res.Attempts))},
		kgo.RecordHeader{Key: record.HeaderSourceTopic, Value: []byte(in.Topic)},
		kgo.RecordHeader{Key: record.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(in.Partition)))},
		kgo.RecordHeader{Key: record.HeaderSourceOffset, Value: []byte(strconv.FormatInt(in.Offset, 10))},
	)
	return rec
}

// shrinkInput returns the headers of an output of in at shrink step step
// (the input's, or the marker of their absence) and leaves out rec's key
// at the last step.
func shrinkInput(rec *kgo.Record, in *kgo.Record, step int) []kgo.RecordHeader {
	h := make([]kgo.RecordHeader, 0, len(in.Headers)+8)
	if step >= shrinkHeaders && len(in.Headers) > 0 {
		h = append(h, kgo.RecordHeader{Key: record.HeaderHeadersOmitted, Value: []byte(strconv.Itoa(len(in.Headers)))})
	} else {
		h = append(h, in.Headers...)
	}
	if step >= shrinkKey && len(in.Key) > 0 {
		rec.Key = nil
		h = append(h, kgo.RecordHeader{Key: record.HeaderKeyOmitted, Value: []byte(strconv.Itoa(len(in.Key)))})
	}
	return h
}

// truncate cuts s to at most n bytes, never inside a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// ackGroup calls done once, after n acks or at the first error.
type ackGroup struct {
	mu      sync.Mutex
	pending int
	done    func(error)
	called  bool
}

func newAckGroup(n int, done func(error)) *ackGroup {
	return &ackGroup{pending: n, done: done}
}

func (g *ackGroup) add(n int) {
	g.mu.Lock()
	g.pending += n
	g.mu.Unlock()
}

func (g *ackGroup) ack(err error) {
	g.mu.Lock()
	g.pending--
	fire := !g.called && (err != nil || g.pending == 0)
	if fire {
		g.called = true
	}
	g.mu.Unlock()
	if fire {
		if err != nil {
			err = fmt.Errorf("producer: %w", err)
		}
		g.done(err)
	}
}
