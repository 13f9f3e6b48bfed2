package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
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
	return cl, producer.NewClient(cl, producer.ClientConfig{InputTopic: k.inputTopic, OutputTopic: k.outputTopic}), nil
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

func submit(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	fs.SetOutput(sio.errOut)
	var kf kafkaFlags
	kf.register(fs)
	strict := fs.Bool("strict", false, "refuse the whole file, producing nothing, if any line is invalid")
	batchID := fs.String("batch-id", "", "batch id (default b-<time>-<random>); letters, digits, '.', '_', '-'")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, `Usage: sluice submit [flags] FILE|-

Validates a JSONL file of prompts (OpenAI Batch input lines, chat bodies, or
{"custom_id","prompt"}) with the consumer's validator and produces the valid
lines, keyed by custom_id, to the input topic. Invalid lines are reported as
"line N: reason" on stderr. Prints the batch id, then "submitted N, rejected M";
the batch manifest is saved for "sluice collect --batch ID". Exit status 1 on
error, or when nothing was submitted.

Flags:
`)
		fs.PrintDefaults()
		writeKafkaEnvHelp(w)
	}
	if err := parseFlags(fs, args, sio.out); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("submit", "want exactly one FILE (or - for stdin), got %d arguments", fs.NArg())
	}
	dir, err := kf.dir()
	if err != nil {
		return err
	}
	name := fs.Arg(0)
	src, err := openInput(name, sio.in)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()

	cl, c, err := kf.client(ctx, kgo.MaxBufferedRecords(submitBufferedRecords))
	if err != nil {
		return err
	}
	defer cl.Close()

	if *strict {
		// First pass: validate everything, producing nothing. Stdin is
		// spooled to a temporary file for the second pass.
		var spool *os.File
		var in io.Reader = src
		if name == "-" {
			if spool, err = os.CreateTemp("", "sluice-submit-*.jsonl"); err != nil {
				return fmt.Errorf("submit: spool stdin: %w", err)
			}
			defer func() { _ = spool.Close(); _ = os.Remove(spool.Name()) }()
			in = io.TeeReader(src, spool)
		}
		bad, err := validateAll(in, c, sio.errOut)
		if err != nil {
			return err
		}
		if bad > 0 {
			return fmt.Errorf("submit: %d invalid line(s); --strict: nothing submitted", bad)
		}
		if spool != nil {
			if _, err := spool.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("submit: spool: %w", err)
			}
			src = io.NopCloser(spool)
		} else {
			_ = src.Close()
			if src, err = openInput(name, sio.in); err != nil {
				return err
			}
		}
	}

	w, err := c.Begin(ctx, *batchID)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	stopProgress := termProgress(sio.errOut, func(elapsed time.Duration) string {
		added, acked := w.Progress()
		return fmt.Sprintf("submitting %s: %d sent, %d acknowledged (%.0f/s)", w.ID(), added, acked, float64(acked)/elapsed.Seconds())
	})
	rejected, readErr := produceAll(ctx, src, w, sio.errOut)
	b, closeErr := w.Close(ctx)
	stopProgress()
	if err := errors.Join(readErr, closeErr); err != nil {
		return fmt.Errorf("submit: %w (batch %s: %d sent before the failure)", err, w.ID(), b.Count)
	}
	if b.Count == 0 {
		return fmt.Errorf("submit: nothing submitted (%d rejected)", rejected)
	}
	path, err := b.Save(dir)
	if err != nil {
		return err
	}
	fmt.Fprintln(sio.out, b.ID)
	fmt.Fprintf(sio.out, "submitted %d, rejected %d\n", b.Count, rejected)
	fmt.Fprintf(sio.errOut, "batch manifest %s; collect with: sluice collect --batch %s --wait\n", path, b.ID)
	return nil
}

func openInput(name string, stdin io.Reader) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(stdin), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	return f, nil
}

// validateAll reports every invalid or duplicate line and counts them.
func validateAll(r io.Reader, c *producer.Client, errOut io.Writer) (bad int, err error) {
	lr := newLineReader(r, submitMaxLine)
	first := map[string]int{}
	for {
		line, n, err := lr.next()
		if errors.Is(err, io.EOF) {
			return bad, nil
		}
		if errors.Is(err, errLineTooLong) {
			bad++
			fmt.Fprintf(errOut, "line %d: %v\n", n, err)
			continue
		}
		if err != nil {
			return bad, fmt.Errorf("submit: read: %w", err)
		}
		if isBlank(line) {
			continue
		}
		id, err := c.Validate(line)
		if err == nil && id != "" {
			if f, dup := first[id]; dup {
				err = fmt.Errorf("%w %q (first on line %d)", producer.ErrDuplicateID, id, f)
			} else {
				first[id] = n
			}
		}
		if err != nil {
			bad++
			fmt.Fprintf(errOut, "line %d: %v\n", n, err)
		}
	}
}

// produceAll adds every line to w, reporting rejected ones.
func produceAll(ctx context.Context, r io.Reader, w *producer.Writer, errOut io.Writer) (rejected int, err error) {
	lr := newLineReader(r, submitMaxLine)
	for {
		line, n, err := lr.next()
		if errors.Is(err, io.EOF) {
			return rejected, nil
		}
		if errors.Is(err, errLineTooLong) {
			rejected++
			fmt.Fprintf(errOut, "line %d: %v\n", n, err)
			continue
		}
		if err != nil {
			return rejected, fmt.Errorf("read: %w", err)
		}
		if isBlank(line) {
			continue
		}
		if _, err := w.AddLine(ctx, n, line); err != nil {
			if errors.Is(err, producer.ErrInvalidRequest) || errors.Is(err, producer.ErrDuplicateID) {
				rejected++
				fmt.Fprintf(errOut, "line %d: %v\n", n, err)
				continue
			}
			return rejected, err
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

// next returns the next line without its line ending and its number; an
// over-long line is consumed and reported as errLineTooLong.
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
	if len(line) > l.max {
		return nil, l.n, errLineTooLong
	}
	return line, l.n, nil
}

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
