package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/record"
)

// newShareStack is a test stack in share-group mode on a 1-partition
// input topic whose records are locked for lock.
func newShareStack(t testing.TB, lock time.Duration) *testStack {
	t.Helper()
	s := newTestStackOn(t, devkafka.Config{Partitions: 1, Opts: []kfake.Opt{kfake.BrokerConfigs(map[string]string{
		"group.share.record.lock.duration.ms": fmt.Sprint(lock.Milliseconds()),
		"share.record.lock.sweep.interval.ms": "50",
	})}})
	s.cfg.GroupProtocol = config.ProtocolShare
	if err := s.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

// shareEnv is the environment of a share-mode child process.
func shareEnv(extra ...string) []string {
	return append([]string{"SLUICE_GROUP_PROTOCOL=share"}, extra...)
}

// A record's result and dead letter must be in Kafka before it is
// accepted: when the dead letter is refused, the record is released, its
// next delivery publishes both, and every record ends with a result.
func TestShareAcceptsOnlyAfterOutputs(t *testing.T) {
	t.Parallel()
	s := newShareStack(t, 30*time.Second)
	s.cfg.HTTPAddr = freeAddr(t)
	const n = 40
	var recs []*kgo.Record
	for i := range n {
		text := fmt.Sprintf("sleep-20 p-%d", i)
		if i == n/2 {
			text = "status-400" // fails: a result and a dead letter
		}
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "%d", i), Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":%q}`, i, text)})
	}
	s.produce(t, recs...)
	hits := faultWith(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "prompts.dlq", Err: kerr.InvalidRecord})(s.cluster)
	stop := s.member(t)
	got := countByID(t, s.collect(t, "completions", n))
	dead := countKeys(s.collect(t, "prompts.dlq", 1))
	var m map[string]float64
	waitFor(t, watchdog, "every record accepted", func() bool {
		m = scrape(t, s.cfg.HTTPAddr)
		return m[`sluice_share_records_total{event="accepted"}`] >= n
	})
	if err := stop(); err != nil {
		t.Fatalf("the member stopped with %v; it must go on", err)
	}
	if hits() != 1 {
		t.Fatalf("%d faults injected, want 1", hits())
	}
	if dead[fmt.Sprint(n/2)] != 1 || len(dead) != 1 {
		t.Errorf("dead letters by key %v, want one for %d", dead, n/2)
	}
	for i := range n {
		if c := got[fmt.Sprintf("c-%d", i)]; c == 0 {
			t.Errorf("c-%d: no result", i)
		}
	}
	for event, least := range map[string]float64{"acquired": n + 1, "released": 1, "redelivered": 1} {
		if v := m[fmt.Sprintf("sluice_share_records_total{event=%q}", event)]; v < least {
			t.Errorf("sluice_share_records_total{event=%q} = %v, want >= %v", event, v, least)
		}
	}
}

// memberAPI counts the calls in flight and the calls started per member:
// each member calls the API under its own path prefix, /m<N>/v1.
type memberAPI struct {
	next    http.Handler
	mu      sync.Mutex
	active  map[string]int
	started map[string]int
	peak    atomic.Int64 // most calls in flight at once, all members
	total   atomic.Int64
}

func (a *memberAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	a.mu.Lock()
	a.active[m]++
	a.started[m]++
	now := a.total.Add(1)
	a.mu.Unlock()
	for {
		p := a.peak.Load()
		if now <= p || a.peak.CompareAndSwap(p, now) {
			break
		}
	}
	defer func() {
		a.mu.Lock()
		a.active[m]--
		a.total.Add(-1)
		a.mu.Unlock()
	}()
	a.next.ServeHTTP(w, r)
}

func (a *memberAPI) inFlight(member string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active[member]
}

func (a *memberAPI) calls(member string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.started[member]
}

