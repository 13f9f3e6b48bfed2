package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

var (
	// ErrInvalidRequest is wrapped by the error of a value that is not a
	// valid prompt record. The message is the validator's, naming the
	// offending field, e.g. "invalid input: messages: required".
	ErrInvalidRequest = errors.New("invalid request")
	// ErrDuplicateID is wrapped when a batch has the same custom_id twice.
	ErrDuplicateID = errors.New("duplicate custom_id")
	// ErrIncomplete is wrapped when results were awaited or collected and
	// some ids of the batch still have none.
	ErrIncomplete = errors.New("results incomplete")
	// ErrAborted is wrapped when a transactional batch failed and its
	// transaction was aborted: none of its records was written.
	ErrAborted = errors.New("transaction aborted, nothing written")
)

// HeaderBatch is the record header that carries the batch id on every
// record a Writer produces; sluice copies input headers onto results, so
// results carry it too.
const HeaderBatch = "sluice.batch"

// Default topics, the same as sluice consume's.
const (
	DefaultInputTopic  = "prompts"
	DefaultOutputTopic = "completions"
)

// ClientConfig configures a Client. The zero value uses the default topics.
type ClientConfig struct {
	// InputTopic is where prompts are produced (default "prompts").
	InputTopic string
	// OutputTopic is where sluice publishes results (default "completions").
	OutputTopic string
	// DefaultModel, when set, is the model the consumers fill in for a
	// value without one (SLUICE_MODEL); it only affects validation, which
	// then is exactly the consumer's. When empty, a missing "model" is
	// accepted and left to the consumer.
	DefaultModel string
	// MaxValueBytes rejects larger values (the consumer's limit); 0 means
	// no limit.
	MaxValueBytes int
	// Endpoint is the consumers' SLUICE_ENDPOINT, the Batch url that bare
	// bodies and simple prompts go to ("" = record.DefaultEndpoint); Batch
	// lines name their own.
	Endpoint string
}

// Client submits prompt records and reads their results. It is safe for
// concurrent use.
type Client struct {
	cl  *kgo.Client
	adm *kadm.Client
	cfg ClientConfig
}

// NewClient returns a Client producing through cl, which stays the
// caller's to close. Keep franz-go's producer defaults, acks=all and
// idempotent writes: with them a retried produce cannot duplicate or
// reorder a prompt. cl must not be a group consumer: reading results opens
// a second, direct (non-group) consumer from cl.Opts().
func NewClient(cl *kgo.Client, cfg ClientConfig) *Client {
	if cfg.InputTopic == "" {
		cfg.InputTopic = DefaultInputTopic
	}
	if cfg.OutputTopic == "" {
		cfg.OutputTopic = DefaultOutputTopic
	}
	return &Client{cl: cl, adm: kadm.NewClient(cl), cfg: cfg}
}

// invalidError keeps the validator's message and wraps both it and
// ErrInvalidRequest.
type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{ErrInvalidRequest, e.err} }

// Validate checks value with the consumer's validator (record.Parse) and
// returns its custom_id, empty when it has none. The error wraps
// ErrInvalidRequest.
func (c *Client) Validate(value []byte) (customID string, err error) {
	model := c.cfg.DefaultModel
	if model == "" {
		// Any non-empty default: a missing model is then accepted, as
		// record.Validate does, and supplied by the consumer.
		model = "consumer-default"
	}
	req, err := record.Parse(value, record.Options{DefaultModel: model, MaxValueBytes: c.cfg.MaxValueBytes, Endpoint: c.cfg.Endpoint})
	if err != nil {
		return "", invalidError{err}
	}
	return req.CustomID, nil
}

// Submit validates value and produces it to the input topic, keyed by its
// custom_id, and waits for the acknowledgement. A value without custom_id
// gets a generated one, sent in the custom_id header (the value is never
// changed). To read the result, take start := c.EndOffsets(ctx) before
// submitting and pass it to Results; or use a Batch.
func (c *Client) Submit(ctx context.Context, value []byte) (customID string, err error) {
	id, err := c.Validate(value)
	if err != nil {
		return "", err
	}
	rec := c.record(value, id, "", func() string { return "req-" + randomHex(8) })
	if err := c.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return "", fmt.Errorf("producer: submit: %w", err)
	}
	return string(rec.Key), nil
}

