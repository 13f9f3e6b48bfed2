package producer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/result"
)

// Publisher writes results to the output topic and failed inputs, byte for
// byte, to the dead-letter topic. It is safe for concurrent use.
type Publisher struct {
	cl          *kgo.Client
	outputTopic string
	dlqTopic    string
	// Gate, when set, is held around the produces of one record's
	// outputs (exactly-once: the consumer's transaction boundary).
	Gate sync.Locker
}

// NewPublisher returns a Publisher producing through cl, which should be
// configured for acks=all (the franz-go default) and idempotent writes.
func NewPublisher(cl *kgo.Client, outputTopic, dlqTopic string) *Publisher {
	return &Publisher{cl: cl, outputTopic: outputTopic, dlqTopic: dlqTopic}
}

// Publish produces the result of the input record in, plus its dead letter
// when res failed. done is called exactly once: with nil after the brokers
// acknowledged every record, or with the first error. ctx bounds only the
// wait for buffer space and unsent records; cancel it to abandon.
func (p *Publisher) Publish(ctx context.Context, in *kgo.Record, res *result.Result, done func(error)) {
	value, err := res.Marshal()
	if err != nil {
		done(fmt.Errorf("producer: encode result: %w", err))
		return
	}
	records := []*kgo.Record{p.resultRecord(in, value)}
	if res.Failed() {
		records = append(records, p.deadLetter(in, res))
	}
	acks := newAckGroup(len(records), done)
	unlock := p.lock()
	defer unlock()
	p.cl.Produce(ctx, records[0], func(r *kgo.Record, err error) {
		if errors.Is(err, kerr.MessageTooLarge) && !res.Failed() {
			// Not from inside the promise: Produce may block on a full
			// buffer that only promises can drain.
			go p.publishTooLarge(ctx, in, res, acks)
			return
		}
		acks.ack(err)
	})
	for _, r := range records[1:] {
		p.cl.Produce(ctx, r, func(_ *kgo.Record, err error) { acks.ack(err) })
	}
}

// publishTooLarge replaces a successful result that does not fit in a
// record by an error result and a dead letter, so the input is not lost
// and the partition moves on. The ack group grows by the dead letter.
func (p *Publisher) publishTooLarge(ctx context.Context, in *kgo.Record, res *result.Result, acks *ackGroup) {
	small := *res
	small.Response = &result.Response{StatusCode: res.Response.StatusCode, RequestID: res.Response.RequestID}
	small.Error = &result.Error{Code: result.CodeResultTooLarge, Message: "the API's answer does not fit in one record on " + p.outputTopic}
	value, err := small.Marshal()
	if err != nil {
		acks.ack(err)
		return
	}
	acks.add(1)
	unlock := p.lock()
	defer unlock()
	p.cl.Produce(ctx, p.resultRecord(in, value), func(_ *kgo.Record, err error) { acks.ack(err) })
	p.cl.Produce(ctx, p.deadLetter(in, &small), func(_ *kgo.Record, err error) { acks.ack(err) })
}

// lock takes the gate, if any, and returns its release.
func (p *Publisher) lock() (unlock func()) {
	if p.Gate == nil {
		return func() {}
	}
	p.Gate.Lock()
	return p.Gate.Unlock
}

// resultRecord keeps the input's key and headers.
func (p *Publisher) resultRecord(in *kgo.Record, value []byte) *kgo.Record {
	return &kgo.Record{
		Topic:   p.outputTopic,
		Key:     in.Key,
		Value:   value,
		Headers: append([]kgo.RecordHeader(nil), in.Headers...),
	}
}

// deadLetter is the input's key and value, byte for byte, so replaying is a
// copy back; the headers say what went wrong and where it came from.
func (p *Publisher) deadLetter(in *kgo.Record, res *result.Result) *kgo.Record {
	h := make([]kgo.RecordHeader, 0, len(in.Headers)+6)
	h = append(h, in.Headers...)
	h = append(h,
		kgo.RecordHeader{Key: result.HeaderErrorCode, Value: []byte(res.Error.Code)},
		kgo.RecordHeader{Key: result.HeaderErrorMessage, Value: []byte(res.Error.Message)},
		kgo.RecordHeader{Key: result.HeaderAttempts, Value: []byte(strconv.Itoa(res.Attempts))},
		kgo.RecordHeader{Key: result.HeaderSourceTopic, Value: []byte(in.Topic)},
		kgo.RecordHeader{Key: result.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(in.Partition)))},
		kgo.RecordHeader{Key: result.HeaderSourceOffset, Value: []byte(strconv.FormatInt(in.Offset, 10))},
	)
	return &kgo.Record{Topic: p.dlqTopic, Key: in.Key, Value: in.Value, Headers: h}
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
