package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// shareWatchdog bounds every wait of these tests: a broken member shows up
// as a failure, not a hang.
const shareWatchdog = 60 * time.Second

// shareCluster starts a one-broker kfake with a 1-partition "prompts" topic
// and the given broker configs, and produces n records "r-0".."r-<n-1>".
func shareCluster(t *testing.T, n int, brokerConfigs map[string]string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "prompts"), kfake.BrokerConfigs(brokerConfigs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if n > 0 {
		cl := shareClient(t, c)
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: "prompts", Value: fmt.Appendf(nil, "r-%d", i)}
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func shareClient(t *testing.T, c *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// shareHandler is a test ShareHandler: handle decides each record's fate.
type shareHandler struct {
	handle  func(ctx context.Context, rec *kgo.Record, ack func(error))
	limited func(rec *kgo.Record, deliveries int)
}

func (h shareHandler) Handle(ctx context.Context, rec *kgo.Record, ack func(error)) {
	h.handle(ctx, rec, ack)
}

func (h shareHandler) HandleDeliveryLimit(_ context.Context, rec *kgo.Record, deliveries int, ack func(error)) {
	if h.limited != nil {
		h.limited(rec, deliveries)
	}
	ack(nil)
}

// counter is a ShareObserver.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) ShareRecords(event string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[event] += n
}

func (c *counter) get(event string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[event]
}

// runShare runs a member until the returned stop is called; stop waits for
// its drain and returns Run's error.
func runShare(t *testing.T, c *kfake.Cluster, cfg ShareConfig, h ShareHandler) (stop func() error) {
	t.Helper()
	cfg.Group, cfg.Topic = "sluice", "prompts"
	sc := NewShare(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	admin := shareClient(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx, admin, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitUntil polls cond (the members offer no signal for what the tests
// look at from outside) until it holds, failing after shareWatchdog.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(shareWatchdog)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Four members on one partition, each with room for 8 records: all four are
// busy at once, and every record is handled exactly once.
func TestShareMembersAllBusyOnOnePartition(t *testing.T) {
	t.Parallel()
	const n, members, slots = 200, 4, 8
	c := shareCluster(t, n, nil)
	release := make(chan struct{})
	var mu sync.Mutex
	inFlight := make([]int, members)
	peak := make([]int, members)
	handled := map[string]int{}
	for m := range members {
		h := shareHandler{handle: func(_ context.Context, rec *kgo.Record, ack func(error)) {
			mu.Lock()
			inFlight[m]++
			peak[m] = max(peak[m], inFlight[m])
			handled[string(rec.Value)]++
			mu.Unlock()
			<-release
			mu.Lock()
			inFlight[m]--
			mu.Unlock()
			ack(nil)
		}}
		runShare(t, c, ShareConfig{MaxDispatched: slots, Lanes: 2}, h)
	}
	waitUntil(t, "every member to have its 8 slots busy", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range inFlight {
			if p < slots {
				return false
			}
		}
		return true
	})
	close(release)
	waitUntil(t, "every record handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for v, k := range handled {
		if k != 1 {
			t.Errorf("%s handled %d times, want 1", v, k)
		}
	}
	for m, p := range peak {
		if p > slots {
			t.Errorf("member %d had %d records in flight, more than its %d slots", m, p, slots)
		}
	}
	t.Logf("peak in flight per member: %v", peak)
}

// A call longer than the acquisition lock keeps its record: the lock is
// renewed, and the other member never receives it. Meanwhile the handler
// keeps what it likes in rec.Context, as Handler allows (the pipeline keeps
// the record's result there): the renewals must not read that field (under
// -race this failed when they acknowledged the handler's record).
func TestShareRenewsLockOfLongCall(t *testing.T) {
	t.Parallel()
	c := shareCluster(t, 1, map[string]string{
		"group.share.record.lock.duration.ms": "2000",
		"share.record.lock.sweep.interval.ms": "50",
	})
	var deliveries atomic.Int32
	finished := make(chan struct{})
	type progress struct{}
	h := shareHandler{handle: func(ctx context.Context, rec *kgo.Record, ack func(error)) {
		if deliveries.Add(1) > 1 {
			ack(nil)
			return
		}
		// The call: two lock durations (renewed at least twice),
		// noting its progress in rec.Context as it goes.
		call := time.After(4 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		parent := rec.Context
	call:
		for i := 0; ; i++ {
			select {
			case <-tick.C:
				rec.Context = context.WithValue(parent, progress{}, i)
			case <-call:
				break call
			case <-ctx.Done():
				break call
			}
		}
		ack(nil)
		close(finished)
	}}
	obs := &counter{}
	stopA := runShare(t, c, ShareConfig{MaxDispatched: 4, Lanes: 2, Observer: obs}, h)
	stopB := runShare(t, c, ShareConfig{MaxDispatched: 4, Lanes: 2, Observer: obs}, h)
	select {
	case <-finished:
	case <-time.After(shareWatchdog):
		t.Fatal("the long call never finished")
	}
	if err := stopA(); err != nil {
		t.Error(err)
	}
	if err := stopB(); err != nil {
		t.Error(err)
	}
	if d := deliveries.Load(); d != 1 {
		t.Errorf("the record was delivered %d times, want 1 (its lock was not renewed)", d)
	}
	if obs.get(ShareRenewed) == 0 {
		t.Error("no renewal counted")
	}
}

// On drain, the records not finished within the drain timeout are
// released: another member gets them at once, long before their locks
// would expire (60s).
func TestShareReleasesOnDrain(t *testing.T) {
	t.Parallel()
	const n = 6
	c := shareCluster(t, n, map[string]string{"group.share.record.lock.duration.ms": "60000"})
	var held atomic.Int32
	stuck := shareHandler{handle: func(ctx context.Context, _ *kgo.Record, ack func(error)) {
		held.Add(1)
		<-ctx.Done() // abandoned by the drain
		ack(ctx.Err())
	}}
	// Room for 3 in flight, 6 acquired: half queued, half dispatched.
	stopA := runShare(t, c, ShareConfig{MaxDispatched: 3, Lanes: 2, DrainTimeout: 100 * time.Millisecond}, stuck)
	waitUntil(t, "the first member to hold 3 records", func() bool { return held.Load() == 3 })
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]bool{}
	obs := &counter{}
	runShare(t, c, ShareConfig{MaxDispatched: 8, Observer: obs}, shareHandler{handle: func(_ context.Context, rec *kgo.Record, ack func(error)) {
		mu.Lock()
		got[string(rec.Value)] = true
		mu.Unlock()
		ack(nil)
	}})
	waitUntil(t, "the second member to get every record", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n
	})
	if r := obs.get(ShareRedelivered); r < 3 {
		t.Errorf("the second member got %d records on a later delivery: want the 3 records the first member held released to it", r)
	}
}

// A record that never gets its outputs written is released and delivered
// again; on its MaxDeliveries-th delivery it goes to HandleDeliveryLimit
// and is not handled again.
func TestShareDeliveryLimit(t *testing.T) {
	t.Parallel()
	c := shareCluster(t, 1, nil)
	var handled atomic.Int32
	limited := make(chan int, 1)
	h := shareHandler{
		handle: func(_ context.Context, _ *kgo.Record, ack func(error)) {
			handled.Add(1)
			ack(errors.New("outputs not written"))
		},
		limited: func(_ *kgo.Record, deliveries int) { limited <- deliveries },
	}
	obs := &counter{}
	stop := runShare(t, c, ShareConfig{MaxDispatched: 4, MaxDeliveries: 3, Observer: obs}, h)
	select {
	case d := <-limited:
		if d != 3 {
			t.Errorf("HandleDeliveryLimit at delivery %d, want 3", d)
		}
	case <-time.After(shareWatchdog):
		t.Fatal("the record never reached the delivery limit")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if h := handled.Load(); h != 2 {
		t.Errorf("handled %d times, want 2 (deliveries 1 and 2)", h)
	}
	for event, want := range map[string]int{ShareAcquired: 3, ShareReleased: 2, ShareRedelivered: 2, ShareDeliveryLimit: 1, ShareAccepted: 1} {
		if got := obs.get(event); got != want {
			t.Errorf("%s = %d, want %d", event, got, want)
		}
	}
}

// groupConfig reads one configuration of the share group "sluice" as set
// on the group ("" when it is not).
func groupConfig(t *testing.T, cl *kgo.Client, name string) string {
	t.Helper()
	req := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeGroupConfig, "sluice"
	req.Resources = append(req.Resources, rr)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Resources {
		for _, cfg := range r.Configs {
			if cfg.Name == name && cfg.Source == kmsg.ConfigSourceGroupConfig && cfg.Value != nil {
				return *cfg.Value
			}
		}
	}
	return ""
}

// At start the group's share.auto.offset.reset is set to earliest when it
// has none (the records produced before the member are processed), left
// alone with Reset latest, and never overwritten.
func TestShareOffsetReset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, reset, preset, want string
	}{
		{"earliest", ShareResetEarliest, "", "earliest"},
		{"latest opts out", ShareResetLatest, "", ""},
		{"group value kept", ShareResetEarliest, "latest", "latest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 5
			c := shareCluster(t, n, nil)
			if tc.preset != "" {
				c.SetGroupConfigs("sluice", map[string]string{cfgShareReset: tc.preset})
			}
			var handled atomic.Int32
			stop := runShare(t, c, ShareConfig{Reset: tc.reset}, shareHandler{handle: func(_ context.Context, _ *kgo.Record, ack func(error)) {
				handled.Add(1)
				ack(nil)
			}})
			cl := shareClient(t, c)
			waitUntil(t, "the member to set up its group", func() bool {
				return groupConfig(t, cl, cfgShareIsolation) == "read_committed"
			})
			if got := groupConfig(t, cl, cfgShareReset); got != tc.want {
				t.Errorf("share.auto.offset.reset = %q, want %q", got, tc.want)
			}
			if tc.want == "earliest" {
				waitUntil(t, "the records produced before the member", func() bool { return handled.Load() == n })
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// MaxDeliveries at or above the group's delivery count limit fails at
// start: the broker would archive a record before it is dead-lettered.
func TestShareMaxDeliveriesBelowGroupLimit(t *testing.T) {
	t.Parallel()
	c := shareCluster(t, 0, map[string]string{"group.share.delivery.count.limit": "3"})
	sc := NewShare(ShareConfig{Group: "sluice", Topic: "prompts", MaxDeliveries: 3}, zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithTimeout(context.Background(), shareWatchdog)
	defer cancel()
	ok := shareHandler{handle: func(_ context.Context, _ *kgo.Record, ack func(error)) { ack(nil) }}
	if err := sc.Run(ctx, shareClient(t, c), []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, ok); !errors.Is(err, ErrDeliveryLimit) {
		t.Errorf("Run = %v, want ErrDeliveryLimit", err)
	}
}

// The budget share follows the share group's members: 1 alone, a half once
// a second member with as many lanes joined, 1 again once it left.
func TestShareBudgetFollowsMembers(t *testing.T) {
	t.Parallel()
	c := shareCluster(t, 0, nil)
	shares := make(chan float64, 64)
	ok := shareHandler{handle: func(_ context.Context, _ *kgo.Record, ack func(error)) { ack(nil) }}
	runShare(t, c, ShareConfig{Lanes: 2, ShareRefresh: 20 * time.Millisecond, OnShare: func(s float64) { shares <- s }}, ok)
	await := func(want float64) {
		t.Helper()
		timeout := time.After(shareWatchdog)
		for {
			select {
			case s := <-shares:
				if s == want {
					return
				}
			case <-timeout:
				t.Fatalf("the share never became %v", want)
			}
		}
	}
	await(1)
	stopB := runShare(t, c, ShareConfig{Lanes: 2}, ok)
	await(0.5)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	await(1)
}

// A record whose acquisition lock lapses while it is in work (its renewals
// are lost) is acquired again by another lane of the same member: it is
// not handled a second time, and its outcome is acknowledged on the newer
// acquisition, so the group does not deliver it again.
func TestShareLapsedLockHandledOnce(t *testing.T) {
	t.Parallel()
	c := shareCluster(t, 1, map[string]string{
		"group.share.record.lock.duration.ms": "1000",
		"share.record.lock.sweep.interval.ms": "20",
	})
	// While lost is set, every ShareAcknowledge (the renewals of the
	// lane in work) is answered with an error: the lock lapses.
	var lost atomic.Bool
	lost.Store(true)
	c.ControlKey(int16(kmsg.ShareAcknowledge), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !lost.Load() {
			return nil, nil, false
		}
		resp := kreq.ResponseKind().(*kmsg.ShareAcknowledgeResponse)
		resp.ErrorCode = kerr.UnknownServerError.Code
		return resp, nil, true
	})
	var calls atomic.Int32
	release := make(chan struct{})
	h := shareHandler{handle: func(ctx context.Context, _ *kgo.Record, ack func(error)) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		ack(nil)
	}}
	obs := &counter{}
	stop := runShare(t, c, ShareConfig{MaxDispatched: 4, Lanes: 2, Observer: obs}, h)
	waitUntil(t, "the record acquired again by the other lane", func() bool { return obs.get(ShareRedelivered) >= 1 })
	lost.Store(false)
	close(release)
	waitUntil(t, "both acquisitions acknowledged", func() bool { return obs.get(ShareAccepted) >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the record was handled %d times, want 1", n)
	}
	// Accepted on the acquisition that counts: a record produced after
	// it is the only one a new member of the group gets.
	cl := shareClient(t, c)
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "prompts", Value: []byte("r-1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	sh, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ShareGroup("sluice"), kgo.ConsumeTopics("prompts"))
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	ctx, cancel := context.WithTimeout(context.Background(), shareWatchdog)
	defer cancel()
	var got []string
	for len(got) == 0 && ctx.Err() == nil {
		for _, r := range sh.PollFetches(ctx).Records() {
			got = append(got, string(r.Value))
		}
	}
	if len(got) != 1 || got[0] != "r-1" {
		t.Errorf("a new member got %q, want only r-1", got)
	}
}
