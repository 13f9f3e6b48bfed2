package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/prompt"
	"github.com/sluice-dev/sluice/internal/result"
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
)

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

// Validate checks value with the consumer's validator (prompt.Parse) and
// returns its custom_id, empty when it has none. The error wraps
// ErrInvalidRequest.
func (c *Client) Validate(value []byte) (customID string, err error) {
	model := c.cfg.DefaultModel
	if model == "" {
		// Any non-empty default: a missing model is then accepted, as
		// prompt.Validate does, and supplied by the consumer.
		model = "consumer-default"
	}
	req, err := prompt.Parse(value, prompt.Options{DefaultModel: model, MaxValueBytes: c.cfg.MaxValueBytes})
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
	rec := c.record(value, id, func() string { return "req-" + randomHex(8) })
	if err := c.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return "", fmt.Errorf("producer: submit: %w", err)
	}
	return string(rec.Key), nil
}

// SubmitBatch validates every value first and produces nothing if any is
// invalid or a custom_id repeats (the error joins one error per bad value,
// "request N: ...", N counting from 0). Otherwise it submits them all as
// one Batch and waits for every acknowledgement.
func (c *Client) SubmitBatch(ctx context.Context, values [][]byte) (*Batch, error) {
	var errs []error
	seen := make(map[string]int, len(values))
	for i, v := range values {
		id, err := c.Validate(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("request %d: %w", i, err))
			continue
		}
		if id == "" {
			continue
		}
		if first, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("request %d: %w %q (first in request %d)", i, ErrDuplicateID, id, first))
			continue
		}
		seen[id] = i
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	w, err := c.Begin(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, v := range values {
		if _, err := w.Add(ctx, v); err != nil {
			_, _ = w.Close(ctx)
			return nil, err
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

// record builds the input record of value: key custom_id, and the
// custom_id header when the id is generated.
func (c *Client) record(value []byte, id string, gen func() string) *kgo.Record {
	rec := &kgo.Record{Topic: c.cfg.InputTopic, Value: value}
	if id == "" {
		id = gen()
		rec.Headers = []kgo.RecordHeader{{Key: result.HeaderCustomID, Value: []byte(id)}}
	}
	rec.Key = []byte(id)
	return rec
}

// Writer submits one batch record by record, asynchronously, with the
// kgo client's buffer (kgo.MaxBufferedRecords) bounding memory. Create it
// with Client.Begin; Add from one goroutine; finish with Close.
type Writer struct {
	c     *Client
	batch Batch
	seen  map[string]int // custom_id -> line
	seq   int

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

// Begin starts a batch with id (NewBatchID when empty). It checks that
// both topics exist and records the output topic's end offsets as the
// batch's ResultStart, before anything is produced, so that no result of
// the batch can be published before that position.
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
	return &Writer{
		c: c,
		batch: Batch{
			ID:          id,
			InputTopic:  c.cfg.InputTopic,
			OutputTopic: c.cfg.OutputTopic,
			SubmittedAt: time.Now().UTC(),
			ResultStart: offs[c.cfg.OutputTopic],
		},
		seen: make(map[string]int),
	}, nil
}

// ID returns the batch id.
func (w *Writer) ID() string { return w.batch.ID }

// Add validates value and produces it without waiting for the
// acknowledgement; it blocks only while the client's buffer is full (ctx
// bounds that wait). An invalid value wraps ErrInvalidRequest and a
// custom_id already in the batch wraps ErrDuplicateID; neither is
// produced, and the batch goes on. A value without custom_id gets
// "<batch id>-<n>", n counting Add calls from 1, in the custom_id header.
// After a produce failed, Add returns that error.
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
	id, err := w.c.Validate(value)
	if err != nil {
		return "", err
	}
	rec := w.c.record(value, id, func() string { return w.batch.ID + "-" + strconv.Itoa(n) })
	id = string(rec.Key)
	if first, dup := w.seen[id]; dup {
		return "", fmt.Errorf("%w %q (first on line %d)", ErrDuplicateID, id, first)
	}
	w.seen[id] = n
	w.batch.CustomIDs = append(w.batch.CustomIDs, id)
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
	return id, nil
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

// Progress returns how many records were added and how many of them the
// brokers acknowledged so far.
func (w *Writer) Progress() (added, acked int64) { return w.added.Load(), w.acked.Load() }

// Close flushes the client and waits for every acknowledgement. It
// returns the Batch (also on error: then some of its ids may not have been
// written) and the first produce error.
func (w *Writer) Close(ctx context.Context) (*Batch, error) {
	flushErr := w.c.cl.Flush(ctx)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// The promises still run (with ctx's error) once kgo gives the
		// records up; done is then closed and the goroutine ends.
		return w.result(), fmt.Errorf("producer: waiting for acknowledgements: %w", context.Cause(ctx))
	}
	b := w.result()
	if err := w.Err(); err != nil {
		return b, err
	}
	if flushErr != nil {
		return b, fmt.Errorf("producer: flush: %w", flushErr)
	}
	return b, nil
}

func (w *Writer) result() *Batch {
	b := w.batch
	b.Count = len(b.CustomIDs)
	return &b
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails.
	return hex.EncodeToString(b)
}
