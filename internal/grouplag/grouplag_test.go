package grouplag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	testTopic = "prompts"
	testGroup = "sluice"
)

// cluster starts kfake with testTopic in 3 partitions and returns a plain
// client of it.
func cluster(t *testing.T) (*kfake.Cluster, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return c, cl
}

// produce writes n records to each given partition.
func produce(t *testing.T, cl *kgo.Client, n int, partitions ...int32) {
	t.Helper()
	var recs []*kgo.Record
	for _, p := range partitions {
		for range n {
			recs = append(recs, &kgo.Record{Topic: testTopic, Partition: p, Value: []byte("x")})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func commit(t *testing.T, cl *kgo.Client, offsets map[int32]int64) {
	t.Helper()
	os := make(kadm.Offsets)
	for p, at := range offsets {
		os.Add(kadm.Offset{Topic: testTopic, Partition: p, At: at, LeaderEpoch: -1})
	}
	resp, err := kadm.NewClient(cl).CommitOffsets(context.Background(), testGroup, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	t.Parallel()
	_, cl := cluster(t)
	w := New(cl, Config{Group: testGroup, Topic: testTopic})
	ctx := context.Background()
	read := func(want map[int32]int64) {
		t.Helper()
		got, err := w.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("lag = %v, want %v", got, want)
		}
	}

	// No record and no group yet: every partition is there, at 0.
	read(map[int32]int64{0: 0, 1: 0, 2: 0})

	// Nothing committed: the whole partition is lag.
	produce(t, cl, 10, 0)
	produce(t, cl, 4, 1)
	read(map[int32]int64{0: 10, 1: 4, 2: 0})

	// Committed: end minus commit; a partition without a commit keeps
	// counting from its start.
	commit(t, cl, map[int32]int64{0: 7})
	read(map[int32]int64{0: 3, 1: 4, 2: 0})

	// Records deleted below the commit of partition 0 and from the
	// uncommitted partition 1: the group restarts at the log start.
	adm := kadm.NewClient(cl)
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: testTopic, Partition: 0, At: 9})
	del.Add(kadm.Offset{Topic: testTopic, Partition: 1, At: 3})
	resp, err := adm.DeleteRecords(ctx, del)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	read(map[int32]int64{0: 1, 1: 1, 2: 0})

	// Everything committed.
	commit(t, cl, map[int32]int64{0: 10, 1: 4, 2: 0})
	read(map[int32]int64{0: 0, 1: 0, 2: 0})
}

func TestReadUnknownTopic(t *testing.T) {
	t.Parallel()
	_, cl := cluster(t)
	w := New(cl, Config{Group: testGroup, Topic: "no-such-topic"})
	if _, err := w.Read(context.Background()); !errors.Is(err, ErrNoTopic) {
		t.Fatalf("Read of a missing topic: %v, want ErrNoTopic", err)
	}
}

// reads returns a Watcher whose every read of Run is sent on the channel.
func reads(w *Watcher) <-chan error {
	ch := make(chan error, 16)
	w.readDone = func(err error) { ch <- err }
	return ch
}

func next(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no read within 10s")
		return nil
	}
}

// Run reads once at start and then every interval, until ctx is done.
func TestRun(t *testing.T) {
	t.Parallel()
	_, cl := cluster(t)
	produce(t, cl, 5, 2)
	w := New(cl, Config{Group: testGroup, Topic: testTopic, Interval: 50 * time.Millisecond})
	if got := w.Lag(); len(got) != 0 {
		t.Fatalf("Lag before any read = %v, want empty", got)
	}
	done := reads(w)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); w.Run(ctx) }()

	if err := next(t, done); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int32]int64{testTopic: {0: 0, 1: 0, 2: 5}}
	if got := w.Lag(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Lag after the first read = %v, want %v", got, want)
	}
	commit(t, cl, map[int32]int64{2: 2})
	produce(t, cl, 1, 0)
	// A read that started before the commit may still see the old lag.
	want = map[string]map[int32]int64{testTopic: {0: 1, 1: 0, 2: 3}}
	for range 3 {
		if err := next(t, done); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.Lag(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Lag after the commit = %v, want %v", got, want)
	}
	// The snapshot is the caller's to keep.
	w.Lag()[testTopic][0] = 99
	if got := w.Lag()[testTopic][0]; got != 1 {
		t.Fatalf("Lag shares its map: partition 0 = %d after a caller's write", got)
	}

	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ctx was canceled")
	}
}

// syncBuffer is a log sink for a goroutine's logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// A failed read is a warning, the last snapshot stays for staleReads
// intervals, and then Lag reports nothing rather than a frozen value.
func TestRunKeepsThenDropsStaleLag(t *testing.T) {
	t.Parallel()
	c, cl := cluster(t)
	produce(t, cl, 3, 1)
	var logs syncBuffer
	w := New(cl, Config{Group: testGroup, Topic: testTopic, Interval: time.Hour,
		Log: zerolog.New(&logs).Level(zerolog.WarnLevel)})
	var mu sync.Mutex
	now := time.Now()
	w.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.refresh(ctx)
	if got := w.Lag()[testTopic][1]; got != 3 {
		t.Fatalf("lag of partition 1 = %d, want 3", got)
	}

	// The broker refuses every ListOffsets from now on.
	c.ControlKey(int16(kmsg.ListOffsets), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ListOffsetsRequest)
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.PolicyViolation.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	w.refresh(ctx)
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "lag") {
		t.Errorf("a failed read logged %q, want a warning", logs.String())
	}
	advance(staleReads * time.Hour)
	if got := w.Lag()[testTopic][1]; got != 3 {
		t.Fatalf("lag %d after failed reads within %d intervals, want the last value 3", got, staleReads)
	}
	advance(time.Second)
	if got := w.Lag(); len(got) != 0 {
		t.Fatalf("Lag = %v after %d intervals without a read, want empty", got, staleReads)
	}
}
