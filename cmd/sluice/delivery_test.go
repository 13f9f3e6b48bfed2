package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/record"
)

// collectCommitted reads want records of topic as a read_committed
// consumer: what a downstream reader of an exactly-once run sees.
func (s *testStack) collectCommitted(t testing.TB, topic string, want int) []*kgo.Record {
	t.Helper()
	return s.collectWith(t, topic, want, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
}

func TestExactlyOnceSmoke(t *testing.T) {
	s := newTestStack(t, 2)
	s.cfg.Mode = config.ExactlyOnce
	s.cfg.CommitInterval = 100 * time.Millisecond
	var recs []*kgo.Record
	for i := range 50 {
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"p-%d"}`, i, i)})
	}
	recs = append(recs, &kgo.Record{Value: []byte(`{"custom_id":"bad","prompt":"status-400"}`)})
	s.produce(t, recs...)
	stop := s.member(t)
	got := countByID(t, s.collectCommitted(t, "completions", len(recs)))
	for i := range 50 {
		if n := got[fmt.Sprintf("c-%d", i)]; n != 1 {
			t.Errorf("c-%d: %d results", i, n)
		}
	}
	if got["bad"] != 1 {
		t.Errorf("bad: %d results", got["bad"])
	}
	s.collectCommitted(t, "prompts.dlq", 1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	c := s.committed(t)
	if c[0]+c[1] != int64(len(recs)) {
		t.Errorf("committed offsets %v, want them to sum to %d", c, len(recs))
	}
}

// orderAPI answers after a random short delay and records, per key (the
// prompt text is "<key>/<seq>"), how many calls were in flight at once.
type orderAPI struct {
	mu          sync.Mutex
	inFlight    map[string]int
	maxPerKey   int
	total, peak int
}

func (a *orderAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	key, _, _ := strings.Cut(req.Messages[0].Content, "/")
	a.mu.Lock()
	a.inFlight[key]++
	a.total++
	a.maxPerKey = max(a.maxPerKey, a.inFlight[key])
	a.peak = max(a.peak, a.total)
	a.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond) // the API's latency, varied so unordered results would reorder
	a.mu.Lock()
	a.inFlight[key]--
	a.total--
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`)
}

// TestOrderingModes: key keeps each key's results in input order while keys
// run in parallel; partition runs one record at a time.
func TestOrderingModes(t *testing.T) {
	for _, tc := range []struct {
		ordering          string
		wantMaxPerKey     int
		wantParallelKeys  bool
		wantOrderedByKeys bool
	}{
		{"key", 1, true, true},
		{"partition", 1, false, true},
		{"unordered", 0, true, false}, // the control: one key's calls overlap
	} {
		t.Run(tc.ordering, func(t *testing.T) {
			api := &orderAPI{inFlight: map[string]int{}}
			srv := httptest.NewServer(api)
			t.Cleanup(srv.Close)
			s := newTestStack(t, 2)
			s.cfg.BaseURL = srv.URL
			s.cfg.Ordering = tc.ordering
			const keys, perKey = 6, 15
			var recs []*kgo.Record
			for seq := range perKey {
				for k := range keys {
					id := fmt.Sprintf("k%d/%02d", k, seq)
					recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", k),
						Value: fmt.Appendf(nil, `{"custom_id":%q,"prompt":%q}`, id, id)})
				}
			}
			s.produce(t, recs...)
			s.member(t)
			out := s.collect(t, "completions", len(recs))
			// Output records keep the input key, so one key's results
			// share a partition: their offsets give the publish order.
			last := map[string]string{}
			for _, r := range out {
				var res record.Result
				if err := json.Unmarshal(r.Value, &res); err != nil {
					t.Fatal(err)
				}
				key, _, _ := strings.Cut(res.CustomID, "/")
				if string(r.Key) != key {
					t.Fatalf("result %s has key %q", res.CustomID, r.Key)
				}
				if prev := last[key]; tc.wantOrderedByKeys && prev > res.CustomID {
					t.Errorf("%s published after %s", res.CustomID, prev)
				}
				last[key] = res.CustomID
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if tc.wantMaxPerKey == 0 && api.maxPerKey < 2 {
				t.Errorf("unordered: at most %d call in flight per key; the check cannot see overlap", api.maxPerKey)
			}
			if tc.wantMaxPerKey > 0 && api.maxPerKey != tc.wantMaxPerKey {
				t.Errorf("max calls in flight for one key = %d, want %d", api.maxPerKey, tc.wantMaxPerKey)
			}
			// Two partitions: at most 2 at once in partition mode; key
			// mode runs the 6 keys side by side.
			if tc.wantParallelKeys && api.peak < 3 {
				t.Errorf("peak calls in flight = %d; keys did not run in parallel", api.peak)
			}
			if !tc.wantParallelKeys && api.peak > 2 {
				t.Errorf("peak calls in flight = %d with 2 partitions in partition order", api.peak)
			}
		})
	}
}

