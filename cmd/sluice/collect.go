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
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/producer"
)

func runCollect(ctx context.Context, args []string) error { return collect(ctx, args, osStdio()) }

func collect(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("collect", flag.ContinueOnError)
	fs.SetOutput(sio.errOut)
	var kf kafkaFlags
	kf.register(fs)
	batchID := fs.String("batch", "", "id of a batch submitted with sluice submit (its manifest is in the state directory)")
	idsFile := fs.String("ids", "", "file of custom_ids, one a line, instead of --batch; the output topic is read from the beginning")
	outPath := fs.String("out", "-", "output JSONL of successful results (- = stdout)")
	errPath := fs.String("errors", "", "error JSONL of failed results (default: with the successful ones in --out)")
	wait := fs.Bool("wait", false, "wait until every id has a result (default: stop at the topic's current end)")
	timeout := fs.Duration("timeout", 0, "give up after this long (0 = never); missing ids are an error")
	follow := fs.Bool("follow", false, "print every new result value as a JSON line until interrupted")
	fromBeginning := fs.Bool("from-beginning", false, "with --follow: start at the beginning of the output topic")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, `Usage: sluice collect --batch ID | --ids FILE [--out F] [--errors F] [--wait] [--timeout D]
       sluice collect --follow [--from-beginning]

Writes the results of a batch as OpenAI-Batch-style output JSONL: one line,
the result record value as published, per custom_id (the first result of an
id wins). A result is the batch's when its sluice.batch header is the batch
id (or, for prompts produced without that header, by custom_id alone), so
batches that reuse custom_ids each get their own answers; --ids matches on
custom_id alone. Successful results go to --out, failed ones (with
"error":{"code","message"}) to --errors. U+2028, U+2029 and U+0085 are
written escaped (\u2028, ...), so line-splitting readers see one result a
line. A batch whose submit stopped half-way is collected for the ids it
wrote. Exit status 0 when every id succeeded, 2 when some failed, 1 on
error, including ids with no result (the message says how many).

Flags:
`)
		fs.PrintDefaults()
		writeKafkaEnvHelp(w)
	}
	if err := parseFlags(fs, args, sio.out); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	modes := 0
	for _, set := range []bool{*batchID != "", *idsFile != "", *follow} {
		if set {
			modes++
		}
	}
	if modes != 1 {
		return usagef("collect", "give exactly one of --batch, --ids or --follow")
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	var b *producer.Batch
	switch {
	case *batchID != "":
		dir, err := kf.dir()
		if err != nil {
			return err
		}
		if b, err = producer.LoadBatch(dir, *batchID); err != nil {
			return err
		}
		kf.outputTopic = b.OutputTopic
	case *idsFile != "":
		ids, err := readIDs(*idsFile)
		if err != nil {
			return err
		}
		// No batch id: matched on custom_id alone.
		b = &producer.Batch{OutputTopic: kf.outputTopic, CustomIDs: ids, Count: len(ids)}
	}

	if b != nil && b.InputTopic != "" {
		kf.inputTopic = b.InputTopic
	}
	cl, c, err := kf.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	if *follow {
		return followResults(ctx, c, *fromBeginning, sio)
	}
	if !b.Complete() {
		// Its submit stopped half-way: await the ids it wrote.
		written, err := c.Produced(ctx, b)
		if err != nil {
			return fmt.Errorf("collect: batch %s is %s and its written ids cannot be read: %w", b.ID, b.State, err)
		}
		ids := b.CustomIDs[:0:0]
		for _, id := range b.CustomIDs {
			if written[id] {
				ids = append(ids, id)
			}
		}
		why := "its submit failed half-way"
		if b.State == producer.StateProducing {
			why = "its submit is still running, or stopped without a word"
		}
		fmt.Fprintf(sio.errOut, "batch %s is %s (%s): collecting the %d of its %d ids written; resume with: sluice submit --resume %s FILE\n",
			b.ID, b.State, why, len(ids), b.Count, b.ID)
		b.CustomIDs, b.Count = ids, len(ids)
	}

	out, closeOut, err := createOutput(*outPath, sio.out)
	if err != nil {
		return err
	}
	defer closeOut()
	errOut := out
	if *errPath != "" && *errPath != *outPath {
		var closeErrOut func() error
		if errOut, closeErrOut, err = createOutput(*errPath, sio.out); err != nil {
			return err
		}
		defer closeErrOut()
	}

	total := len(uniq(b.CustomIDs))
	var succeeded, failed atomic.Int64
	stop := termProgress(sio.errOut, func(elapsed time.Duration) string {
		n := succeeded.Load() + failed.Load()
		rate := float64(n) / elapsed.Seconds()
		eta := "?"
		if rate > 0 {
			eta = time.Duration(float64(int64(total)-n) / rate * float64(time.Second)).Round(time.Second).String()
		}
		return fmt.Sprintf("collected %d/%d (%d failed, %.0f/s, ETA %s)", n, total, failed.Load(), rate, eta)
	})
	write := func(r producer.Result) error {
		w := out
		if r.Failed() {
			failed.Add(1)
			w = errOut
		} else {
			succeeded.Add(1)
		}
		return writeJSONLine(w, r.Value)
	}
	if *wait {
		err = c.Await(ctx, b, write)
	} else {
		err = c.Collect(ctx, b, write)
	}
	stop()
	if ferr := errors.Join(out.Flush(), errOut.Flush()); ferr != nil && err == nil {
		err = fmt.Errorf("collect: write: %w", ferr)
	}
	ok, bad := succeeded.Load(), failed.Load()
	missing := int64(total) - ok - bad
	fmt.Fprintf(sio.errOut, "collected %d of %d results: %d succeeded, %d failed, %d missing\n", ok+bad, total, ok, bad, missing)
	switch {
	case errors.Is(err, producer.ErrIncomplete):
		why := "not published yet (use --wait)"
		if *wait {
			why = "still missing when collect gave up"
		}
		return fmt.Errorf("collect: %d of %d ids have no result: %s", missing, total, why)
	case err != nil:
		return fmt.Errorf("collect: %w", err)
	case bad > 0:
		return exitCode(2)
	}
	return nil
}

