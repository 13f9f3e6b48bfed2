package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/sluice-dev/sluice/internal/kafkaconn"
	"github.com/sluice-dev/sluice/producer"
)

const (
	// submitMaxLine is the longest JSONL line submit accepts.
	submitMaxLine = 16 << 20
	// submitBufferedRecords bounds the records waiting for acknowledgement,
	// and with them submit's memory.
	submitBufferedRecords = 10000
)

// stdio are a command's standard streams, replaced in tests.
type stdio struct {
	in          io.Reader
	out, errOut io.Writer
}

func osStdio() stdio { return stdio{in: os.Stdin, out: os.Stdout, errOut: os.Stderr} }

func runSubmit(ctx context.Context, args []string) error { return submit(ctx, args, osStdio()) }

// kafkaFlags are the connection flags shared by submit and collect.
type kafkaFlags struct {
	brokers, inputTopic, outputTopic, stateDir string
	errOut                                     io.Writer // security warnings
}

func (k *kafkaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.brokers, "brokers", envDefault("SLUICE_BROKERS", "localhost:9092"), "seed brokers, comma-separated (env SLUICE_BROKERS)")
	fs.StringVar(&k.inputTopic, "topic", envDefault("SLUICE_INPUT_TOPIC", producer.DefaultInputTopic), "topic of prompt records (env SLUICE_INPUT_TOPIC)")
	fs.StringVar(&k.outputTopic, "output-topic", envDefault("SLUICE_OUTPUT_TOPIC", producer.DefaultOutputTopic), "topic of result records (env SLUICE_OUTPUT_TOPIC)")
	fs.StringVar(&k.stateDir, "state-dir", "", "directory of batch manifests (env "+producer.StateDirEnv+", default ~/.sluice/batches)")
	k.errOut = fs.Output()
}

// client connects and fails fast, naming the flag or variable, when Kafka
// is unreachable or refuses the TLS or SASL settings (SLUICE_KAFKA_*, from
// the environment as for sluice consume).
func (k *kafkaFlags) client(ctx context.Context, opts ...kgo.Opt) (*kgo.Client, *producer.Client, error) {
	sec, err := cliKafkaSecurity(k.errOut)
	if err != nil {
		return nil, nil, err
	}
	base := append([]kgo.Opt{kgo.SeedBrokers(strings.Split(k.brokers, ",")...), kgo.ClientID("sluice-cli")}, sec...)
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		serr := kafkaconn.SecurityError(cl, err)
		cl.Close()
		if serr != nil {
			return nil, nil, serr
		}
		return nil, nil, fmt.Errorf("--brokers %s: cannot reach Kafka: %w", k.brokers, err)
	}
	return cl, producer.NewClient(cl, producer.ClientConfig{InputTopic: k.inputTopic, OutputTopic: k.outputTopic, Endpoint: os.Getenv("SLUICE_ENDPOINT")}), nil
}

func (k *kafkaFlags) dir() (string, error) {
	if k.stateDir != "" {
		return k.stateDir, nil
	}
	return producer.DefaultStateDir()
}

const kafkaEnvHelp = `Environment (flags win over it):
  SLUICE_BROKERS        seed brokers (default localhost:9092)
  SLUICE_INPUT_TOPIC    topic of prompt records (default prompts)
  SLUICE_OUTPUT_TOPIC   topic of result records (default completions)
  SLUICE_STATE_DIR      directory of batch manifests (default ~/.sluice/batches)
`

// submitTxnTimeout bounds a --strict submit's transaction: the broker
// aborts it if it is still open then (a killed submit holds back
// read_committed consumers of the input topic until it does).
const submitTxnTimeout = 5 * time.Minute

