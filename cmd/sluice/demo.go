package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/sluice-dev/sluice/consumer"
	"github.com/sluice-dev/sluice/examples"
	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/internal/mockapi"
	"github.com/sluice-dev/sluice/record"
)

func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	out := fs.String("out", "demo-results.jsonl", "where to write the results (OpenAI Batch output JSONL)")
	in := fs.String("prompts", "", "JSONL file of prompts (default: the bundled examples/prompts.jsonl)")
	real := fs.Bool("real", false, "call the real API instead of the simulator: SLUICE_API_BASE_URL (default xAI) with the key of SLUICE_API_KEY, SLUICE_API_KEY_FILE or XAI_API_KEY (or SLUICE_API_KEYLESS=true); this costs money")
	partitions := fs.Int("partitions", 4, "partitions of the embedded topics")
	inFlight := fs.Int("max-in-flight", 32, "SLUICE_MAX_IN_FLIGHT of each demo consumer")
	share := fs.Bool("share", false, "run the members as a share group (SLUICE_GROUP_PROTOCOL=share) on a 1-partition topic (unless --partitions is set), 8 calls in flight each (unless --max-in-flight is set): every member busy on the same partition")
	replicas := fs.Int("replicas", 1, "members (replicas) to run in the demo process")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	tier := fs.String("tier", "realtime", "tier of the prompts: realtime, or batch (the simulator's Batch API; SLUICE_BATCH_API picks xai or openai)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: sluice demo [flags]\n\nRuns the whole pipeline in one process, with no network: an embedded Kafka\n(kfake), the API simulator (or the real API with --real), the bundled prompts,\none consumer, a live progress line and a summary.\n\nWith --real, the API is read from the environment as by sluice consume:\nSLUICE_API_BASE_URL, SLUICE_API_KEY, SLUICE_API_KEY_FILE or XAI_API_KEY,\nSLUICE_API_KEYLESS, SLUICE_MODEL and the SLUICE_REQUEST_TIMEOUT, retry and\nstreaming settings.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, os.Stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := atLeast(fs, "partitions", *partitions, 1); err != nil {
		return err
	}
	if err := atLeast(fs, "max-in-flight", *inFlight, 1); err != nil {
		return err
	}
	if err := atLeast(fs, "replicas", *replicas, 1); err != nil {
		return err
	}
	if *share && !flagSet(fs, "partitions") {
		*partitions = 1
	}
	if *share && !flagSet(fs, "max-in-flight") {
		// Each member acquires about what it can start: with 8 calls
		// each, the bundled prompts keep four members busy.
		*inFlight = 8
	}
	if *timeout <= 0 {
		return usagef("demo", "--timeout must be positive, got %s", *timeout)
	}
	if *tier != config.TierRealtime && *tier != config.TierBatch {
		return usagef("demo", "--tier must be realtime or batch, got %q", *tier)
	}
	lines := examples.Prompts
	if *in != "" {
		b, err := os.ReadFile(*in)
		if err != nil {
			return err
		}
		lines = b
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return demo(ctx, demoOptions{
		prompts: lines, out: *out, real: *real, partitions: int32(*partitions), inFlight: *inFlight,
		share: *share, replicas: *replicas, progress: os.Stderr, summary: os.Stdout, tier: *tier, batchAPI: os.Getenv(config.Prefix + "_BATCH_API"),
	})
}

type demoOptions struct {
	prompts    []byte
	out        string
	real       bool
	partitions int32
	inFlight   int
	share      bool // a share group (else a consumer group)
	replicas   int  // members (default 1)
	progress   io.Writer
	summary    io.Writer
	tier       string // "" is realtime
	batchAPI   string // "" is xai
}

