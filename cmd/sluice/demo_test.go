package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/examples"
	"github.com/sluice-dev/sluice/record"
)

// TestDemo runs the README's first command in-process: every bundled
// prompt gets exactly one result, the invalid ones with an error code.
func TestDemo(t *testing.T) {
	out := filepath.Join(t.TempDir(), "results.jsonl")
	var progress, summary bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := demo(ctx, demoOptions{prompts: examples.Prompts, out: out, partitions: 4, inFlight: 32, progress: &progress, summary: &summary})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, progress.String())
	}
	want := bytes.Count(bytes.TrimSpace(examples.Prompts), []byte("\n")) + 1
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[string]bool{}
	failed := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r record.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		if ids[r.CustomID] {
			t.Errorf("duplicate %s", r.CustomID)
		}
		ids[r.CustomID] = true
		if r.Error != nil {
			failed[r.CustomID] = r.Error.Code
		}
	}
	if len(ids) != want {
		t.Fatalf("%d results, want %d", len(ids), want)
	}
	// The line that is not JSON has no readable custom_id: its result is
	// named after its position, prompts-<partition>-<offset>.
	var unreadable string
	for id := range ids {
		if strings.HasPrefix(id, "prompts-") {
			unreadable = id
		}
	}
	wantFailed := map[string]string{unreadable: record.CodeInvalidInput, "demo-no-messages": record.CodeInvalidInput, "demo-images": record.CodeUnsupportedURL}
	for id, code := range wantFailed {
		if failed[id] != code {
			t.Errorf("%s: code %q, want %q", id, failed[id], code)
		}
	}
	if len(failed) != len(wantFailed) {
		t.Errorf("failed = %v, want only %v", failed, wantFailed)
	}
	for _, s := range []string{"ok ", "failed ", "dead-lettered ", "retries ", "p50 ", "p99 ", "tokens "} {
		if !strings.Contains(summary.String(), s) {
			t.Errorf("summary lacks %q:\n%s", s, summary.String())
		}
	}
}

// TestDemoShare runs `sluice demo --share --replicas 4`: four share-group
// members on a 1-partition topic, every one of them publishing results.
func TestDemoShare(t *testing.T) {
	t.Parallel() // its own embedded Kafka and API, no ports of its own
	out := filepath.Join(t.TempDir(), "results.jsonl")
	var progress, summary bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := demo(ctx, demoOptions{prompts: examples.Prompts, out: out, partitions: 1, inFlight: 8, share: true, replicas: 4, progress: &progress, summary: &summary})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, progress.String())
	}
	var line string
	for l := range strings.Lines(summary.String()) {
		if strings.Contains(l, "per member") {
			line = l
		}
	}
	per := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "per member"))
	if len(per) != 4 || slices.Contains(per, "0") {
		t.Errorf("results per member %q, want four members all with results:\n%s", per, summary.String())
	}
	if !strings.Contains(progress.String(), "4 members of a share group") {
		t.Errorf("progress does not name the share group:\n%s", progress.String())
	}
}
