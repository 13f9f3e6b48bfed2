package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/producer"
	"github.com/sluice-dev/sluice/record"
)

// setMaxMessageBytes sets the prompts topic's max.message.bytes.
func (s *testStack) setMaxMessageBytes(t testing.TB, n int) {
	t.Helper()
	v := fmt.Sprint(n)
	rs, err := kadm.NewClient(s.client(t)).AlterTopicConfigs(context.Background(),
		[]kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &v}}, "prompts")
	if err == nil {
		err = rs[0].Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// failProduceAfter fails, once, the first produce request to prompts whose
// record batch does not start before the producer's record seq (records
// before it were sent in earlier requests), with a non-retriable error as a
// broker refusing a batch would.
func (s *testStack) failProduceAfter(seq int32) *kfake.FaultHandle {
	return s.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "prompts", Err: kerr.InvalidRecord,
		When: func(req kmsg.Request) bool {
			for _, t := range req.(*kmsg.ProduceRequest).Topics {
				for _, p := range t.Partitions {
					var b kmsg.RecordBatch
					if b.ReadFrom(p.Records) == nil && b.FirstSequence >= seq {
						return true
					}
				}
			}
			return false
		}})
}

func wantExit(t testing.TB, what string, err error, code exitCode, stderr string) {
	t.Helper()
	got := exitCode(0)
	if ec, ok := errors.AsType[exitCode](err); ok {
		got = ec
	} else if err != nil {
		got = 1
	}
	if got != code {
		t.Fatalf("%s = %v (exit status %d), want exit status %d\n%s", what, err, got, code, stderr)
	}
}

// answers collects a batch and returns custom_id -> the API's answer text.
func answers(t testing.TB, s *testStack, state, batch string) map[string]string {
	t.Helper()
	out, stderr, err := runCLI(t, collect, "", "--brokers", s.brokers(), "--state-dir", state, "--batch", batch, "--wait", "--timeout", "50s")
	wantExit(t, "collect --batch "+batch, err, 0, stderr)
	got := map[string]string{}
	for line := range strings.Lines(out) {
		var r record.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("collect line %q: %v", line, err)
		}
		var body struct {
			Choices []struct{ Message struct{ Content string } }
		}
		if err := json.Unmarshal(r.Response.Body, &body); err != nil || len(body.Choices) != 1 {
			t.Fatalf("result body %s: %v", r.Response.Body, err)
		}
		if _, dup := got[r.CustomID]; dup {
			t.Errorf("batch %s: %q collected twice", batch, r.CustomID)
		}
		got[r.CustomID] = body.Choices[0].Message.Content
	}
	return got
}

// TestSubmitBatchesReuseIDs submits two batches that use the same
// custom_ids; each collects only its own answers.
func TestSubmitBatchesReuseIDs(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 4)
	state := t.TempDir()
	for _, name := range []string{"A", "B"} {
		var lines []string
		for i := 1; i <= 3; i++ {
			lines = append(lines, fmt.Sprintf(`{"custom_id":"request-%d","prompt":"%s%d"}`, i, name, i))
		}
		out, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "batch-"+name, writeLines(t, lines))
		wantExit(t, "submit "+name, err, 0, stderr)
		if out != "batch-"+name+"\nsubmitted 3, rejected 0\n" {
			t.Fatalf("submit %s = %q", name, out)
		}
	}
	// A batch id is not reused.
	_, _, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "batch-A", writeLines(t, []string{`{"prompt":"x"}`}))
	if err == nil || !strings.Contains(err.Error(), "batch batch-A already exists") {
		t.Fatalf("submit with an existing batch id = %v", err)
	}
	s.member(t)
	for _, name := range []string{"B", "A"} {
		got := answers(t, s, state, "batch-"+name)
		want := map[string]string{"request-1": "echo: " + name + "1", "request-2": "echo: " + name + "2", "request-3": "echo: " + name + "3"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("batch %s collected %v, want %v", name, got, want)
		}
	}
}