// SubmitBatch checks every value first (see Writer) and produces nothing
// if any is invalid, too large, or repeats a custom_id (the error joins one
// error per bad value, "request N: ...", N counting from 0). Otherwise it
// submits them all as one Batch and waits for every acknowledgement.
func (c *Client) SubmitBatch(ctx context.Context, values [][]byte) (*Batch, error) {
	w, err := c.Begin(ctx, "")
	if err != nil {
		return nil, err
	}
	var errs []error
	for i, v := range values {
		rec, id, err := w.build(i+1, v)
		if err == nil {
			if first, dup := w.seen[id]; dup {
				err = fmt.Errorf("%w %q (first in request %d)", ErrDuplicateID, id, first-1)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("request %d: %w", i, err))
			continue
		}
		w.plan(i+1, id, v, len(rec.Headers) > 0 && rec.Headers[len(rec.Headers)-1].Key == record.HeaderCustomID)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for i, v := range values {
		if err := w.Send(ctx, i+1, v); err != nil {
			b, _ := w.Close(ctx)
			return b, err
		}
	}
	return w.Close(ctx)
}

// EndOffsets returns the end offset of every partition of the output
// topic: a result published from now on is at or past them.
func (c *Client) EndOffsets(ctx context.Context) (map[int32]int64, error) {
	offs, err := c.endOffsets(ctx, c.cfg.OutputTopic)
	if err != nil {
		return nil, err
	}
	return offs[c.cfg.OutputTopic], nil
}

// endOffsets lists the end offsets of topics, failing on a missing one.
func (c *Client) endOffsets(ctx context.Context, topics ...string) (map[string]map[int32]int64, error) {
	listed, err := c.adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("producer: list end offsets: %w", err)
	}
	out := make(map[string]map[int32]int64, len(topics))
	for _, t := range topics {
		ps := listed[t]
		if len(ps) == 0 {
			return nil, fmt.Errorf("producer: topic %q does not exist", t)
		}
		out[t] = make(map[int32]int64, len(ps))
		for p, o := range ps {
			if o.Err != nil {
				return nil, fmt.Errorf("producer: topic %q partition %d: %w", t, p, o.Err)
			}
			out[t][p] = o.Offset
		}
	}
	return out, nil
}

// record builds the input record of value: key custom_id, the custom_id
// header when the id is generated, and the sluice.batch header when batch
// is set.
func (c *Client) record(value []byte, id, batch string, gen func() string) *kgo.Record {
	rec := &kgo.Record{Topic: c.cfg.InputTopic, Value: value}
	if batch != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderBatch, Value: []byte(batch)})
	}
	if id == "" {
		id = gen()
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: record.HeaderCustomID, Value: []byte(id)})
	}
	rec.Key = []byte(id)
	return rec
}

// Writer submits one batch record by record, asynchronously, with the
// kgo client's buffer (kgo.MaxBufferedRecords) bounding memory. Create it
// with Client.Begin; Add from one goroutine; finish with Close.
//
// Every record carries the batch id in the sluice.batch header
// (HeaderBatch), which sluice copies onto its result: Await and Collect
// match results on (batch, custom_id), so batches may reuse custom_ids.
//
// A value is checked before it is produced: the consumer's validator, its
// custom_id unique in the batch, and its record's size against the input
// topic's max.message.bytes. To know the whole batch before producing any
// of it (to save its manifest first), Check every value, then Send them in
// the same order (Next says which comes next); a Writer is used either so
// or with Add/AddLine alone.
//
// When the kgo client is transactional (kgo.TransactionalID), the batch
// is produced in one transaction, committed by Close: all of it becomes
// visible to read_committed consumers (sluice in exactly-once mode), or,
// after any failure, none of it.
type Writer struct {
	c     *Client
	batch Batch
	limit sizeLimit
	// limitErr says why limit is Kafka's default rather than the topic's.
	limitErr error
	seen     map[string]int // custom_id -> line
	seq      int
	// Check's plan for Send, by position in batch.CustomIDs: a hash of
	// each value (to notice a changed input), whether its id was
	// generated, and the position of the next one to send.
	hashes    []uint64
	generated []bool
	next      int
	seed      maphash.Seed
	added1    bool // AddLine was used: Send cannot be
	txn       bool // the client is transactional
	inTxn     bool // a transaction was begun

	added, acked atomic.Int64
	wg           sync.WaitGroup
	errOnce      sync.Once
	err          atomic.Pointer[error]
}

var batchIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// NewBatchID returns a fresh batch id, "b-<UTC time>-<random>".
func NewBatchID() string {
	return "b-" + time.Now().UTC().Format("20060102-150405") + "-" + randomHex(4)
}

// Begin starts a batch with id (NewBatchID when empty). Before anything is
// produced it checks that both topics exist, reads the input topic's
// max.message.bytes (see MaxMessageBytes), and records the output topic's
// end offsets as the batch's ResultStart, so that no result of the batch
// can be published before that position, and the input topic's as its
// InputStart. It fails when the client batches more bytes than the input
// topic accepts (set kgo.ProducerBatchMaxBytes to its max.message.bytes).
func (c *Client) Begin(ctx context.Context, id string) (*Writer, error) {
	if id == "" {
		id = NewBatchID()
	}
	if !batchIDPattern.MatchString(id) {
		return nil, fmt.Errorf("producer: batch id %q: use 1-128 letters, digits, '.', '_' or '-'", id)
	}
	offs, err := c.endOffsets(ctx, c.cfg.OutputTopic, c.cfg.InputTopic)
	if err != nil {
		return nil, err
	}
	limit, limitErr := c.recordLimit(ctx)
	if limit.bytes == 0 {
		return nil, limitErr
	}
	txnID, _ := c.cl.OptValue(kgo.TransactionalID).(string)
	return &Writer{
		c: c,
		batch: Batch{
			ID:          id,
			State:       StateProducing,
			InputTopic:  c.cfg.InputTopic,
			OutputTopic: c.cfg.OutputTopic,
			SubmittedAt: time.Now().UTC(),
			ResultStart: offs[c.cfg.OutputTopic],
			InputStart:  offs[c.cfg.InputTopic],
		},
		limit:    limit,
		limitErr: limitErr,
		seen:     make(map[string]int),
		seed:     maphash.MakeSeed(),
		txn:      txnID != "",
	}, nil
}

