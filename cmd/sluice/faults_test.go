package main

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/internal/config"
)

// everyNth is a Fault.When that faults one request in n.
func everyNth(n int64) func(kmsg.Request) bool {
	var c atomic.Int64
	return func(kmsg.Request) bool { return c.Add(1)%n == 0 }
}

// TestBrokerFaults injects broker errors on produce, commit, fetch and the
// transaction APIs while a member works through the input, and checks every
// record's outcome: at-least-once loses nothing; exactly-once shows each
// result once to a read_committed reader.
func TestBrokerFaults(t *testing.T) {
	// Each case installs its faults and returns how many requests they
	// answered. Faults go through Cluster.Fault; requests whose faults
	// kfake answers only through a control (the transaction
	// coordinator's) get a real error response from ControlKey.
	faults := map[string]func(c *kfake.Cluster) func() int64{
		"produce": faultWith(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "completions", Err: kerr.NotLeaderForPartition, Count: 6, When: everyNth(2)}),
		"commit":  faultWith(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: 6, When: everyNth(2)}),
		"fetch":   faultWith(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "prompts", Err: kerr.NotLeaderForPartition, Count: 6, When: everyNth(2)}),
		// Fault on TxnOffsetCommit leaves the request unanswered in this
		// kfake (End would wait forever); a control answers it instead.
		"txn-offset-commit": controlWith(kmsg.TxnOffsetCommit, 2, func(r kmsg.Request) kmsg.Response {
			req := r.(*kmsg.TxnOffsetCommitRequest)
			resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
			for _, t := range req.Topics {
				rt := kmsg.NewTxnOffsetCommitResponseTopic()
				rt.Topic, rt.TopicID = t.Topic, t.TopicID
				for _, p := range t.Partitions {
					rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p.Partition, kerr.CoordinatorLoadInProgress.Code
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
			return resp
		}),
		"end-txn": controlWith(kmsg.EndTxn, 2, func(r kmsg.Request) kmsg.Response {
			resp := r.(*kmsg.EndTxnRequest).ResponseKind().(*kmsg.EndTxnResponse)
			resp.ErrorCode = kerr.ConcurrentTransactions.Code
			return resp
		}),
	}
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		for name, fs := range faults {
			txnOnly := name == "txn-offset-commit" || name == "end-txn"
			if (mode == config.AtLeastOnce && txnOnly) || (mode == config.ExactlyOnce && name == "commit") {
				continue // exactly-once commits offsets only in transactions
			}
			t.Run(mode+"/"+name, func(t *testing.T) {
				t.Parallel()
				s := newTestStack(t, 4)
				s.cfg.Mode = mode
				// Slow enough calls and few enough in flight that the run
				// spans many commits (transactions).
				s.cfg.CommitInterval = 50 * time.Millisecond
				s.cfg.MaxInFlight = 8
				const n = 200
				var recs []*kgo.Record
				for i := range n {
					text := fmt.Sprintf("sleep-30 p-%d", i)
					if i%7 == 0 {
						text = "flaky" // the API fails its first attempt too
					}
					recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "%d", i),
						Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":%q}`, i, text)})
				}
				s.produce(t, recs...)
				hits := fs(s.cluster)
				// Refresh metadata quickly after a NOT_LEADER answer.
				stop := s.member(t, kgo.MetadataMinAge(100*time.Millisecond))
				var got map[string]int
				if mode == config.ExactlyOnce {
					got = countByID(t, s.collectCommitted(t, "completions", n))
				} else {
					got = countByID(t, s.collect(t, "completions", n))
				}
				if err := stop(); err != nil {
					t.Fatalf("member stopped with %v", err)
				}
				if hits() == 0 {
					t.Fatal("no fault was injected")
				}
				dups := 0
				for i := range n {
					c := got[fmt.Sprintf("c-%d", i)]
					if c == 0 {
						t.Errorf("c-%d lost", i)
					}
					dups += max(0, c-1)
				}
				if mode == config.ExactlyOnce && dups > 0 {
					t.Errorf("%d duplicate committed results under exactly-once", dups)
				}
				t.Logf("%d faults injected; %d duplicates", hits(), dups)
			})
		}
	}
}

// faultWith installs f for the rest of the test.
func faultWith(f kfake.Fault) func(c *kfake.Cluster) func() int64 {
	return func(c *kfake.Cluster) func() int64 {
		h := c.Fault(f)
		return func() int64 { return int64(h.Hits()) }
	}
}

// controlWith answers one request of key in n with answer's response.
func controlWith(key kmsg.Key, n int64, answer func(kmsg.Request) kmsg.Response) func(c *kfake.Cluster) func() int64 {
	return func(c *kfake.Cluster) func() int64 {
		var hits atomic.Int64
		nth := everyNth(n)
		c.ControlKey(int16(key), func(r kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			if !nth(r) {
				return nil, nil, false
			}
			hits.Add(1)
			return answer(r), nil, true
		})
		return hits.Load
	}
}