// demo runs: embedded Kafka + API (simulated or real) + the prompts +
// one consumer member, then prints a summary and writes the results.
func demo(ctx context.Context, o demoOptions) error {
	cluster, err := devkafka.Start(devkafka.Config{Partitions: o.partitions})
	if err != nil {
		return err
	}
	defer cluster.Close()

	cfg := config.Consume{
		Kafka:          config.Kafka{Brokers: cluster.ListenAddrs(), Group: "sluice-demo", InputTopic: "prompts", OutputTopic: "completions", DLQTopic: "prompts.dlq"},
		API:            config.API{Model: "grok-4", RequestTimeout: 30 * time.Second, MaxAttempts: 6, RetryBase: 100 * time.Millisecond, RetryMax: 2 * time.Second, StreamIdleTimeout: 30 * time.Second},
		Limits:         config.Limits{MaxInFlight: o.inFlight, MaxBufferedBytes: 256 << 20, QuotaProbeInterval: 5 * time.Second},
		Delivery:       config.Delivery{Mode: config.AtLeastOnce, Ordering: "unordered"},
		CommitInterval: 200 * time.Millisecond,
		DrainTimeout:   5 * time.Second,
		RevokeTimeout:  5 * time.Second,
		LogLevel:       "warn",
		// The batch tier at demo pace: batches sent after a second,
		// polled every half second.
		Batch: config.Batch{Tier: o.tier, BatchAPI: o.batchAPI, BatchMaxWait: time.Second, BatchPollInterval: 500 * time.Millisecond},
	}
	if o.share {
		cfg.GroupProtocol = config.ProtocolShare
	}
	o.replicas = max(o.replicas, 1)
	if o.real {
		env, err := config.LoadConsume()
		if err != nil {
			return err
		}
		cfg.API = env.API
	} else {
		url, stop, err := startMockAPI()
		if err != nil {
			return err
		}
		defer stop()
		cfg.BaseURL, cfg.Keyless = url, true
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	apiName := "simulator (latency, 5xx and 429 faults)"
	if o.real {
		apiName = redactedURL(cfg.BaseURL)
	}
	group := "consumer group"
	if o.share {
		group = "share group"
	}

	tally := newTally(o.replicas)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	done := make(chan error, o.replicas)
	stopMembers := func() error {
		stopRun()
		var first error
		for range o.replicas {
			if err := <-done; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	log := zerolog.New(o.progress).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	for i := range o.replicas {
		go func() {
			done <- serve(runCtx, cfg, log, pipelineOptions{observe: func(r *record.Result) { tally.add(i, r) }})
		}()
	}
	if o.replicas > 1 {
		// The prompts go in once every member is in the group, so the
		// work spreads over all of them from the start.
		if err := waitMembers(ctx, cfg, o.replicas); err != nil {
			_ = stopMembers()
			return err
		}
	}
	total, err := produceLines(ctx, cfg.Brokers, cfg.InputTopic, o.prompts)
	if err != nil {
		_ = stopMembers()
		return err
	}
	tally.expect(total)
	fmt.Fprintf(o.progress, "sluice demo: %d prompts on an embedded Kafka (%d partitions), %d members of a %s, API %s\n",
		total, o.partitions, o.replicas, group, apiName)
	start := time.Now()

	bar := newProgress(o.progress, total)
	tick := time.NewTicker(bar.period())
	defer tick.Stop()
wait:
	for {
		select {
		case <-tally.complete:
			break wait
		case err := <-done:
			o.replicas-- // this one is done
			_ = stopMembers()
			return fmt.Errorf("consumer stopped early: %w", err)
		case <-ctx.Done():
			_ = stopMembers()
			return fmt.Errorf("demo: %d of %d results after %s: %w", tally.count(), total, time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-tick.C:
			bar.draw(tally.count(), time.Since(start))
		}
	}
	elapsed := time.Since(start)
	bar.draw(total, elapsed)
	bar.finish()
	if err := stopMembers(); err != nil {
		return err
	}
	if err := writeResults(o.out, tally.sorted()); err != nil {
		return err
	}
	tally.summary(o.summary, elapsed, o.out)
	return nil
}

// startMockAPI serves the simulator on a loopback port with hosted-API-like
// latency and a few faults, so the demo shows retries.
func startMockAPI() (baseURL string, stop func(), err error) {
	mock := mockapi.New(mockapi.Config{
		Latency: 300 * time.Millisecond, Jitter: 200 * time.Millisecond,
		Fail5xx: 0.05, Overload429: 0.05, Malformed: 0.02,
		BatchDelay: 2 * time.Second,
		Models:     mockapi.DefaultModels,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("mock API: %w", err)
	}
	srv := &http.Server{Handler: mock, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/v1", func() {
		mock.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// produceLines produces every non-empty line as one record, keyed by its
// custom_id when it has one; invalid lines are produced too, to show how
// they are answered.
func produceLines(ctx context.Context, brokers []string, topic string, data []byte) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var recs []*kgo.Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var id struct {
			CustomID string `json:"custom_id"`
		}
		_ = json.Unmarshal(line, &id)
		recs = append(recs, &kgo.Record{Key: []byte(id.CustomID), Value: slices.Clone(line)})
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, fmt.Errorf("produce prompts: %w", err)
	}
	return len(recs), nil
}

// tally gathers the demo's results as they are published.
type tally struct {
	mu        sync.Mutex
	total     int                       // 0 until expect
	results   map[string]*record.Result // by source position, first wins
	perMember []int                     // results published by each member
	complete  chan struct{}
}

func newTally(members int) *tally {
	return &tally{results: map[string]*record.Result{}, perMember: make([]int, members), complete: make(chan struct{})}
}

// expect sets the number of results that completes the tally.
func (t *tally) expect(total int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total = total
	t.checkLocked()
}

func (t *tally) add(member int, r *record.Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := fmt.Sprintf("%d/%d", r.Source.Partition, r.Source.Offset)
	if _, dup := t.results[k]; dup {
		return
	}
	t.results[k] = r
	t.perMember[member]++
	t.checkLocked()
}

func (t *tally) checkLocked() {
	if t.total > 0 && len(t.results) == t.total {
		select {
		case <-t.complete:
		default:
			close(t.complete)
		}
	}
}

// members returns the results published by each member.
func (t *tally) members() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.perMember)
}

func (t *tally) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.results)
}

// sorted returns the results in custom_id order.
func (t *tally) sorted() []*record.Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*record.Result, 0, len(t.results))
	for _, r := range t.results {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CustomID < out[j].CustomID })
	return out
}