func submit(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	fs.SetOutput(sio.errOut)
	var kf kafkaFlags
	kf.register(fs)
	strict := fs.Bool("strict", false, "all or nothing: refuse the whole file if any line is rejected, and produce it in one Kafka transaction")
	batchID := fs.String("batch-id", "", "batch id (default b-<time>-<random>); letters, digits, '.', '_', '-'")
	resume := fs.String("resume", "", "id of a batch whose submit stopped half-way: produce the lines of FILE it has not written yet")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, `Usage: sluice submit [flags] FILE|-

Checks a JSONL file of prompts (OpenAI Batch input lines, chat bodies, or
{"custom_id","prompt"}) with the consumer's validator, and each line's record
against the input topic's max.message.bytes, before producing anything.
Rejected lines (invalid, too large, duplicate custom_id) are reported as
"line N: reason" on stderr. The batch manifest is saved for "sluice collect
--batch ID" before the first record is produced; every record carries the
batch id in the %s header, kept on its result, so batches may reuse
custom_ids. A UTF-8 byte-order mark before the first line is ignored. Prints
the batch id, then "submitted N, rejected M".

With --strict any rejected line refuses the file, and the file is produced
in one transaction (transactional id sluice-submit-<batch id>; at most %s):
a broker failure half-way leaves nothing written. Without it, a failure
half-way leaves the batch incomplete: "sluice collect --batch ID" collects
what was written, "sluice submit --resume ID FILE" produces the rest.

Exit status:
  0  every line submitted
  2  some lines rejected, the others submitted
  1  nothing submitted (all rejected, or --strict and any rejected), or an
     error (the batch may then be incomplete; the message says)

Flags:
`, producer.HeaderBatch, submitTxnTimeout)
		fs.PrintDefaults()
		writeKafkaEnvHelp(w)
	}
	if err := parseFlags(fs, args, sio.out); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("submit", "want exactly one FILE (or - for stdin), got %d arguments", fs.NArg())
	}
	if *resume != "" && *batchID != "" {
		return errors.New("submit: give --batch-id or --resume, not both")
	}
	dir, err := kf.dir()
	if err != nil {
		return err
	}
	var prior *producer.Batch
	id := *batchID
	switch {
	case *resume != "":
		if prior, err = producer.LoadBatch(dir, *resume); err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		if prior.Complete() {
			return fmt.Errorf("submit: batch %s is complete; nothing to resume", prior.ID)
		}
		id = prior.ID
	case id == "":
		id = producer.NewBatchID()
	default:
		if _, err := os.Stat(producer.ManifestPath(dir, id)); err == nil {
			return fmt.Errorf("submit: batch %s already exists in %s: choose another --batch-id (or --resume %s)", id, dir, id)
		}
	}

	src, err := openInput(fs.Arg(0), sio.in)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()

	// The client batches no more than the input topic takes (set once it
	// is read, before the first produce).
	var batchMax atomic.Int32
	batchMax.Store(producer.DefaultMaxMessageBytes)
	opts := []kgo.Opt{
		kgo.MaxBufferedRecords(submitBufferedRecords),
		kgo.ProducerBatchMaxBytesFn(func(string) int32 { return batchMax.Load() }),
	}
	if *strict {
		opts = append(opts, kgo.TransactionalID("sluice-submit-"+id), kgo.TransactionTimeout(submitTxnTimeout))
	}
	cl, c, err := kf.client(ctx, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	limit, err := c.MaxMessageBytes(ctx)
	if limit == 0 {
		return fmt.Errorf("submit: %w", err)
	}
	if err != nil {
		fmt.Fprintf(sio.errOut, "warning: %v\n", err)
	}
	batchMax.Store(int32(min(max(limit, 512), 1<<30))) // kgo's bounds

	var w *producer.Writer
	if prior != nil {
		w, err = c.Resume(ctx, prior)
	} else {
		w, err = c.Begin(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}

	// Pass 1: check every line, producing nothing.
	rejected, err := checkAll(ctx, src, w, sio.errOut)
	if err != nil {
		return err
	}
	b := w.Batch()
	switch {
	case *strict && len(rejected) > 0:
		return fmt.Errorf("submit: %d line(s) rejected; --strict: nothing submitted", len(rejected))
	case b.Count == 0:
		return fmt.Errorf("submit: nothing submitted (%d rejected)", len(rejected))
	case prior != nil && !slices.Equal(b.CustomIDs, prior.CustomIDs):
		return fmt.Errorf("submit: %s is not the file of batch %s (it has %d ids, the batch %d, or they differ)", fs.Arg(0), id, b.Count, prior.Count)
	}
	var skip map[string]bool
	if prior != nil {
		if skip, err = c.Produced(ctx, prior); err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		fmt.Fprintf(sio.errOut, "resuming batch %s: %d of %d ids were written before\n", id, len(skip), prior.Count)
	} else {
		// Saved before producing: a failure half-way leaves a batch that
		// can be collected and resumed.
		if _, err := b.Save(dir); err != nil {
			return fmt.Errorf("submit: %w", err)
		}
	}

	// Pass 2: produce the lines pass 1 accepted.
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("submit: rewind: %w", err)
	}
	stopProgress := termProgress(sio.errOut, func(elapsed time.Duration) string {
		added, acked := w.Progress()
		return fmt.Sprintf("submitting %s: %d sent, %d acknowledged (%.0f/s)", w.ID(), added, acked, float64(acked)/elapsed.Seconds())
	})
	sendErr := sendAll(ctx, src, w, skip)
	b, closeErr := w.Close(ctx)
	stopProgress()
	if err := errors.Join(sendErr, closeErr); err != nil {
		if errors.Is(closeErr, producer.ErrAborted) {
			if prior == nil {
				if rerr := producer.RemoveBatch(dir, id); rerr != nil {
					fmt.Fprintf(sio.errOut, "warning: %v\n", rerr)
				}
			}
			return fmt.Errorf("submit: nothing submitted: %w", err)
		}
		b.State = producer.StateIncomplete
		if _, serr := b.Save(dir); serr != nil {
			err = errors.Join(err, serr)
		}
		added, acked := w.Progress()
		return fmt.Errorf("submit: %w\nbatch %s is incomplete (%d of %d records acknowledged): collect what was written with `sluice collect --batch %s`, produce the rest with `sluice submit --resume %s FILE`", err, id, acked, added, id, id)
	}
	path, err := b.Save(dir)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	fmt.Fprintln(sio.out, b.ID)
	fmt.Fprintf(sio.out, "submitted %d, rejected %d\n", b.Count, len(rejected))
	fmt.Fprintf(sio.errOut, "batch manifest %s; collect with: sluice collect --batch %s --wait\n", path, b.ID)
	if len(rejected) > 0 {
		return exitCode(2)
	}
	return nil
}