// Resume continues batch b, whose production stopped half-way (see
// Batch.State and Client.Produced): the Writer produces to b's topics
// under b's id, and its results are read from b's ResultStart. The plan
// starts empty: Check the batch's values again (the ids must come out as
// in b), then Send those Produced did not find and Skip the others.
func (c *Client) Resume(ctx context.Context, b *Batch) (*Writer, error) {
	if b.InputTopic != c.cfg.InputTopic || b.OutputTopic != c.cfg.OutputTopic {
		return nil, fmt.Errorf("producer: batch %q went from %q to %q; the client is for %q to %q", b.ID, b.InputTopic, b.OutputTopic, c.cfg.InputTopic, c.cfg.OutputTopic)
	}
	w, err := c.Begin(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	w.batch.SubmittedAt, w.batch.ResultStart, w.batch.InputStart = b.SubmittedAt, b.ResultStart, b.InputStart
	return w, nil
}

// ID returns the batch id.
func (w *Writer) ID() string { return w.batch.ID }

// MaxRecordBytes returns the largest record batch of one record a value
// may make, in bytes: the input topic's max.message.bytes, or the client's
// smaller kgo.ProducerBatchMaxBytes. The error, when not nil, says why
// Kafka's default was assumed instead (DescribeConfigs not authorized).
func (w *Writer) MaxRecordBytes() (int, error) { return w.limit.bytes, w.limitErr }

// Add validates value and produces it without waiting for the
// acknowledgement; it blocks only while the client's buffer is full (ctx
// bounds that wait). An invalid value wraps ErrInvalidRequest, one whose
// record is larger than the topic takes wraps ErrRecordTooLarge, and a
// custom_id already in the batch wraps ErrDuplicateID; none is produced,
// and the batch goes on. A value without custom_id gets "<batch id>-<n>",
// n counting Add calls from 1, in the custom_id header. After a produce
// failed, Add returns that error.
func (w *Writer) Add(ctx context.Context, value []byte) (customID string, err error) {
	w.seq++
	return w.AddLine(ctx, w.seq, value)
}

// AddLine is Add for line n of a file: a value without custom_id gets
// "<batch id>-<n>", and a duplicate's error names the line of the first.
// (Add passes the count of its calls as n.)
func (w *Writer) AddLine(ctx context.Context, n int, value []byte) (customID string, err error) {
	if err := w.Err(); err != nil {
		return "", err
	}
	rec, err := w.check(n, value)
	if err != nil {
		return "", err
	}
	w.added1 = true
	w.produce(ctx, rec)
	return string(rec.Key), nil
}

// Check is AddLine without producing: it checks line n's value and adds
// its custom_id to the batch (see Batch). Send produces it later.
func (w *Writer) Check(n int, value []byte) (customID string, err error) {
	rec, err := w.check(n, value)
	if err != nil {
		return "", err
	}
	return string(rec.Key), nil
}

// Next returns the custom_id and line number of the next value Check
// accepted that was not yet sent or skipped; ok is false when none is
// left. Values must be sent (or skipped) in the order Check accepted them.
func (w *Writer) Next() (customID string, line int, ok bool) {
	if w.next >= len(w.batch.CustomIDs) {
		return "", 0, false
	}
	id := w.batch.CustomIDs[w.next]
	return id, w.seen[id], true
}

// Skip passes over the next value (Next) without producing it: it was
// written before (Client.Produced).
func (w *Writer) Skip() { w.next++ }

// Send produces the next value Check accepted (Next), which must be line
// n's value as it was when checked; it is not validated again. A value
// that changed since, or another line, is an error and is not produced.
func (w *Writer) Send(ctx context.Context, n int, value []byte) error {
	if err := w.Err(); err != nil {
		return err
	}
	id, line, ok := w.Next()
	switch {
	case w.added1:
		return errors.New("producer: Send after AddLine: use Check and Send, or AddLine alone")
	case !ok:
		return fmt.Errorf("producer: line %d: every checked value was sent", n)
	case line != n || maphash.Bytes(w.seed, value) != w.hashes[w.next]:
		return fmt.Errorf("producer: line %d is not line %d as checked (custom_id %q): the input changed", n, line, id)
	}
	own := id
	if w.generated[w.next] {
		own = "" // record adds the custom_id header with id
	}
	w.next++
	w.produce(ctx, w.c.record(value, own, w.batch.ID, func() string { return id }))
	return nil
}

// build validates value and makes its record.
func (w *Writer) build(n int, value []byte) (*kgo.Record, string, error) {
	id, err := w.c.Validate(value)
	if err != nil {
		return nil, "", err
	}
	rec := w.c.record(value, id, w.batch.ID, func() string { return w.batch.ID + "-" + strconv.Itoa(n) })
	if size := batchBytes(rec); size > w.limit.bytes {
		return nil, "", fmt.Errorf("%w: %d bytes as a record, more than %s", ErrRecordTooLarge, size, w.limit.what)
	}
	return rec, string(rec.Key), nil
}

func (w *Writer) check(n int, value []byte) (*kgo.Record, error) {
	rec, id, err := w.build(n, value)
	if err != nil {
		return nil, err
	}
	if first, dup := w.seen[id]; dup {
		return nil, fmt.Errorf("%w %q (first on line %d)", ErrDuplicateID, id, first)
	}
	w.plan(n, id, value, len(rec.Headers) > 0 && rec.Headers[len(rec.Headers)-1].Key == record.HeaderCustomID)
	return rec, nil
}

// plan adds line n's value, of custom_id id, to the batch.
func (w *Writer) plan(n int, id string, value []byte, generated bool) {
	w.seen[id] = n
	w.batch.CustomIDs = append(w.batch.CustomIDs, id)
	w.hashes = append(w.hashes, maphash.Bytes(w.seed, value))
	w.generated = append(w.generated, generated)
}

func (w *Writer) produce(ctx context.Context, rec *kgo.Record) {
	if w.txn && !w.inTxn {
		if err := w.c.cl.BeginTransaction(); err != nil {
			w.fail(fmt.Errorf("producer: begin transaction: %w", err))
			return
		}
		w.inTxn = true
	}
	id := string(rec.Key)
	w.added.Add(1)
	w.wg.Add(1)
	w.c.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		defer w.wg.Done()
		if err != nil {
			w.fail(fmt.Errorf("producer: produce %q: %w", id, err))
			return
		}
		w.acked.Add(1)
	})
}

