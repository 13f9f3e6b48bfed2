package producer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DeltaRecord is the value of a record on the stream topic: one delta of a
// streamed answer, or (Done) the end of one attempt's stream. Records are
// keyed by custom_id, so those of one custom_id share a partition and are
// read in the order they were produced.
//
//	{"custom_id":"q-1","attempt":1,"seq":0,"delta":{"role":"assistant","content":""},"done":false}
//	{"custom_id":"q-1","attempt":1,"seq":1,"delta":{"content":"Hello"},"done":false}
//	{"custom_id":"q-1","attempt":1,"seq":2,"delta":{},"finish_reason":"stop","done":false}
//	{"custom_id":"q-1","attempt":1,"seq":3,"finish_reason":"stop","done":true}
//
// A streamed Responses API call has typed events: each record keeps the
// event's type and its data verbatim, and the done record's finish_reason
// is the response's status:
//
//	{"custom_id":"r-1","attempt":1,"seq":2,"type":"response.output_text.delta","delta":{"type":"response.output_text.delta","output_index":0,"delta":"Hel",...},"done":false}
//	{"custom_id":"r-1","attempt":1,"seq":9,"finish_reason":"completed","done":true}
//
// Deltas are best effort: the result record on the output topic is the
// contract. A gap in Seq means a delta was lost; a record with a higher
// Attempt means the earlier attempt failed and its deltas are void.
type DeltaRecord struct {
	CustomID string `json:"custom_id"`
	// Attempt is the attempt of the API call, from 1.
	Attempt int `json:"attempt"`
	// Seq numbers the records of one attempt from 0, the done record
	// included.
	Seq int `json:"seq"`
	// Type is the event type of a typed stream (the Responses API's,
	// e.g. "response.output_text.delta"); absent for chat chunks.
	Type string `json:"type,omitempty"`
	// Index is the choice (chat) or output item (responses), omitted for 0.
	Index int `json:"index,omitempty"`
	// Delta is the chat.completion.chunk delta object, or the typed
	// event's data object, verbatim.
	Delta json.RawMessage `json:"delta,omitempty"`
	// FinishReason is set on the delta that ends its choice, and on the
	// done record of an attempt that finished.
	FinishReason string `json:"finish_reason,omitempty"`
	// Done marks the last record of an attempt.
	Done bool `json:"done"`
	// Error, on a done record, says why the attempt's stream failed; a
	// later attempt may follow.
	Error string `json:"error,omitempty"`
}

// DeltaPublisher writes the deltas of streamed answers to the stream
// topic. It is safe for concurrent use.
//
//	deltas := producer.NewDeltaPublisher(client, "completions.stream")
//	s := deltas.Begin(input, customID, attempt)
//	// for each api.ChoiceDelta d of each chunk:
//	s.Delta(ctx, d.Index, d.Delta, d.FinishReason)
//	s.End(ctx, finishReason, callErr, func(failed int, err error) { /* count, log */ })
//
// It relies on franz-go's producer defaults, which keep the records of one
// key in order: the default partitioner sends a key to one partition, and
// idempotent writes (on by default; with them up to five requests in
// flight keep their order) or a single request in flight per broker (the
// default without them) never reorder a partition.
type DeltaPublisher struct {
	cl     *kgo.Client
	topic  string
	failed atomic.Int64
}

// NewDeltaPublisher returns a DeltaPublisher producing to topic through
// cl, which keeps its producer defaults (see DeltaPublisher).
func NewDeltaPublisher(cl *kgo.Client, topic string) *DeltaPublisher {
	return &DeltaPublisher{cl: cl, topic: topic}
}

// Failed returns how many delta records could not be produced since p was
// created, for a counter metric.
func (p *DeltaPublisher) Failed() int64 { return p.failed.Load() }

// Begin starts the stream of one attempt at the input record in, whose
// custom_id is customID: its records are keyed by customID, carry in's
// headers (as results do), and number from Seq 0. Start a new one for
// every attempt.
func (p *DeltaPublisher) Begin(in *kgo.Record, customID string, attempt int) *DeltaStream {
	return &DeltaStream{
		p:       p,
		key:     []byte(customID),
		headers: in.Headers,
		value:   DeltaRecord{CustomID: customID, Attempt: attempt},
	}
}