// followResults prints every result value until ctx ends.
func followResults(ctx context.Context, c *producer.Client, fromBeginning bool, sio stdio) error {
	var start map[int32]int64
	if !fromBeginning {
		var err error
		if start, err = c.EndOffsets(ctx); err != nil {
			return fmt.Errorf("collect: %w", err)
		}
	}
	w := bufio.NewWriter(sio.out)
	defer w.Flush()
	for r, err := range c.Results(ctx, start) {
		if err != nil && r.Value == nil {
			return fmt.Errorf("collect: %w", err)
		}
		if err != nil {
			fmt.Fprintf(sio.errOut, "skipping: %v\n", err)
			continue
		}
		if err := writeJSONLine(w, r.Value); err != nil {
			return fmt.Errorf("collect: %w", err)
		}
		// Flush per record: a tail is read by people and pipes as it goes.
		if err := w.Flush(); err != nil {
			return fmt.Errorf("collect: %w", err)
		}
	}
	return nil
}

// lineBreakers are the characters, beside \n, \r and ASCII controls (which
// JSON escapes), that line-splitting readers (Python's str.splitlines,
// JavaScript before ES2019) take for line ends: U+2028, U+2029, U+0085.
// JSON allows them raw in strings, and an API's body may hold them so.
var lineBreakers = strings.NewReplacer("\u2028", `\u2028`, "\u2029", `\u2029`, "\u0085", `\u0085`)

// writeJSONLine writes the JSON value v and a newline, escaping the
// characters of lineBreakers: they can only be inside strings, where the
// escape means the same character, so the value decodes the same.
func writeJSONLine(w *bufio.Writer, v []byte) error {
	if bytes.ContainsAny(v, "\u2028\u2029\u0085") {
		if _, err := lineBreakers.WriteString(w, string(v)); err != nil {
			return err
		}
	} else if _, err := w.Write(v); err != nil {
		return err
	}
	return w.WriteByte('\n')
}

// createOutput opens path for writing ("-" is stdout).
func createOutput(path string, stdout io.Writer) (*bufio.Writer, func() error, error) {
	if path == "-" {
		return bufio.NewWriter(stdout), func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("collect: %w", err)
	}
	return bufio.NewWriterSize(f, 256<<10), f.Close, nil
}

// readIDs reads one custom_id a line, skipping blank lines.
func readIDs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	defer f.Close()
	var ids []string
	lr := newLineReader(f, submitMaxLine)
	for {
		line, n, err := lr.next()
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("collect: %s line %d: %w", path, n, err)
		}
		if id := strings.TrimSpace(string(line)); id != "" {
			ids = append(ids, id)
		}
	}
}

func uniq(ids []string) map[string]struct{} {
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	return m
}