// TestSubmitOversizeLine puts a line too large for the topic's
// max.message.bytes in the middle of a file: it is rejected by number,
// --strict produces nothing, and without it the rest is submitted (in
// batches the topic takes) and collectable.
func TestSubmitOversizeLine(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	s := newTestStack(t, 2)
	s.setMaxMessageBytes(t, limit)
	state := t.TempDir()
	var lines []string
	for i := 1; i <= 60; i++ { // 60 x 2 KB: more than one batch's worth
		prompt := fmt.Sprintf("p-%d %s", i, strings.Repeat("x", 2000))
		if i == 30 {
			prompt = strings.Repeat("y", 100<<10) // valid, but 100 KiB
		}
		lines = append(lines, fmt.Sprintf(`{"custom_id":"o-%d","prompt":%q}`, i, prompt))
	}
	path := writeLines(t, lines)

	_, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "ov-strict", "--strict", path)
	wantExit(t, "submit --strict", err, 1, stderr)
	if want := `line 30: record too large: 102540 bytes as a record, more than max.message.bytes 65536 of topic "prompts"`; !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
	if n := s.produced(t, "prompts"); n != 0 {
		t.Fatalf("--strict produced %d records", n)
	}
	if _, err := os.Stat(producer.ManifestPath(state, "ov-strict")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--strict left a manifest: %v", err)
	}

	out, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "ov", path)
	wantExit(t, "submit", err, 2, stderr)
	if out != "ov\nsubmitted 59, rejected 1\n" || !strings.Contains(stderr, "line 30: record too large") {
		t.Fatalf("submit = %q\n%s", out, stderr)
	}
	if n := s.produced(t, "prompts"); n != 59 {
		t.Fatalf("produced %d records, want 59", n)
	}
	s.member(t)
	got := answers(t, s, state, "ov")
	if _, ok := got["o-30"]; len(got) != 59 || ok {
		t.Fatalf("collected %d answers (o-30: %v), want the 59 others", len(got), ok)
	}
}

// TestSubmitBrokerFailsHalfWay fails a produce request in the middle of a
// file. With --strict the transaction is aborted: nothing is readable and
// no batch is left. Without it the batch is saved incomplete, collect
// gets what was written, and --resume produces the rest.
func TestSubmitBrokerFailsHalfWay(t *testing.T) {
	t.Parallel()
	const limit = 8 << 10
	s := newTestStack(t, 1)
	s.setMaxMessageBytes(t, limit)
	state := t.TempDir()
	var lines []string
	for i := 1; i <= 40; i++ { // 1 KB each: several produce requests
		lines = append(lines, fmt.Sprintf(`{"custom_id":"h-%d","prompt":"p-%d %s"}`, i, i, strings.Repeat("z", 1000)))
	}
	path := writeLines(t, lines)

	fault := s.failProduceAfter(10)
	_, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "h-strict", "--strict", path)
	wantExit(t, "submit --strict", err, 1, stderr)
	if fault.Hits() == 0 || !strings.Contains(err.Error(), "nothing submitted") || !errors.Is(err, producer.ErrAborted) {
		t.Fatalf("submit --strict = %v (fault hits %d)", err, fault.Hits())
	}
	if n := s.produced(t, "prompts"); n != 0 {
		t.Fatalf("an aborted --strict submit left %d readable records", n)
	}
	if _, err := os.Stat(producer.ManifestPath(state, "h-strict")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an aborted --strict submit left a manifest: %v", err)
	}

	fault = s.failProduceAfter(10)
	_, stderr, err = runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "h", path)
	wantExit(t, "submit", err, 1, stderr)
	if fault.Hits() == 0 || !strings.Contains(err.Error(), "batch h is incomplete") || !strings.Contains(err.Error(), "sluice submit --resume h FILE") {
		t.Fatalf("submit = %v (fault hits %d)", err, fault.Hits())
	}
	b, err := producer.LoadBatch(state, "h")
	if err != nil || b.State != producer.StateIncomplete || b.Count != 40 {
		t.Fatalf("manifest after the failure: %+v, %v", b, err)
	}
	written := s.produced(t, "prompts")
	if written < 10 || written == 40 {
		t.Fatalf("%d of 40 records written before the failure\n%s", written, stderr)
	}

	s.member(t)
	out, stderr, err := runCLI(t, collect, "", "--brokers", s.brokers(), "--state-dir", state, "--batch", "h", "--wait", "--timeout", "50s")
	wantExit(t, "collect of the incomplete batch", err, 0, stderr)
	if n := strings.Count(out, "\n"); int64(n) != written || !strings.Contains(stderr, fmt.Sprintf("collecting the %d of its 40 ids written", written)) {
		t.Fatalf("collect of the incomplete batch: %d lines, want %d\n%s", n, written, stderr)
	}

	_, stderr, err = runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--resume", "h", path)
	wantExit(t, "submit --resume", err, 0, stderr)
	if n := s.produced(t, "prompts"); n != 40 {
		t.Fatalf("after --resume %d records, want 40 (each once)", n)
	}
	got := answers(t, s, state, "h")
	if len(got) != 40 || got["h-40"] != "echo: p-40 "+strings.Repeat("z", 1000) {
		t.Fatalf("collected %d answers after --resume", len(got))
	}
	if _, _, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--resume", "h", path); err == nil || !strings.Contains(err.Error(), "complete") {
		t.Fatalf("--resume of a complete batch = %v", err)
	}
}