func (t *tally) summary(w io.Writer, elapsed time.Duration, out string) {
	rs := t.sorted()
	var ok, failed, retries, prompt, completion, reasoning int
	codes := map[string]int{}
	lat := make([]int64, 0, len(rs))
	for _, r := range rs {
		retries += max(r.Attempts-1, 0)
		lat = append(lat, r.LatencyMS)
		if r.Failed() {
			failed++
			codes[r.Error.Code]++
			continue
		}
		ok++
		var body struct {
			Usage struct {
				Prompt     int `json:"prompt_tokens"`
				Completion int `json:"completion_tokens"`
				Details    struct {
					Reasoning int `json:"reasoning_tokens"`
				} `json:"completion_tokens_details"`
			} `json:"usage"`
		}
		if r.Response != nil && json.Unmarshal(r.Response.Body, &body) == nil {
			prompt += body.Usage.Prompt
			completion += body.Usage.Completion
			reasoning += body.Usage.Details.Reasoning
		}
	}
	slices.Sort(lat)
	var codeList []string
	for c, n := range codes {
		codeList = append(codeList, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(codeList)
	fmt.Fprintf(w, "\nsluice demo: %d results in %s (%.1f/s)\n", len(rs), elapsed.Round(time.Millisecond), float64(len(rs))/elapsed.Seconds())
	fmt.Fprintf(w, "  ok              %d\n", ok)
	fmt.Fprintf(w, "  failed          %d  %s\n", failed, strings.Join(codeList, " "))
	fmt.Fprintf(w, "  dead-lettered   %d  (topic prompts.dlq, input bytes kept)\n", failed)
	fmt.Fprintf(w, "  retries         %d\n", retries)
	fmt.Fprintf(w, "  latency         p50 %dms  p99 %dms\n", percentile(lat, 50), percentile(lat, 99))
	fmt.Fprintf(w, "  tokens          prompt %d  completion %d  reasoning %d\n", prompt, completion, reasoning)
	if per := t.members(); len(per) > 1 {
		fmt.Fprintf(w, "  per member      %s\n", strings.Trim(fmt.Sprint(per), "[]"))
	}
	fmt.Fprintf(w, "  results         %s\n", out)
}

// percentile of sorted values (nearest rank).
func percentile(sorted []int64, p int) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted) + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func writeResults(path string, rs []*record.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, r := range rs {
		b, err := r.Marshal()
		if err != nil {
			f.Close()
			return err
		}
		_ = writeJSONLine(w, b) // a write error sticks; Flush returns it
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// progress draws a bar with rate and ETA on a terminal, or a plain line
// every few seconds elsewhere (CI logs, pipes).
type progress struct {
	w     io.Writer
	total int
	tty   bool
}

func newProgress(w io.Writer, total int) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, total: total, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) period() time.Duration {
	if p.tty {
		return 100 * time.Millisecond
	}
	return 2 * time.Second
}

func (p *progress) draw(n int, elapsed time.Duration) {
	rate := float64(n) / max(elapsed.Seconds(), 1e-3)
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(p.total-n) / rate * float64(time.Second))).Round(100 * time.Millisecond).String()
	}
	if !p.tty {
		fmt.Fprintf(p.w, "progress: %d/%d results, %.1f/s, eta %s\n", n, p.total, rate, eta)
		return
	}
	const width = 30
	filled := width * n / max(p.total, 1)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d  %.1f/s  eta %s   ", strings.Repeat("█", filled), strings.Repeat("·", width-filled), n, p.total, rate, eta)
}

func (p *progress) finish() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// waitMembers waits until the demo's group shows every member: replicas
// members of a consumer group, or replicas x consumer.ShareLanes of a
// share group, each assigned the input topic.
func waitMembers(ctx context.Context, cfg config.Consume, replicas int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		n := 0
		if cfg.Shared() {
			if gs, err := adm.DescribeShareGroups(ctx, cfg.Group); err == nil {
				for _, m := range gs[cfg.Group].Members {
					if len(m.Assignment[cfg.InputTopic]) > 0 { // it can fetch
						n++
					}
				}
				n /= consumer.ShareLanes
			}
		} else if gs, err := adm.DescribeGroups(ctx, cfg.Group); err == nil && gs[cfg.Group].State == "Stable" {
			n = len(gs[cfg.Group].Members)
		}
		if n >= replicas {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for %d members to join: %w", replicas, ctx.Err())
		case <-t.C:
		}
	}
}