// TestBacklogStaysBounded: with a large backlog of big records and an API
// that does not answer, the member holds SLUICE_MAX_BUFFERED_BYTES of
// records plus one fetch, and its calls in flight stay within
// SLUICE_MAX_IN_FLIGHT: memory does not grow with the backlog.
func TestBacklogStaysBounded(t *testing.T) {
	s := newTestStack(t, 4)
	s.cfg.HTTPAddr = freeAddr(t)
	s.cfg.MaxBufferedBytes = 1 << 20
	s.cfg.MaxInFlight = 1000
	const n, size = 400, 20 << 10 // an 8 MB backlog
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"c-%d","prompt":"slow %d %s"}`, i, i, bytes.Repeat([]byte("x"), size))}
	}
	s.produce(t, recs...)
	s.member(t)
	// One fetch may come on top of the bound: a response of up to a
	// producer batch (franz-go's default 1 MiB) per partition.
	limit := float64(s.cfg.MaxBufferedBytes) + 4<<20
	buffered := func() float64 { return scrape(t, s.cfg.HTTPAddr)["sluice_buffered_bytes"] }
	waitFor(t, 30*time.Second, "calls in flight", func() bool { return s.api.active.Load() > 0 })
	waitFor(t, 30*time.Second, "the byte bound reached", func() bool { return buffered() >= float64(s.cfg.MaxBufferedBytes) })
	// Fetching is paused: sample for a while.
	for range 10 {
		if b := buffered(); b > limit {
			t.Fatalf("%.0f bytes held with a bound of %d", b, s.cfg.MaxBufferedBytes)
		}
		time.Sleep(50 * time.Millisecond) // sampling an endpoint
	}
	held := 0.0
	for k, v := range scrape(t, s.cfg.HTTPAddr) {
		if strings.HasPrefix(k, "sluice_partition_uncommitted_records{") {
			held += v
		}
	}
	if held*size > limit || held >= n {
		t.Fatalf("%v records held of %d", held, n)
	}
	t.Logf("backlog %d × %d KiB: %.0f bytes and %v records held, %d calls in flight (bound %d bytes)",
		n, size>>10, buffered(), held, s.api.active.Load(), s.cfg.MaxBufferedBytes)
}

// TestRecordsLargerThanTheByteBoundFinish: every record is larger than
// SLUICE_MAX_BUFFERED_BYTES; each is still taken, alone, and all finish.
func TestRecordsLargerThanTheByteBoundFinish(t *testing.T) {
	s := newTestStack(t, 2)
	s.cfg.MaxBufferedBytes = 64 << 10
	const n = 10
	s.produceSpreadPrompts(t, bigPrompts(n, 100_000, "big"), 2)
	s.member(t)
	out := s.collect(t, "completions", n)
	for id, res := range decodeResults(t, out) {
		if res.Error != nil {
			t.Errorf("%s: %+v", id, res.Error)
		}
	}
	if got := len(decodeResults(t, out)); got != n {
		t.Fatalf("%d distinct results, want %d", got, n)
	}
}
