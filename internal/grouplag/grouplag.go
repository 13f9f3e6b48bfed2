// Package grouplag reads a consumer group's lag on its input topic, per
// partition, for metrics: what an autoscaler (KEDA's kafka trigger) and the
// dashboards look at.
//
// Every replica of the group runs a Watcher and reports the lag of the
// whole group, not of the partitions it owns: the number does not depend on
// who asks, and it stays visible while a rebalance moves partitions or no
// member is up. Sum such series over replicas and the lag is counted once
// per replica; query max by (topic, partition) instead, then sum.
//
//	w := grouplag.New(cl, grouplag.Config{Group: "sluice", Topic: "prompts", Log: log})
//	metrics.RegisterGroupLag(reg, w.Lag)
//	go w.Run(ctx) // reads at once, then every Interval, until ctx is done
package grouplag

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultInterval is the period of reads when Config.Interval is zero: the
// usual Prometheus scrape and KEDA polling interval.
const DefaultInterval = 15 * time.Second

// staleReads is how many intervals a snapshot outlives failed reads before
// Lag stops reporting it: a lag that cannot be read is absent, not frozen.
const staleReads = 4

// readTimeout bounds one read (three admin requests).
const readTimeout = 10 * time.Second

// ErrNoTopic is returned by Read when the brokers do not know the topic.
var ErrNoTopic = errors.New("grouplag: topic does not exist")

// Config tells a Watcher what to read.
type Config struct {
	Group string
	Topic string
	// Share: Group is a share group (KIP-932). Its lag counts from the
	// share-partition start offset, below which every record is
	// acknowledged.
	Share bool
	// Interval is the period of reads (default DefaultInterval).
	Interval time.Duration
	// Log receives a warning for each failed read.
	Log zerolog.Logger
}

// Watcher keeps the latest per-partition lag of a group on one topic. Its
// methods are safe for concurrent use.
type Watcher struct {
	cfg Config
	adm *kadm.Client
	now func() time.Time

	mu   sync.Mutex
	lag  map[int32]int64 // latest snapshot; nil before the first good read
	read time.Time       // when lag was read

	readDone func(error) // tests: told the outcome of every read of Run
}

// New returns a Watcher that reads through cl (any client: the member's
// own is fine, the reads are admin requests).
func New(cl *kgo.Client, cfg Config) *Watcher {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	return &Watcher{cfg: cfg, adm: kadm.NewClient(cl), now: time.Now}
}

// Run reads the lag at once and then every Interval until ctx is done. A
// failed read is logged at warn and retried at the next tick; the previous
// snapshot is kept, for staleReads intervals at most.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		w.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh does one read and stores it.
func (w *Watcher) refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	lag, err := w.Read(rctx)
	if w.readDone != nil {
		defer w.readDone(err)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.cfg.Log.Warn().Err(err).Str("group", w.cfg.Group).Str("topic", w.cfg.Topic).
				Msg("cannot read the consumer group's lag; keeping the last value")
		}
		return
	}
	w.mu.Lock()
	w.lag, w.read = lag, w.now()
	w.mu.Unlock()
}

// Lag returns the latest snapshot as topic -> partition -> records behind,
// the shape of metrics.RegisterPartitionGauge. It is empty before the first
// successful read, and again once reads have failed for staleReads
// intervals.
func (w *Watcher) Lag() map[string]map[int32]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lag == nil || w.now().Sub(w.read) > staleReads*w.cfg.Interval {
		return nil
	}
	return map[string]map[int32]int64{w.cfg.Topic: maps.Clone(w.lag)}
}

// Read asks the brokers for the group's lag on every partition of the
// topic: the end offset minus the committed offset, or, for a partition
// with no commit yet (or a commit below the log start, where consumption
// would restart), minus the start offset, which is where the group's
// members begin (they consume from the start). A partition whose offsets
// cannot be listed fails the whole read.
func (w *Watcher) Read(ctx context.Context) (map[int32]int64, error) {
	ends, err := w.adm.ListEndOffsets(ctx, w.cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("grouplag: end offsets of %s: %w", w.cfg.Topic, err)
	}
	end := ends[w.cfg.Topic]
	if _, unknown := end[-1]; len(end) == 0 || unknown { // -1: kadm's marker of an unknown topic
		return nil, fmt.Errorf("%w: %s", ErrNoTopic, w.cfg.Topic)
	}
	starts, err := w.adm.ListStartOffsets(ctx, w.cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("grouplag: start offsets of %s: %w", w.cfg.Topic, err)
	}
	commits, err := w.committed(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, len(end))
	for p, e := range end {
		if e.Err != nil {
			return nil, fmt.Errorf("grouplag: end offset of %s/%d: %w", w.cfg.Topic, p, e.Err)
		}
		s, ok := starts.Lookup(w.cfg.Topic, p)
		if !ok || s.Err != nil {
			err := errors.New("not listed")
			if ok {
				err = s.Err
			}
			return nil, fmt.Errorf("grouplag: start offset of %s/%d: %w", w.cfg.Topic, p, err)
		}
		from := s.Offset
		if c, ok := commits.Lookup(w.cfg.Topic, p); ok {
			if c.Err != nil {
				return nil, fmt.Errorf("grouplag: committed offset of %s/%d: %w", w.cfg.Topic, p, c.Err)
			}
			from = max(from, c.At)
		}
		out[p] = max(e.Offset-from, 0)
	}
	return out, nil
}

// committed returns the group's committed offsets: for a share group, its
// share-partition start offsets.
func (w *Watcher) committed(ctx context.Context) (kadm.OffsetResponses, error) {
	if !w.cfg.Share {
		// A group that never committed may not exist yet: no commits.
		commits, err := w.adm.FetchOffsets(ctx, w.cfg.Group)
		if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			return nil, fmt.Errorf("grouplag: committed offsets of group %s: %w", w.cfg.Group, err)
		}
		return commits, nil
	}
	described, err := w.adm.DescribeShareGroupOffsets(ctx, w.cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("grouplag: start offsets of share group %s: %w", w.cfg.Group, err)
	}
	out := make(kadm.OffsetResponses)
	g, ok := described[w.cfg.Group]
	if !ok || errors.Is(g.Err, kerr.GroupIDNotFound) {
		return out, nil // no member has started yet
	}
	if g.Err != nil {
		return nil, fmt.Errorf("grouplag: start offsets of share group %s: %w", w.cfg.Group, g.Err)
	}
	for _, o := range g.Offsets[w.cfg.Topic] {
		if o.Err == nil && o.StartOffset < 0 {
			continue // not initialized: the members begin at the start
		}
		out.Add(kadm.OffsetResponse{Offset: kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.StartOffset}, Err: o.Err})
	}
	return out, nil
}