// openInput opens the input for two passes; stdin is spooled to a
// temporary file, removed on Close.
func openInput(name string, stdin io.Reader) (io.ReadSeekCloser, error) {
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		return f, nil
	}
	f, err := os.CreateTemp("", "sluice-submit-*.jsonl")
	if err != nil {
		return nil, fmt.Errorf("submit: spool stdin: %w", err)
	}
	sp := &spool{f}
	if _, err := io.Copy(f, stdin); err != nil {
		_ = sp.Close()
		return nil, fmt.Errorf("submit: spool stdin: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = sp.Close()
		return nil, fmt.Errorf("submit: spool stdin: %w", err)
	}
	return sp, nil
}

// spool is a temporary file removed on Close.
type spool struct{ *os.File }

func (s *spool) Close() error { return errors.Join(s.File.Close(), os.Remove(s.Name())) }

// checkAll checks every line with w.Check, reporting each rejected one as
// "line N: reason", and returns the rejected line numbers in order.
func checkAll(ctx context.Context, r io.Reader, w *producer.Writer, errOut io.Writer) (rejected []int, err error) {
	lr := newLineReader(r, submitMaxLine)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("submit: %w", context.Cause(ctx))
		}
		line, n, err := lr.next()
		if errors.Is(err, io.EOF) {
			return rejected, nil
		}
		if err == nil {
			if isBlank(line) {
				continue
			}
			_, err = w.Check(n, line)
		}
		switch {
		case err == nil:
		case errors.Is(err, errLineTooLong), errors.Is(err, producer.ErrInvalidRequest),
			errors.Is(err, producer.ErrRecordTooLarge), errors.Is(err, producer.ErrDuplicateID):
			rejected = append(rejected, n)
			fmt.Fprintf(errOut, "line %d: %v\n", n, err)
		default:
			return nil, fmt.Errorf("submit: read: %w", err)
		}
	}
}

// sendAll produces the lines checkAll accepted, in order, skipping those
// whose custom_id is in skip (written before).
func sendAll(ctx context.Context, r io.Reader, w *producer.Writer, skip map[string]bool) error {
	lr := newLineReader(r, submitMaxLine)
	for {
		id, want, ok := w.Next()
		if !ok {
			return nil
		}
		line, n, err := lr.next()
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Errorf("read: the input ended before line %d (it changed?)", want)
		case n != want:
			continue // rejected or blank
		case err != nil:
			return fmt.Errorf("read: line %d: %w", n, err)
		case skip[id]:
			w.Skip()
			continue
		}
		if err := w.Send(ctx, n, line); err != nil {
			return err
		}
	}
}

func isBlank(line []byte) bool { return len(strings.TrimSpace(string(line))) == 0 }

var errLineTooLong = fmt.Errorf("longer than %d MiB; skipped", submitMaxLine>>20)

// lineReader reads lines of at most max bytes, each into a fresh slice
// (it is kept by the producer until acknowledged).
type lineReader struct {
	r   *bufio.Reader
	max int
	n   int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its line ending (nor, on line 1, a
// UTF-8 byte-order mark) and its number; an over-long line is consumed and
// reported as errLineTooLong.
func (l *lineReader) next() ([]byte, int, error) {
	var line []byte
	tooLong, any := false, false
	for {
		frag, err := l.r.ReadSlice('\n')
		any = any || len(frag) > 0
		if !tooLong {
			if len(line)+len(frag) > l.max+2 { // +2: the line ending
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && !any {
			return nil, l.n, io.EOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, l.n, err
		}
		break
	}
	l.n++
	if tooLong {
		return nil, l.n, errLineTooLong
	}
	line = trimEOL(line)
	if l.n == 1 {
		// A UTF-8 byte-order mark, as Windows editors write: not part of
		// the first line's JSON.
		line = bytes.TrimPrefix(line, utf8BOM)
	}
	if len(line) > l.max {
		return nil, l.n, errLineTooLong
	}
	return line, l.n, nil
}

var utf8BOM = []byte("\xef\xbb\xbf")

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// termProgress redraws status() on w every 250ms while w is a terminal; the
// returned stop ends it and clears the line.
func termProgress(w io.Writer, status func(elapsed time.Duration) string) (stop func()) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	start := time.Now()
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprint(f, "\r\033[K"+status(time.Since(start)))
			}
		}
	}()
	return func() { close(quit); <-done }
}

func envDefault(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
