package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

// TestMain lets a test re-run this binary as `sluice ...` in a child
// process, so signals and kill -9 are exercised on the real main.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"sluice"}, strings.Fields(os.Getenv("SLUICE_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startProcess runs `sluice consume` as a child process against the stack.
// extraEnv adds or overrides variables.
func (s *testStack) startProcess(t testing.TB, extraEnv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"SLUICE_TEST_RUN_MAIN=1",
		"SLUICE_TEST_ARGS=consume",
		"SLUICE_BROKERS="+strings.Join(s.cfg.Brokers, ","),
		"SLUICE_API_BASE_URL="+s.cfg.BaseURL,
		"SLUICE_API_KEY=sk-test-secret",
		"SLUICE_HTTP_ADDR=127.0.0.1:0",
		"SLUICE_COMMIT_INTERVAL=100ms",
		"SLUICE_RETRY_BASE=1ms",
		"SLUICE_RETRY_MAX=10ms",
		"SLUICE_LOG_LEVEL=info",
		// A killed member's partitions move after this; Kafka's minimum.
		"SLUICE_SESSION_TIMEOUT=6s",
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	childLogs.Store(cmd, logs)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // also waits for the logs to be copied
		if strings.Contains(logs.String(), "sk-test-secret") {
			t.Errorf("the API key appears in the logs")
		}
		if strings.Contains(logs.String(), confidentialPrompt) {
			t.Errorf("a prompt appears in the logs")
		}
		// Under -race a child's race report goes to its stderr, and
		// only its exit status (66) tells otherwise; a child killed -9
		// exits with none, so its logs are read.
		if strings.Contains(logs.String(), "WARNING: DATA RACE") {
			t.Errorf("a child process reported a data race")
		}
		if t.Failed() {
			t.Logf("child logs:\n%s", logs.String())
		}
	})
	return cmd
}

// restartable is the environment of a member that a test kills with
// SIGKILL and starts again: static membership (a stable
// SLUICE_INSTANCE_ID) hands the restarted member its partitions at once,
// and the long session timeout keeps a member of a loaded CI machine from
// losing them mid-run to missed heartbeats (which redoes work and spoils
// the counts these tests assert).
var restartable = []string{"SLUICE_INSTANCE_ID=sluice-0", "SLUICE_SESSION_TIMEOUT=2m"}

// syncBuffer collects a child's stderr; exec copies into it from its own
// goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func countByID(t *testing.T, recs []*kgo.Record) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		var res record.Result
		if err := json.Unmarshal(r.Value, &res); err != nil {
			t.Fatal(err)
		}
		seen[res.CustomID]++
	}
	return seen
}

// confidentialPrompt is in the prompts of the process tests; the child's
// logs must never contain it.
const confidentialPrompt = "confidential-question"

// TestProcessSIGTERMThenRestart: SIGTERM drains, commits and exits 0; the
// restarted process redoes nothing.
func TestProcessSIGTERMThenRestart(t *testing.T) {
	s := newTestStack(t, 4)
	const n = 300
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"%s-%d"}`, i, confidentialPrompt, i)})
	}
	s.produce(t, recs[:n/2]...)
	cmd := s.startProcess(t)
	s.collect(t, "completions", n/4)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}
	s.produce(t, recs[n/2:]...)
	cmd2 := s.startProcess(t)
	all := s.collect(t, "completions", n)
	_ = cmd2.Process.Signal(syscall.SIGTERM)
	if err := cmd2.Wait(); err != nil {
		t.Fatalf("second exit: %v", err)
	}
	seen := countByID(t, all)
	for i := range n {
		if c := seen[fmt.Sprintf("c-%d", i)]; c != 1 {
			t.Errorf("c-%d has %d results, want exactly 1", i, c)
		}
	}
}

// TestProcessKill9NoLoss kills the consumer with SIGKILL several times
// mid-run: every record still gets a result; duplicates are allowed.
func TestProcessKill9NoLoss(t *testing.T) {
	s := newTestStack(t, 4)
	const n = 400
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"p-%d"}`, i, i)})
	}
	s.produce(t, recs...)
	for round := 1; round <= 3; round++ {
		cmd := s.startProcess(t, restartable...)
		s.collect(t, "completions", round*n/4)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var ee *exec.ExitError
		if err := cmd.Wait(); !errors.As(err, &ee) {
			t.Fatalf("round %d: wait = %v", round, err)
		}
	}
	cmd := s.startProcess(t, restartable...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := s.client(t, kgo.ConsumeTopics("completions"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]int{}
	for missing := n; missing > 0; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d records still without a result", missing)
		}
		for id, c := range countByID(t, fs.Records()) {
			if seen[id] == 0 {
				missing--
			}
			seen[id] += c
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("%d records, 3 kill -9s, %d duplicate results", n, dups)
}

// childLogs maps a child started by startProcess to its stderr.
var childLogs sync.Map // *exec.Cmd -> *syncBuffer

// waitConsuming waits until the child logged that it consumes: from then
// on SIGTERM reaches its handler instead of killing it.
func waitConsuming(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	logs, _ := childLogs.Load(cmd)
	waitFor(t, 30*time.Second, "the child to consume", func() bool {
		return strings.Contains(logs.(*syncBuffer).String(), `"message":"consuming"`)
	})
}
