package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/mockapi"
	"github.com/sluice-dev/sluice/record"
)

// apiCall is one chat-completions call as the API saw it arrive.
type apiCall struct {
	at        time.Time
	member    string // the path prefix the member's base URL carries
	partition int    // from the prompt, "partition P record I"
}

// callLog serves the simulator under /<member>/v1/... and records the
// arrival of every chat-completions call: with multi-second latencies,
// when calls start is what shows a stall, not when answers come back.
type callLog struct {
	mock *mockapi.Server
	mu   sync.Mutex
	log  []apiCall
}

func newCallLog(t testing.TB, cfg mockapi.Config) (*callLog, *httptest.Server) {
	t.Helper()
	l := &callLog{mock: mockapi.New(cfg)}
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	t.Cleanup(l.mock.Close) // runs first: releases requests still waiting
	return l, srv
}

func (l *callLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	member, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + rest
	if strings.HasSuffix(rest, "/chat/completions") {
		body, _ := io.ReadAll(r.Body)
		r2.Body = io.NopCloser(bytes.NewReader(body))
		var req struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		part := -1
		if json.Unmarshal(body, &req) == nil && len(req.Messages) > 0 {
			var rec int
			if _, err := fmt.Sscanf(req.Messages[len(req.Messages)-1].Content, "partition %d record %d", &part, &rec); err != nil {
				part = -1
			}
		}
		l.mu.Lock()
		l.log = append(l.log, apiCall{at: at, member: member, partition: part})
		l.mu.Unlock()
	}
	l.mock.ServeHTTP(w, r2)
}

// calls returns the calls so far, in arrival order.
func (l *callLog) calls() []apiCall {
	l.mu.Lock()
	out := slices.Clone(l.log)
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b apiCall) int { return a.at.Compare(b.at) })
	return out
}

// firstCall returns the arrival of member's first call.
func (l *callLog) firstCall(member string) (time.Time, bool) {
	for _, c := range l.calls() {
		if c.member == member {
			return c.at, true
		}
	}
	return time.Time{}, false
}

// gap is the longest time without a call, and when it began.
type gap struct {
	d     time.Duration
	after time.Time
}

func longestGap(calls []apiCall) gap {
	var g gap
	for i := 1; i < len(calls); i++ {
		if d := calls[i].at.Sub(calls[i-1].at); d > g.d {
			g = gap{d, calls[i-1].at}
		}
	}
	return g
}

// runMember is testStack.member with the API under /name of srv, so that
// callLog tells the members' calls apart. Its log (at info: one line per
// rebalance step) shows when the test fails or runs with -v.
func (s *testStack) runMember(t testing.TB, srv *httptest.Server, name string, opts ...kgo.Opt) (stop func() error) {
	t.Helper()
	cfg := s.cfg
	cfg.BaseURL = srv.URL + "/" + name + "/v1"
	return runMember(t, cfg, name, opts...)
}