// TestSubmitBOMAndLineSeparators submits a file that starts with a UTF-8
// byte-order mark and a prompt holding U+2028, U+2029 and U+0085, which the
// API echoes raw: collect writes them escaped, so a reader splitting lines
// as Python's str.splitlines does sees one result a line.
func TestSubmitBOMAndLineSeparators(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 2)
	state := t.TempDir()
	in := filepath.Join(t.TempDir(), "bom.jsonl")
	data := "\ufeff" + `{"custom_id":"bom","prompt":"first"}` + "\r\n" +
		`{"custom_id":"seps","prompt":"a\u2028b\u2029c\u0085d"}` + "\n"
	if err := os.WriteFile(in, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "bom", in)
	wantExit(t, "submit", err, 0, stderr)
	if out != "bom\nsubmitted 2, rejected 0\n" {
		t.Fatalf("submit = %q\n%s", out, stderr)
	}
	s.member(t)
	recs := s.collect(t, "completions", 2)
	if raw := bytes.Join(slices.Collect(func(yield func([]byte) bool) {
		for _, r := range recs {
			yield(r.Value)
		}
	}), nil); !bytes.Contains(raw, []byte("\u2028")) {
		t.Fatal("the stub's answer does not hold a raw U+2028; the test would prove nothing")
	}

	outPath := filepath.Join(t.TempDir(), "out.jsonl")
	_, stderr, err = runCLI(t, collect, "", "--brokers", s.brokers(), "--state-dir", state, "--batch", "bom", "--wait", "--out", outPath)
	wantExit(t, "collect", err, 0, stderr)
	written, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	// str.splitlines' line boundaries beyond \n and \r.
	split := strings.FieldsFunc(string(written), func(r rune) bool {
		return strings.ContainsRune("\n\r\v\f\x1c\x1d\x1e\u0085\u2028\u2029", r)
	})
	if len(split) != 2 {
		t.Fatalf("collect output splits into %d lines, want 2:\n%q", len(split), written)
	}
	got := map[string]string{}
	for _, line := range split {
		var r record.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		var body struct {
			Choices []struct{ Message struct{ Content string } }
		}
		if err := json.Unmarshal(r.Response.Body, &body); err != nil || len(body.Choices) != 1 {
			t.Fatalf("body %s: %v", r.Response.Body, err)
		}
		got[r.CustomID] = body.Choices[0].Message.Content
	}
	if got["bom"] != "echo: first" || got["seps"] != "echo: a\u2028b\u2029c\u0085d" {
		t.Fatalf("answers = %q", got)
	}
}

func TestSubmitHelpExitCodes(t *testing.T) {
	t.Parallel()
	stdout, _, err := runCLI(t, submit, "", "--help") // asked-for help goes to stdout
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{"0  every line submitted", "2  some lines rejected", "1  nothing submitted", "max.message.bytes", "sluice.batch", "--resume"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("submit --help lacks %q", want)
		}
	}
}