func (w *Writer) fail(err error) {
	w.errOnce.Do(func() { w.err.Store(&err) })
}

// Err returns the first produce error, if any.
func (w *Writer) Err() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Progress returns how many records were sent and how many of them the
// brokers acknowledged so far.
func (w *Writer) Progress() (added, acked int64) { return w.added.Load(), w.acked.Load() }

// Batch returns the batch as checked so far, State StateProducing: save
// it before producing, so a batch that fails half-way can be collected
// or resumed.
func (w *Writer) Batch() *Batch {
	b := w.batch
	b.CustomIDs = slices.Clip(b.CustomIDs)
	b.Count = len(b.CustomIDs)
	return &b
}

// endTxnTimeout bounds the abort of a transaction after ctx ended.
const endTxnTimeout = 30 * time.Second

// Close flushes the client and waits for every acknowledgement; a
// transactional batch is then committed, or aborted after any failure.
// It returns the Batch, State StateSubmitted, or StateIncomplete with an
// error: the first produce error (some ids may not have been written), or
// one wrapping ErrAborted when the transaction was aborted and nothing
// of the batch was written.
func (w *Writer) Close(ctx context.Context) (*Batch, error) {
	flushErr := w.c.cl.Flush(ctx)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// The promises still run (with ctx's error) once kgo gives the
		// records up; done is then closed and the goroutine ends.
		if w.inTxn {
			return w.abort(ctx, fmt.Errorf("producer: waiting for acknowledgements: %w", context.Cause(ctx)))
		}
		return w.result(StateIncomplete), fmt.Errorf("producer: waiting for acknowledgements: %w", context.Cause(ctx))
	}
	err := w.Err()
	if err == nil && flushErr != nil {
		err = fmt.Errorf("producer: flush: %w", flushErr)
	}
	if w.inTxn {
		if err != nil {
			return w.abort(ctx, err)
		}
		if err := w.c.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			if b, aerr := w.abort(ctx, err); errors.Is(aerr, ErrAborted) {
				return b, aerr
			}
			return w.result(StateIncomplete), fmt.Errorf("producer: commit transaction: %w", err)
		}
	}
	if err != nil {
		return w.result(StateIncomplete), err
	}
	return w.result(StateSubmitted), nil
}

// abort ends the transaction without committing; cause is why. It runs
// off ctx, which may have ended, with its own deadline.
func (w *Writer) abort(ctx context.Context, cause error) (*Batch, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTxnTimeout)
	defer cancel()
	if err := w.c.cl.AbortBufferedRecords(actx); err != nil {
		return w.result(StateIncomplete), fmt.Errorf("producer: abort: %w (after %w)", err, cause)
	}
	if err := w.c.cl.EndTransaction(actx, kgo.TryAbort); err != nil {
		return w.result(StateIncomplete), fmt.Errorf("producer: abort transaction: %w (after %w)", err, cause)
	}
	return w.result(StateIncomplete), fmt.Errorf("%w: %w", ErrAborted, cause)
}

func (w *Writer) result(state string) *Batch {
	b := w.Batch()
	b.State = state
	return b
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails.
	return hex.EncodeToString(b)
}
