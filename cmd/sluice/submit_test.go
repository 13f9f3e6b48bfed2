package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/record"
)

func (s *testStack) brokers() string { return strings.Join(s.cluster.ListenAddrs(), ",") }

// runCLI runs a submit or collect in-process and returns its stdout and stderr.
func runCLI(t testing.TB, cmd func(context.Context, []string, stdio) error, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	var out, errOut bytes.Buffer
	err := cmd(ctx, args, stdio{in: strings.NewReader(stdin), out: &out, errOut: &errOut})
	return out.String(), errOut.String(), err
}

func writeLines(t testing.TB, lines []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func readJSONL(t testing.TB, path string) []record.Result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record.Result
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r record.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %q: %v", path, sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// produced counts the records of topic a read_committed consumer sees
// (records of aborted transactions and transaction markers are not).
func (s *testStack) produced(t testing.TB, topic string) int64 {
	return int64(len(s.committedRecords(t, topic)))
}

// committedRecords reads topic up to its last stable offsets with a
// read_committed consumer.
func (s *testStack) committedRecords(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	offs, err := kadm.NewClient(s.client(t)).ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	remaining := map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	cl := s.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	var out []*kgo.Record
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: partitions %v not read to their end", topic, remaining)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset+1 >= remaining[r.Partition] {
				delete(remaining, r.Partition)
			}
		})
	}
	return out
}

// TestSubmitCollectRoundTrip submits 1,000 lines (10 invalid, 4 answered
// with 400), lets a consumer finish them all, and only then collects: every
// valid custom_id has exactly one line, failures in the errors file.
func TestSubmitCollectRoundTrip(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 4)
	state := t.TempDir()
	var lines []string
	valid := map[string]bool{}
	failing := map[string]bool{}
	invalid := []string{
		`not json`, `{"custom_id":"x-%d","messages":[]}`, `{"custom_id":"x-%d","prompt":""}`,
		`{"custom_id":"x-%d","method":"POST","url":"/v1/images/generations","body":{"prompt":"x"}}`, `{"custom_id":"c-0","prompt":"dup"}`,
	}
	for i := range 1000 {
		id := fmt.Sprintf("c-%d", i)
		switch {
		case i%100 == 50:
			lines = append(lines, strings.ReplaceAll(invalid[(i/100)%len(invalid)], "%d", fmt.Sprint(i)))
		case i == 999:
			lines = append(lines, `{"prompt":"no id"}`) // gets rt-1000
			valid["rt-1000"] = true
		case i%250 == 7:
			lines = append(lines, fmt.Sprintf(`{"custom_id":%q,"prompt":"status-400"}`, id))
			valid[id], failing[id] = true, true
		case i%3 == 0:
			lines = append(lines, fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":"grok-4","messages":[{"role":"user","content":"p-%d"}]}}`, id, i))
			valid[id] = true
		default:
			lines = append(lines, fmt.Sprintf(`{"custom_id":%q,"prompt":"p-%d"}`, id, i))
			valid[id] = true
		}
	}
	in := writeLines(t, lines)
	out, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "rt", in)
	if ec, ok := errors.AsType[exitCode](err); !ok || ec != 2 {
		t.Fatalf("submit = %v, want exit status 2 (some lines rejected)\n%s", err, stderr)
	}
	if out != "rt\nsubmitted 990, rejected 10\n" {
		t.Fatalf("submit stdout = %q", out)
	}
	for _, want := range []string{"line 51: invalid input: value is not valid JSON", "line 151: invalid input: messages", "line 451: duplicate custom_id \"c-0\" (first on line 1)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("submit stderr lacks %q:\n%s", want, stderr)
		}
	}

	stop := s.member(t)
	s.collect(t, "completions", len(valid)) // every result is published before collect starts
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	okPath, errPath := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "errors.jsonl")
	_, stderr, err = runCLI(t, collect, "", "--brokers", s.brokers(), "--state-dir", state, "--batch", "rt", "--wait",
		"--out", okPath, "--errors", errPath)
	var ec exitCode
	if !errors.As(err, &ec) || ec != 2 {
		t.Fatalf("collect = %v, want exit status 2\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "collected 990 of 990 results: 986 succeeded, 4 failed, 0 missing") {
		t.Errorf("collect stderr = %q", stderr)
	}
	seen := map[string]bool{}
	for _, r := range readJSONL(t, okPath) {
		if seen[r.CustomID] || !valid[r.CustomID] || failing[r.CustomID] {
			t.Errorf("output line for %q: duplicate, unknown or a failure", r.CustomID)
		}
		seen[r.CustomID] = true
		if r.Error != nil || r.Response == nil || r.Response.StatusCode != 200 || !bytes.Contains(r.Response.Body, []byte(`"choices"`)) || r.ID == "" {
			t.Errorf("output line %+v is not a successful OpenAI Batch output line", r)
		}
	}
	for _, r := range readJSONL(t, errPath) {
		if seen[r.CustomID] || !failing[r.CustomID] {
			t.Errorf("error line for %q: duplicate or not a failure", r.CustomID)
		}
		seen[r.CustomID] = true
		if r.Error == nil || r.Error.Code != record.CodeAPIError || r.Response == nil || r.Response.StatusCode != 400 {
			t.Errorf("error line %+v, want api_error with status 400", r)
		}
	}
	if len(seen) != len(valid) {
		t.Errorf("collected %d ids, want %d", len(seen), len(valid))
	}

	// --ids: no recorded start, the topic is read from the beginning;
	// without --wait it stops at the current end.
	idsPath := writeLines(t, []string{"c-1", "c-7", "rt-1000", "c-1"})
	out, stderr, err = runCLI(t, collect, "", "--brokers", s.brokers(), "--ids", idsPath)
	if !errors.As(err, &ec) || ec != 2 || strings.Count(out, "\n") != 3 {
		t.Fatalf("collect --ids = %v, %d lines\n%s", err, strings.Count(out, "\n"), stderr)
	}
}