// DeltaStream publishes the deltas of one attempt, in order. Its methods
// may be called from any goroutine; the order of the calls is the order of
// the records.
type DeltaStream struct {
	p       *DeltaPublisher
	key     []byte
	headers []kgo.RecordHeader
	value   DeltaRecord // CustomID and Attempt

	order    sync.Mutex // held while numbering and producing a record
	mu       sync.Mutex // guards the fields below
	seq      int
	pending  int // produced, not yet acknowledged
	failed   int
	firstErr error
	ended    bool
	done     func(failed int, err error) // nil once called
}

// Delta produces the delta of choice index without blocking: a record the
// client has no buffer space for now (kgo.MaxBufferedRecords) is dropped,
// not waited for, so the stream being read is never held up by Kafka.
// finishReason is "" except on the delta that ends the choice. Failures
// are counted, never returned: see End. Delta after End does nothing.
func (s *DeltaStream) Delta(ctx context.Context, index int, delta json.RawMessage, finishReason string) {
	v := s.value
	v.Index, v.Delta, v.FinishReason = index, delta, finishReason
	if len(v.Delta) == 0 {
		v.Delta = json.RawMessage("{}")
	}
	s.produce(ctx, &v, nil)
}

// Event produces a typed event of a Responses API stream (type typ,
// output item index, its data verbatim), without blocking, as Delta does.
func (s *DeltaStream) Event(ctx context.Context, typ string, index int, data json.RawMessage) {
	v := s.value
	v.Type, v.Index, v.Delta = typ, index, data
	s.produce(ctx, &v, nil)
}

// End produces the done record of the attempt, with finishReason (the
// only or first choice's, "" when it did not finish) and, when the attempt
// failed, cause's text. Unlike Delta it waits for buffer space (ctx bounds
// the wait). done is called once, after every record of the stream was
// acknowledged or failed, with the number that failed and the first error;
// it runs in a franz-go promise and must not block. done may be nil. Calls
// after the first End do nothing.
func (s *DeltaStream) End(ctx context.Context, finishReason string, cause error, done func(failed int, err error)) {
	v := s.value
	v.Done, v.FinishReason = true, finishReason
	if cause != nil {
		v.Error = cause.Error()
	}
	s.produce(ctx, &v, done)
}

// produce numbers v and produces it; v is the done record when it is.
// order is held throughout, so that the Seq order is the produce order,
// but mu (which promises take) is not held while producing: a produce
// may wait for the promise worker.
func (s *DeltaStream) produce(ctx context.Context, v *DeltaRecord, done func(int, error)) {
	s.order.Lock()
	defer s.order.Unlock()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	if v.Done {
		s.ended, s.done = true, done
	}
	v.Seq = s.seq
	s.seq++
	value, err := marshalDelta(v)
	if err != nil {
		s.failLocked(fmt.Errorf("producer: encode delta %d of %q: %w", v.Seq, v.CustomID, err))
		fire := s.fireLocked()
		s.mu.Unlock()
		fire()
		return
	}
	s.pending++
	s.mu.Unlock()

	seq := v.Seq
	ack := func(_ *kgo.Record, err error) { s.ack(seq, err) }
	rec := &kgo.Record{
		Topic:   s.p.topic,
		Key:     s.key,
		Value:   value,
		Headers: append([]kgo.RecordHeader(nil), s.headers...),
	}
	if v.Done {
		s.p.cl.Produce(ctx, rec, ack)
	} else {
		// Never cancelled once buffered: franz-go fails a whole batch,
		// other records' deltas too, when its first record's context ends.
		s.p.cl.TryProduce(context.WithoutCancel(ctx), rec, ack)
	}
}

// ack records the outcome of record seq.
func (s *DeltaStream) ack(seq int, err error) {
	s.mu.Lock()
	s.pending--
	if err != nil {
		s.failLocked(fmt.Errorf("producer: delta %d of %q: %w", seq, s.value.CustomID, err))
	}
	fire := s.fireLocked()
	s.mu.Unlock()
	fire()
}

func (s *DeltaStream) failLocked(err error) {
	s.failed++
	s.p.failed.Add(1)
	if s.firstErr == nil {
		s.firstErr = err
	}
}

// fireLocked returns the call of done when the stream is over, else a
// no-op; the caller makes it after unlocking.
func (s *DeltaStream) fireLocked() func() {
	if !s.ended || s.pending > 0 || s.done == nil {
		return func() {}
	}
	done, failed, err := s.done, s.failed, s.firstErr
	s.done = nil
	return func() { done(failed, err) }
}

// marshalDelta encodes v without escaping <, > and &, as results are.
func marshalDelta(v *DeltaRecord) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