// TestRebalanceChurn: while one member works through the input, others
// join and leave every second and a half. Nothing is lost; under
// exactly-once a read_committed reader sees every result once.
func TestRebalanceChurn(t *testing.T) {
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newTestStack(t, 8)
			s.cfg.Mode = mode
			s.cfg.CommitInterval = 50 * time.Millisecond
			s.cfg.MaxInFlight = 8 // about 5s of work: several members come and go
			const n = 400
			var recs []*kgo.Record
			for i := range n {
				recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "%d", i),
					Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"sleep-100 p-%d"}`, i, i)})
			}
			s.produce(t, recs...)
			s.member(t, txnID(mode, "steady")...)
			// At least once, churn repeats some results: wait for n
			// distinct ids, not n records, or a duplicate would stand in
			// for a result still to come. Exactly once, only committed
			// results count.
			var opts []kgo.Opt
			if mode == config.ExactlyOnce {
				opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			}
			results := s.resultReader(t, opts...)
			churns := 0
			for deadline := time.Now().Add(watchdog); ; churns++ {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d records have a result after %d churns", len(results.seen), n, churns)
				}
				// In-process members share a pid, so each gets its own
				// transactional.id, as separate replicas would. Each
				// stays for 1.5 s, or until every result is in.
				stop := s.member(t, txnID(mode, fmt.Sprintf("churn-%d", churns))...)
				all := results.readFor(n, 1500*time.Millisecond)
				if err := stop(); err != nil {
					t.Errorf("churning member: %v", err)
				}
				if all {
					break
				}
			}
			got := results.seen
			dups := 0
			for i := range n {
				c := got[fmt.Sprintf("c-%d", i)]
				if c == 0 {
					t.Errorf("c-%d lost", i)
				}
				dups += max(0, c-1)
			}
			if mode == config.ExactlyOnce && dups > 0 {
				t.Errorf("%d duplicate committed results under exactly-once", dups)
			}
			t.Logf("%d records, %d members joined and left, %d duplicates, %d API calls", n, churns, dups, s.api.calls.Load())
		})
	}
}

// txnID gives an in-process exactly-once member its own transactional.id
// (members of one process share the pid the default is made of).
func txnID(mode, id string) []kgo.Opt {
	if mode != config.ExactlyOnce {
		return nil
	}
	return []kgo.Opt{kgo.TransactionalID(id)}
}

// TestOutputFailureIsRedone: one record's dead letter is refused by the
// broker with a non-retriable error. The member stays up and processes the
// record again; under exactly-once the transaction that held its result
// aborts, so a read_committed reader sees each result and the dead letter
// once.
func TestOutputFailureIsRedone(t *testing.T) {
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newTestStack(t, 2)
			s.cfg.Mode = mode
			s.cfg.CommitInterval = 100 * time.Millisecond
			s.cfg.HTTPAddr = freeAddr(t)
			const n = 60
			var recs []*kgo.Record
			for i := range n {
				text := fmt.Sprintf("sleep-20 p-%d", i)
				if i == n/2 {
					text = "status-400" // fails: a result and a dead letter
				}
				recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "%d", i),
					Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":%q}`, i, text)})
			}
			s.produce(t, recs...)
			hits := faultWith(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "prompts.dlq", Err: kerr.InvalidRecord})(s.cluster)
			stop := s.member(t)
			var got, dead map[string]int
			if mode == config.ExactlyOnce {
				got = countByID(t, s.collectCommitted(t, "completions", n))
				dead = countKeys(s.collectCommitted(t, "prompts.dlq", 1))
			} else {
				got = countByID(t, s.collect(t, "completions", n))
				dead = countKeys(s.collect(t, "prompts.dlq", 1))
			}
			m := scrape(t, s.cfg.HTTPAddr)
			redone, reused := m["sluice_records_redone_total"], m["sluice_results_reused_total"]
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
				c := got[fmt.Sprintf("c-%d", i)]
				if c == 0 || (mode == config.ExactlyOnce && c != 1) {
					t.Errorf("c-%d: %d results", i, c)
				}
			}
			if redone < 1 {
				t.Errorf("sluice_records_redone_total = %v, want >= 1", redone)
			}
			// The records redone (the failed one, and under exactly-once
			// the others of its aborted transaction) publish their
			// results again from memory: no call is made twice.
			if reused != redone {
				t.Errorf("sluice_results_reused_total = %v, want sluice_records_redone_total (%v)", reused, redone)
			}
			if repeated := s.api.calls.Load() - n; repeated != 0 {
				t.Errorf("%d calls repeated, want 0", repeated)
			}
			t.Logf("%s: %d API calls for %d records, %v redone, %v reused", mode, s.api.calls.Load(), n, redone, reused)
		})
	}
}

func countKeys(recs []*kgo.Record) map[string]int {
	out := map[string]int{}
	for _, r := range recs {
		out[string(r.Key)]++
	}
	return out
}