// TestCollectWaits starts collect before any result exists; it returns
// once the consumer has answered every id.
func TestCollectWaits(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 2)
	state := t.TempDir()
	var lines []string
	for i := range 50 {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"w-%d","prompt":"p-%d"}`, i, i))
	}
	out, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, writeLines(t, lines))
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, stderr)
	}
	id := strings.SplitN(out, "\n", 2)[0]

	// Nothing is published yet: without --wait, or with a short
	// --timeout, collect says how many are missing.
	_, _, err = runCLI(t, collect, "", "--brokers", s.brokers(), "--state-dir", state, "--batch", id)
	if err == nil || !strings.Contains(err.Error(), "50 of 50 ids have no result") {
		t.Fatalf("collect without results = %v", err)
	}
	_, _, err = runCLI(t, collect, "", "--brokers", s.brokers(), "--state-dir", state, "--batch", id, "--wait", "--timeout", "3s") // past the connection check, even on a loaded machine
	if err == nil || !strings.Contains(err.Error(), "50 of 50 ids have no result: still missing") {
		t.Fatalf("collect --timeout = %v", err)
	}

	type ret struct {
		out, errOut string
		err         error
	}
	done := make(chan ret, 1)
	go func() {
		o, e, err := runCLI(t, collect, "", "--brokers", s.brokers(), "--state-dir", state, "--batch", id, "--wait", "--timeout", "50s")
		done <- ret{o, e, err}
	}()
	s.member(t)
	r := <-done
	if r.err != nil || strings.Count(r.out, "\n") != 50 {
		t.Fatalf("collect --wait = %v, %d lines\n%s", r.err, strings.Count(r.out, "\n"), r.errOut)
	}
}

func TestSubmitRejects(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 2)
	state := t.TempDir()
	lines := []string{
		`{"custom_id":"a","prompt":"x"}`,
		`{"custom_id":"b","messages":[{"role":"robot","content":"x"}]}`,
		``,
		`{"custom_id":"a","prompt":"y"}`,
		`{"custom_id":"c","prompt":"z"}`,
	}
	path := writeLines(t, lines)

	_, stderr, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--strict", path)
	if err == nil || !strings.Contains(err.Error(), "2 line(s) rejected; --strict: nothing submitted") {
		t.Fatalf("submit --strict = %v", err)
	}
	if !strings.Contains(stderr, "line 2: invalid input: messages[0].role") || !strings.Contains(stderr, `line 4: duplicate custom_id "a" (first on line 1)`) {
		t.Errorf("stderr = %q", stderr)
	}
	_, _, err = runCLI(t, submit, strings.Join(lines, "\n"), "--brokers", s.brokers(), "--state-dir", state, "--strict", "-")
	if err == nil {
		t.Fatal("submit --strict - accepted bad lines")
	}
	if n := s.produced(t, "prompts"); n != 0 {
		t.Fatalf("--strict produced %d records", n)
	}

	// --strict from stdin: spooled, validated, then produced.
	good := lines[0] + "\n" + lines[4] + "\r\n"
	out, stderr, err := runCLI(t, submit, good, "--brokers", s.brokers(), "--state-dir", state, "--strict", "--batch-id", "s1", "-")
	if err != nil || out != "s1\nsubmitted 2, rejected 0\n" {
		t.Fatalf("submit --strict - = %q, %v\n%s", out, err, stderr)
	}
	// Without --strict the valid lines go, the bad ones are reported.
	out, stderr, err = runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, "--batch-id", "s2", path)
	if ec, ok := errors.AsType[exitCode](err); !ok || ec != 2 || out != "s2\nsubmitted 2, rejected 2\n" || !strings.Contains(stderr, "line 2: ") || !strings.Contains(stderr, "line 4: ") {
		t.Fatalf("submit = %q, %v\n%s", out, err, stderr)
	}
	if n := s.produced(t, "prompts"); n != 4 {
		t.Fatalf("produced %d records, want 4", n)
	}
	if _, _, err := runCLI(t, submit, "", "--brokers", s.brokers(), "--state-dir", state, writeLines(t, []string{"nope"})); err == nil {
		t.Fatal("a file of only bad lines succeeded")
	}
}

func TestSubmitCollectHelp(t *testing.T) {
	t.Parallel()
	for _, cmd := range []func(context.Context, []string, stdio) error{submit, collect} {
		stdout, _, err := runCLI(t, cmd, "", "--help") // asked for: on stdout
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stdout, "SLUICE_BROKERS") || !strings.Contains(stdout, "-brokers") {
			t.Errorf("--help = %v\n%s", err, stdout)
		}
	}
}

func TestCollectFollow(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 2)
	s.produce(t, &kgo.Record{Value: []byte(`{"custom_id":"f-1","prompt":"x"}`)})
	s.member(t)
	s.collect(t, "completions", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr := &lineWaiter{want: 1, reached: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- collect(ctx, []string{"--brokers", s.brokers(), "--follow", "--from-beginning"}, stdio{out: pr, errOut: &bytes.Buffer{}})
	}()
	select {
	case <-pr.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("no result followed")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(pr.String(), `"custom_id":"f-1"`) {
		t.Fatalf("followed %q", pr.String())
	}
}

// lineWaiter closes reached after want lines were written.
type lineWaiter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	want    int
	reached chan struct{}
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before := bytes.Count(w.buf.Bytes(), []byte("\n"))
	w.buf.Write(p)
	if before < w.want && bytes.Count(w.buf.Bytes(), []byte("\n")) >= w.want {
		close(w.reached)
	}
	return len(p), nil
}

func (w *lineWaiter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// BenchmarkSubmit submits a 100,000-line file into kfake and reports the
// rate and the peak heap in use (kfake's copy of the records included).
//
//	go test -run '^$' -bench Submit -benchtime 1x ./cmd/sluice
func BenchmarkSubmit(b *testing.B) {
	const n = 100_000
	path := filepath.Join(b.TempDir(), "big.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range n {
		fmt.Fprintf(w, `{"custom_id":"b-%d","prompt":"Summarise item %d in one sentence.","max_tokens":64}`+"\n", i, i)
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(path)
	b.ReportAllocs()
	for i := range b.N {
		b.StopTimer()
		cluster, err := devkafka.Start(devkafka.Config{Partitions: 8})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		peak := make(chan uint64, 1)
		quit := make(chan struct{})
		go func() { // samples the heap while submit runs
			var m runtime.MemStats
			var hi uint64
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-quit:
					peak <- hi
					return
				case <-t.C:
					runtime.ReadMemStats(&m)
					hi = max(hi, m.HeapInuse)
				}
			}
		}()
		b.StartTimer()
		start := time.Now()
		out, stderr, err := runCLI(b, submit, "", "--brokers", strings.Join(cluster.ListenAddrs(), ","),
			"--state-dir", b.TempDir(), "--batch-id", fmt.Sprintf("bench-%d", i), path)
		elapsed := time.Since(start)
		b.StopTimer()
		close(quit)
		hi := <-peak
		cluster.Close()
		if err != nil || !strings.Contains(out, fmt.Sprintf("submitted %d, rejected 0", n)) {
			b.Fatalf("submit = %q, %v\n%s", out, err, stderr)
		}
		rate := n / elapsed.Seconds()
		b.ReportMetric(rate, "records/s")
		b.ReportMetric(float64(hi)/(1<<20), "peak-heap-MiB")
		fmt.Printf("submit: %d lines (%.1f MiB) in %s = %.0f records/s; peak HeapInuse %.1f MiB (%.1f MiB before, kfake's copy included)\n",
			n, float64(st.Size())/(1<<20), elapsed.Round(time.Millisecond), rate, float64(hi)/(1<<20), float64(base.HeapInuse)/(1<<20))
		b.StartTimer()
	}
}