// runMember runs a member with cfg until stop is called; stop waits for
// it to drain and returns its error.
func runMember(t testing.TB, cfg config.Consume, name string, opts ...kgo.Opt) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Str("member", name).Logger()
	go func() { done <- serve(ctx, cfg, log, pipelineOptions{kafkaOpts: opts}) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// resultReader counts the distinct custom_ids on the results topic.
type resultReader struct {
	t    testing.TB
	cl   *kgo.Client
	seen map[string]int
}

func (s *testStack) resultReader(t testing.TB, opts ...kgo.Opt) *resultReader {
	cl := s.client(t, append([]kgo.Opt{kgo.ConsumeTopics(s.cfg.OutputTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	return &resultReader{t: t, cl: cl, seen: map[string]int{}}
}

// readFor reads results for d, or until n distinct custom_ids have one,
// and reports whether they have.
func (r *resultReader) readFor(n int, d time.Duration) bool {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for len(r.seen) < n && ctx.Err() == nil {
		for _, rec := range r.cl.PollFetches(ctx).Records() {
			var res record.Result
			if err := json.Unmarshal(rec.Value, &res); err != nil {
				r.t.Fatalf("result %q: %v", rec.Value, err)
			}
			r.seen[res.CustomID]++
		}
	}
	return len(r.seen) >= n
}

// watchdog is how long a test waits for something that must happen before
// it declares a hang: generous, because a 2-core CI machine under -race,
// shared with other jobs, can be several times slower than a desk. It is
// never a performance bound.
const watchdog = 5 * time.Minute

// waitDistinct reads until n distinct custom_ids have a result.
func (r *resultReader) waitDistinct(n int, within time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for len(r.seen) < n {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			r.t.Fatalf("%d distinct results after %v, want %d", len(r.seen), within, n)
		}
		for _, rec := range fs.Records() {
			var res record.Result
			if err := json.Unmarshal(rec.Value, &res); err != nil {
				r.t.Fatalf("result %q: %v", rec.Value, err)
			}
			r.seen[res.CustomID]++
		}
	}
}

// readAllResults returns the results per custom_id of the whole topic, up
// to its end offsets now.
func (s *testStack) readAllResults(t testing.TB) map[string]int {
	t.Helper()
	ends, err := kadm.NewClient(s.client(t)).ListEndOffsets(context.Background(), s.cfg.OutputTopic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	r := s.resultReader(t)
	var got int64
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	for got < total {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d results", got, total)
		}
		for _, rec := range fs.Records() {
			got++
			var res record.Result
			if err := json.Unmarshal(rec.Value, &res); err != nil {
				t.Fatal(err)
			}
			r.seen[res.CustomID]++
		}
	}
	return r.seen
}

// scaleRun is one run of the scale test.
type scaleRun struct {
	records    int
	partitions int32
	latency    time.Duration // the simulator's mean; answers take latency ± jitter
	jitter     time.Duration
	maxIn      int // SLUICE_MAX_IN_FLIGHT of each member
}

func (sr scaleRun) stack(t *testing.T) (*testStack, *callLog, *httptest.Server) {
	t.Helper()
	s := newTestStack(t, sr.partitions)
	calls, srv := newCallLog(t, scaleMock(sr.latency, sr.jitter))
	s.cfg.Model = "grok-3-mini"
	s.cfg.MaxInFlight = sr.maxIn
	s.cfg.RequestTimeout = 4 * (sr.latency + sr.jitter)
	s.cfg.CommitInterval = 200 * time.Millisecond
	// A member has at most SLUICE_MAX_IN_FLIGHT and a quarter records
	// dispatched, so a revoked partition or a drain finishes within two
	// latencies (≤ 4s): well within these timeouts, and clean handovers
	// abandon nothing.
	s.cfg.RevokeTimeout = 10 * time.Second
	s.cfg.DrainTimeout = 10 * time.Second

	// All of it there at the start: the group is busy from the first
	// call to the last.
	s.produceSpread(t, sr.records, sr.partitions)
	return s, calls, srv
}

// produceSpread writes n prompt records c-0... spread evenly over the
// partitions, as keyed or randomly partitioned input is; the prompt names
// the partition, for callLog.
func (s *testStack) produceSpread(t testing.TB, n int, partitions int32) {
	t.Helper()
	prompts := make([]string, n)
	for i := range prompts {
		prompts[i] = fmt.Sprintf("partition %d record %d", int32(i)%partitions, i)
	}
	s.produceSpreadPrompts(t, prompts, partitions)
}

// produceSpreadPrompts writes record c-i with prompts[i] to partition
// i % partitions.
func (s *testStack) produceSpreadPrompts(t testing.TB, prompts []string, partitions int32, opts ...kgo.Opt) {
	t.Helper()
	recs := make([]*kgo.Record, len(prompts))
	for i, prompt := range prompts {
		recs[i] = &kgo.Record{Topic: s.cfg.InputTopic, Partition: int32(i) % partitions,
			Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":%q}`, i, prompt)}
	}
	producer := s.client(t, append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err := producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// scaleMock is the simulator answering in latency ± jitter, without
// limits or faults.
func scaleMock(latency, jitter time.Duration) mockapi.Config {
	mc := mockapi.DefaultConfig()
	mc.Latency, mc.Jitter, mc.Seed = latency, jitter, 1
	return mc
}

// event is a scaling step of a run.
type event struct {
	name string
	at   time.Time
}

// report logs the figures of a run and returns the longest group-wide gap
// and the number of duplicate results. For each scaling step (from its
// event to the next) it logs, per partition, whether the partition stayed
// with its member and the longest gap between its calls then, or moved,
// and how long it went without a call between its last call on the old
// member and its first on the new one.
func report(t *testing.T, calls []apiCall, events []event, records int, results map[string]int) (gap, int) {
	t.Helper()
	if len(calls) == 0 {
		t.Fatal("no API call")
	}
	first, last := calls[0].at, calls[len(calls)-1].at
	rel := func(at time.Time) string { return fmt.Sprintf("t+%.2fs", at.Sub(first).Seconds()) }
	perMember := map[string]int{}
	for _, c := range calls {
		perMember[c.member]++
	}
	g := longestGap(calls)
	t.Logf("%d API calls for %d records in %s (%.0f calls/s); per member %v", len(calls), records,
		last.Sub(first).Round(time.Millisecond), float64(len(calls))/last.Sub(first).Seconds(), perMember)
	t.Logf("longest gap with no API call in the group: %s, from %s", g.d.Round(time.Millisecond), rel(g.after))

	// The baseline for the kept partitions' gaps below: the longest gap
	// between a partition's calls with nothing moving.
	if len(events) > 0 {
		byPart := map[int][]apiCall{}
		for _, c := range calls {
			if c.at.Before(events[0].at) {
				byPart[c.partition] = append(byPart[c.partition], c)
			}
		}
		var base gap
		for _, cs := range byPart {
			if pg := longestGap(cs); pg.d > base.d {
				base = pg
			}
		}
		t.Logf("before %s: longest gap between the calls of one partition %s", events[0].name, base.d.Round(time.Millisecond))
	}
	for i, ev := range events {
		to := last.Add(time.Nanosecond)
		if i+1 < len(events) {
			to = events[i+1].at
		}
		var in []apiCall
		for _, c := range calls {
			if c.at.After(ev.at) && c.at.Before(to) {
				in = append(in, c)
			}
		}
		var lines []string
		byPart := map[int][]apiCall{}
		prev := map[int]apiCall{} // each partition's last call before the step
		for _, c := range calls {
			if !c.at.After(ev.at) {
				prev[c.partition] = c
			}
		}
		for _, c := range in {
			byPart[c.partition] = append(byPart[c.partition], c)
		}
		for p := range byPart {
			cs := byPart[p]
			if pc, ok := prev[p]; ok {
				cs = append([]apiCall{pc}, cs...)
			}
			handover := ""
			for j := 1; j < len(cs); j++ {
				if cs[j].member != cs[j-1].member {
					handover = fmt.Sprintf("moved %s→%s, no call for %s (from %s)", cs[j-1].member, cs[j].member,
						cs[j].at.Sub(cs[j-1].at).Round(time.Millisecond), rel(cs[j-1].at))
				}
			}
			if handover == "" {
				pg := longestGap(cs)
				handover = fmt.Sprintf("kept by %s, longest gap %s (from %s)", cs[0].member, pg.d.Round(time.Millisecond), rel(pg.after))
			}
			lines = append(lines, fmt.Sprintf("p%d %s", p, handover))
		}
		slices.Sort(lines)
		wg := longestGap(in)
		if to.After(last) {
			to = last
		}
		t.Logf("%s at %s: %d calls until %s, longest group gap %s; %s", ev.name, rel(ev.at), len(in), rel(to),
			wg.d.Round(time.Millisecond), strings.Join(lines, "; "))
	}

	lost, dups := 0, 0
	for i := range records {
		n := results[fmt.Sprintf("c-%d", i)]
		if n == 0 {
			lost++
		}
		dups += max(n-1, 0)
	}
	t.Logf("results: %d lost, %d duplicates; %d API calls beyond one per record", lost, dups, len(calls)-records)
	if lost > 0 {
		t.Errorf("%d records have no result", lost)
	}
	return g, dups
}

// maxCallGap is the acceptance figure of issue #9: scaling the group never
// leaves it without an API call for this long. The tests report the gap
// against it, never fail on it: on a loaded 2-core CI machine under -race
// any timing can stretch. What they fail on is the order of events that
// a stall shows (checkNoStall).
const maxCallGap = 2 * time.Second

// checkCallGap reports the group's longest gap against the acceptance
// figure.
func checkCallGap(t *testing.T, d time.Duration) {
	t.Helper()
	t.Logf("longest group gap %s; acceptance figure < %s: met=%v", d.Round(time.Millisecond), maxCallGap, d < maxCallGap)
}

// checkNoStall fails t when a scaling step stopped the whole group: for
// every step that moved partitions, some partition that did not move must
// have had an API call after the step and before the last moved partition's
// first call on its new owner. Eager rebalancing, or a member that waits
// out a session timeout before the others may go on, stops every partition
// across the handover and fails this; cooperative handovers, where kept
// partitions carry on, pass it however slow the machine is.
func checkNoStall(t *testing.T, calls []apiCall, events []event) {
	t.Helper()
	last := map[int]string{} // partition -> member of its latest call
	i := 0
	for k, ev := range events {
		to := time.Time{}
		if k+1 < len(events) {
			to = events[k+1].at
		}
		for ; i < len(calls) && !calls[i].at.After(ev.at); i++ {
			last[calls[i].partition] = calls[i].member
		}
		moved := map[int]bool{}
		var handoverEnd time.Time
		var kept []apiCall
		for _, c := range calls[i:] {
			if !to.IsZero() && !c.at.Before(to) {
				break
			}
			if m, ok := last[c.partition]; ok && m != c.member && !moved[c.partition] {
				moved[c.partition] = true
				handoverEnd = c.at
			}
			if !moved[c.partition] {
				kept = append(kept, c)
			}
		}
		if len(moved) == 0 {
			continue
		}
		carried := false
		for _, c := range kept {
			if c.at.Before(handoverEnd) && !moved[c.partition] {
				carried = true
				break
			}
		}
		if !carried {
			t.Errorf("%s: no partition that stayed put made an API call while %d partitions moved: the whole group stalled", ev.name, len(moved))
		}
	}
}

// TestScaleOneThreeTwo: a busy member on 8 partitions, two more join, then
// one leaves (a clean SIGTERM-like stop), while 1–2 s calls run. Nothing is
// lost, nothing is published twice (revoked partitions and the leaving
// member commit before they let go), and the partitions that stay put
// carry on while others move (the longest gap is reported against
// maxCallGap).
func TestScaleOneThreeTwo(t *testing.T) {
	t.Parallel()
	sr := scaleRun{records: 3000, partitions: 8, latency: 1500 * time.Millisecond, jitter: 500 * time.Millisecond,
		maxIn: 128}
	s, calls, srv := sr.stack(t)
	results := s.resultReader(t)
	var events []event

	stopA := s.runMember(t, srv, "A")
	results.waitDistinct(sr.records/5, watchdog)
	events = append(events, event{"B and C join", time.Now()})
	stopB := s.runMember(t, srv, "B")
	stopC := s.runMember(t, srv, "C")
	results.waitDistinct(sr.records*3/5, watchdog)
	events = append(events, event{"A leaves", time.Now()})
	if err := stopA(); err != nil {
		t.Fatalf("A: %v", err)
	}
	t.Logf("A drained and left in %s", time.Since(events[1].at).Round(time.Millisecond))
	results.waitDistinct(sr.records, watchdog)
	if err := stopB(); err != nil {
		t.Fatalf("B: %v", err)
	}
	if err := stopC(); err != nil {
		t.Fatalf("C: %v", err)
	}
	g, dups := report(t, calls.calls(), events, sr.records, s.readAllResults(t))
	checkCallGap(t, g.d)
	checkNoStall(t, calls.calls(), events)
	if dups != 0 {
		t.Errorf("%d duplicate results after clean rebalances, want 0", dups)
	}
	for _, m := range []string{"B", "C"} {
		if _, ok := calls.firstCall(m); !ok {
			t.Errorf("member %s made no API call: it got no partition", m)
		}
	}
}

// TestScaleKill9: as TestScaleOneThreeTwo, but the member that goes away
// is a process killed with SIGKILL: it neither finishes its records nor
// leaves the group. Its partitions stall until its session times out
// (6s, the brokers' minimum) while the others go on (checkNoStall; the
// longest gap is reported against maxCallGap), and nothing is lost.
// Records the killed member had published but not committed are published
// again by their next owner: duplicates are expected, and counted.
func TestScaleKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a session timeout")
	}
	t.Parallel()
	// Enough records that A and B still have work of their own all the
	// while K's partitions are frozen: a gap must mean a stall, not an
	// empty backlog.
	sr := scaleRun{records: 4000, partitions: 8, latency: 1500 * time.Millisecond, jitter: 500 * time.Millisecond,
		maxIn: 128}
	s, calls, srv := sr.stack(t)
	results := s.resultReader(t)
	var events []event

	stopA := s.runMember(t, srv, "A")
	results.waitDistinct(sr.records/8, watchdog)
	events = append(events, event{"B and K join", time.Now()})
	stopB := s.runMember(t, srv, "B")
	k := s.startChild(t, srv, "K", "SLUICE_SESSION_TIMEOUT=6s")
	waitFor(t, watchdog, "K's first API call", func() bool {
		_, ok := calls.firstCall("K")
		return ok
	})
	results.waitDistinct(sr.records*3/10, watchdog)
	events = append(events, event{"K killed", time.Now()})
	k.kill9(t)
	results.waitDistinct(sr.records, watchdog)
	for name, stop := range map[string]func() error{"A": stopA, "B": stopB} {
		if err := stop(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	g, dups := report(t, calls.calls(), events, sr.records, s.readAllResults(t))
	checkCallGap(t, g.d)
	checkNoStall(t, calls.calls(), events)
	t.Logf("%d duplicate results after a kill -9 (records K published but had not committed)", dups)
}