// Three share-group members on one partition, 50 calls in flight each,
// all calling the API. One member is killed -9 mid-run and one stopped
// with SIGTERM: nothing is lost, every result is a success, and only the
// records the killed member held unaccepted are called again (the stopped
// member finishes what it acquired within its drain). The peak of calls in flight
// at once is logged: on a loaded 2-core machine the three processes and
// kfake compete for the CPU, so it is a figure, not an assertion.
func TestShareProcessKill9AndSigterm(t *testing.T) {
	// A lock long enough that renewals land in time on a loaded machine;
	// a killed member's records come back when its connections close.
	s := newShareStack(t, 10*time.Second)
	api := &memberAPI{next: s.api, active: map[string]int{}, started: map[string]int{}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	// Enough for a kill mid-run (once a quarter is called, three members
	// holding about 60 records each) and a drain; fewer keeps CI short.
	const n = 600
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"sleep-200 p-%d"}`, i, i)})
	}
	s.produce(t, recs...)
	env := func(m string) []string {
		return shareEnv("SLUICE_MAX_IN_FLIGHT=50", "SLUICE_API_BASE_URL="+srv.URL+"/"+m+"/v1")
	}
	ops := freeAddr(t)
	killed := s.startProcess(t, append(env("m1"), "SLUICE_HTTP_ADDR="+ops)...)
	stopped := s.startProcess(t, env("m2")...)
	s.startProcess(t, env("m3")...)
	waitFor(t, watchdog, "every member calling the API", func() bool {
		return api.inFlight("m1") > 0 && api.inFlight("m2") > 0 && api.inFlight("m3") > 0
	})
	waitFor(t, watchdog, "a quarter of the records called", func() bool { return s.api.calls.Load() >= n/4 })
	var inFlight int
	waitFor(t, watchdog, "the member to kill to have calls in flight", func() bool {
		inFlight = api.inFlight("m1")
		return inFlight > 0
	})
	// What the member holds unaccepted: acquired, called or being
	// published; only these may be delivered, and called, again. The
	// scrape takes a while on a loaded machine, and the member goes on
	// meanwhile: the calls it starts until the kill are counted too.
	callsBefore := api.calls("m1")
	held := 0.0
	for k, v := range scrape(t, ops) {
		if strings.HasPrefix(k, "sluice_partition_uncommitted_records") {
			held += v
		}
	}
	callsAtKill := s.api.calls.Load()
	since := api.calls("m1") - callsBefore
	if err := killed.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := stopped.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = killed.Wait()
	if err := stopped.Wait(); err != nil {
		t.Errorf("the member sent SIGTERM exited with %v", err)
	}
	out := s.collectUnique(t, "completions", n)
	seen := countByID(t, out)
	dups := 0
	for i := range n {
		switch c := seen[fmt.Sprintf("c-%d", i)]; {
		case c == 0:
			t.Errorf("c-%d: no result", i)
		case c > 1:
			dups++
		}
	}
	for _, r := range decodeAll(t, out) {
		if r.Error != nil {
			t.Errorf("%s: error %s", r.CustomID, r.Error.Code)
		}
	}
	repeated := s.api.calls.Load() - n
	t.Logf("%d records; peak %d calls in flight; the killed member had %d calls in flight and %v records unaccepted at %d calls, and started %d calls more until the kill; %d calls repeated, %d records with 2 results",
		n, api.peak.Load(), inFlight, held, callsAtKill, since, repeated, dups)
	if limit := int64((held + float64(since)) * 1.2); repeated > limit {
		t.Errorf("%d calls repeated, want <= %d (1.2 x the killed member's %v unaccepted records and %d calls started after they were read)", repeated, limit, held, since)
	}
}

// decodeAll decodes results, duplicates included.
func decodeAll(t *testing.T, recs []*kgo.Record) []record.Result {
	t.Helper()
	out := make([]record.Result, 0, len(recs))
	for _, r := range recs {
		var res record.Result
		if err := json.Unmarshal(r.Value, &res); err != nil {
			t.Fatalf("result %q: %v", r.Value, err)
		}
		out = append(out, res)
	}
	return out
}

// A record that kills its member every time (a poison pill) ends in the
// dead-letter topic: on its SLUICE_MAX_DELIVERIES-th delivery it is not
// called again but gets a delivery_limit result and a dead letter. Each
// member that calls the pill is killed -9; new members are started until
// the pill has a result. The broker counts deliveries, not calls (a lock
// that lapses in work counts one more), so the test follows the calls
// and the result instead of expecting a fixed number of calls.
func TestSharePoisonPillIsDeadLettered(t *testing.T) {
	t.Parallel() // one member at a time, and no bound on its pace
	s := newShareStack(t, 2*time.Second)
	const maxDeliveries = 3 // SLUICE_MAX_DELIVERIES' default
	s.produce(t, &kgo.Record{Key: []byte("pill"), Value: []byte(`{"custom_id":"pill","prompt":"slow pill"}`)})
	results := s.client(t, kgo.ConsumeTopics("completions"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []*kgo.Record
	killed := 0
	for out == nil {
		if killed >= maxDeliveries {
			t.Fatalf("%d members called the pill and were killed; the pill has no result", killed)
		}
		calls := s.api.calls.Load()
		cmd := s.startProcess(t, shareEnv()...)
		waitFor(t, watchdog, "a call of the pill or its result", func() bool {
			if s.api.calls.Load() > calls {
				return true
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			out = append(out, results.PollFetches(ctx).Records()...)
			return out != nil
		})
		if out != nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Errorf("exit after SIGTERM: %v", err)
			}
			break
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil { // the pill crashes its caller
			t.Fatal(err)
		}
		_ = cmd.Wait()
		killed++
	}
	res := decodeResults(t, out)["pill"]
	dead := s.collect(t, "prompts.dlq", 1)
	if res.Error == nil || res.Error.Code != record.CodeDeliveryLimit {
		t.Errorf("result %+v, want code %s", res, record.CodeDeliveryLimit)
	}
	if h := headerMap(dead[0].Headers); h[record.HeaderErrorCode] != record.CodeDeliveryLimit || string(dead[0].Value) != `{"custom_id":"pill","prompt":"slow pill"}` {
		t.Errorf("dead letter %q with headers %v", dead[0].Value, h)
	}
	// Every member that called the pill died of it, the pill is
	// dead-lettered on its SLUICE_MAX_DELIVERIES-th delivery or later,
	// and that delivery is not called: the calls are at most the
	// deliveries before it.
	c := s.api.calls.Load()
	if c < 1 || c != int64(killed) || int64(res.Attempts) < c || res.Attempts < maxDeliveries-1 {
		t.Errorf("%d calls of the pill, %d members killed, %d deliveries before the dead letter", c, killed, res.Attempts)
	}
}

// collectUnique reads topic from the start until n distinct custom_ids
// have a result; duplicates are returned too.
func (s *testStack) collectUnique(t *testing.T, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := s.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	var out []*kgo.Record
	for len(countByID(t, out)) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: %d of %d records have a result", topic, len(countByID(t, out)), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}
