package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kzerolog"

	"github.com/sluice-dev/sluice/consumer"
	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/batchjob"
	"github.com/sluice-dev/sluice/internal/caller"
	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/grouplag"
	"github.com/sluice-dev/sluice/internal/kafkaconn"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/internal/metrics"
	"github.com/sluice-dev/sluice/internal/ops"
	"github.com/sluice-dev/sluice/processor"
	"github.com/sluice-dev/sluice/producer"
	"github.com/sluice-dev/sluice/record"
)

func runConsume(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("consume", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: sluice consume\n\nConsumes prompt records, calls the API, publishes results. Configured by environment only.")
		fmt.Fprintln(fs.Output())
		_ = config.Usage(fs.Output(), &config.Consume{})
	}
	if err := parseFlags(fs, args, os.Stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	cfg, err := config.LoadConsume()
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel)
	if limit, set := setMemoryLimit(cfg.MaxBufferedBytes); set {
		log.Info().Stringer("memory_limit", limit).Msg("Go memory limit set from SLUICE_MAX_BUFFERED_BYTES (GOMEMLIMIT overrides it)")
	}
	return serve(ctx, cfg, log, pipelineOptions{})
}

// memoryHeadroom is what the process needs besides its buffered records:
// the runtime, the Kafka client's buffers, results being produced.
const memoryHeadroom = 96 << 20

// setMemoryLimit sets the Go runtime's soft memory limit to the records'
// bound plus memoryHeadroom, unless GOMEMLIMIT is set: without it the
// garbage collector lets the heap grow to twice what is live, and a pod
// sized for the bound would be OOM-killed.
func setMemoryLimit(buffered config.ByteSize) (config.ByteSize, bool) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return 0, false
	}
	limit := buffered + min(memoryHeadroom, math.MaxInt64-buffered) // saturating
	debug.SetMemoryLimit(int64(limit))
	return limit, true
}

// pipelineOptions are what the demo adds to a plain consume.
type pipelineOptions struct {
	kafkaOpts []kgo.Opt            // extra client options
	observe   func(*record.Result) // called for every published result
}

// serve runs one consumer-group member until ctx is done: it wires
// consumer -> processor -> producer, serves the ops endpoint, and on the way
// out drains, commits and leaves the group.
func serve(ctx context.Context, cfg config.Consume, log zerolog.Logger, opt pipelineOptions) error {
	ordering, err := consumer.ParseOrdering(cfg.Ordering)
	if err != nil {
		return fmt.Errorf("%s_ORDERING: %w", config.Prefix, err)
	}
	reg := prometheus.NewRegistry()
	// The runtime's and the process's own: memory (go_memstats_*,
	// process_resident_memory_bytes) is what SLUICE_MAX_BUFFERED_BYTES
	// is sized against.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	kmetrics := kprom.NewMetrics("sluice_kafka", kprom.Registry(reg))
	m := metrics.New(reg)

	key, err := apiKey(cfg.API, log)
	if err != nil {
		return err
	}
	apiClient, err := api.New(api.Config{
		BaseURL:   cfg.BaseURL,
		Key:       key,
		MaxConns:  cfg.MaxInFlight,
		UserAgent: "sluice/" + buildVersion(),
	})
	if err != nil {
		return err
	}
	var mem member // the group member: consumer or share group
	lim := limiter.New(limiter.Config{
		MaxInFlight:   cfg.MaxInFlight,
		RPM:           cfg.RPM,
		TPM:           cfg.TPM,
		Models:        modelBudgets(cfg.ModelLimits),
		ProbeInterval: cfg.QuotaProbeInterval,
		// One server-requested wait has the same cap for the whole
		// replica as for one record.
		MaxCooldown: cfg.RetryMax,
		Log:         log,
		// While the account is unusable nothing can be processed: stop
		// fetching and leave the load balancer (readiness false).
		OnPause: func(paused bool) { mem.Hold(paused) },
	})
	var cons *consumer.Consumer
	var share *consumer.ShareConsumer
	if cfg.Shared() {
		share = consumer.NewShare(shareConfig(cfg, lim, m), log) // share.go
		mem = share
	} else {
		cons = consumer.New(consumer.Config{
			Group: cfg.Group,
			Topic: cfg.InputTopic,
			// Above the calls in flight: a record holds its slot while it
			// waits for a call slot and while its outputs are produced.
			MaxDispatched:    dispatchSlots(cfg.MaxInFlight),
			MaxBufferedBytes: int64(cfg.MaxBufferedBytes),
			CommitInterval:   cfg.CommitInterval,
			RevokeTimeout:    cfg.RevokeTimeout,
			DrainTimeout:     cfg.DrainTimeout,
			Ordering:         ordering,
			TransactionalID:  transactionalID(cfg),
			// The budgets are the group's: each member takes its share.
			OnShare:   lim.SetShare,
			OnRedone:  m.Redone,
			OnSkipped: m.Skipped,
		}, log)
		mem = cons
	}

	// franz-go logs several lines per group event at info; keep the
	// service's log to one line per lifecycle event unless debugging.
	klog := log
	if log.GetLevel() > zerolog.DebugLevel {
		klog = log.Level(max(log.GetLevel(), zerolog.WarnLevel))
	}
	kopts, err := kafkaOpts(cfg.Kafka, log) // seed brokers, TLS, SASL
	if err != nil {
		return err
	}
	// The batch tier's runner has a client of its own (batch.go): the
	// connection, no metrics hooks (kprom takes one client).
	batchOpts := append(kopts[:len(kopts):len(kopts)], kgo.WithLogger(kzerolog.New(&klog)), compressionOpt(cfg.Output))
	// Its chunk reads connect as any client does.
	connect := batchOpts[: len(kopts)+1 : len(kopts)+1]
	kopts = append(kopts,
		kgo.WithLogger(kzerolog.New(&klog)),
		kgo.ClientID("sluice"),
	)
	// The share group's members are built from the connection options.
	laneOpts := append(append([]kgo.Opt(nil), kopts...), opt.kafkaOpts...)
	kopts = append(kopts, kgo.WithHooks(kmetrics), compressionOpt(cfg.Output))
	if cfg.SessionTimeout > 0 && cons != nil {
		kopts = append(kopts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	if cfg.InstanceID != "" && cons != nil {
		kopts = append(kopts, kgo.InstanceID(cfg.InstanceID))
	}
	limits := new(topicLimits) // read once the client is up (limits.go)
	kopts = append(kopts, kgo.ProducerBatchMaxBytesFn(limits.batchMaxBytes))
	batchOpts = append(batchOpts, kgo.ProducerBatchMaxBytesFn(limits.batchMaxBytes))
	batchOpts = append(batchOpts, opt.kafkaOpts...)
	// Jobs records go to their job's partition, every other record as
	// franz-go's default partitioner sends it.
	kopts = append(kopts, kgo.RecordPartitioner(batchjob.Partitioner(cfg.JobsTopic(cfg.InputTopic), kgo.UniformBytesPartitioner(64<<10, true, true, nil))))
	if cons != nil {
		kopts = append(kopts, cons.ClientOpts()...)
	}
	kopts = append(kopts, opt.kafkaOpts...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close() // leaves the group
	if err := checkTopics(ctx, cl, cfg.Kafka, cfg.StreamTopic); err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting: nothing to drain
		}
		return err
	}
	limits.load(ctx, cl, log, cfg.OutputTopic, cfg.DLQTopic)
	deltas, releaseDeltas, err := newDeltaSink(cl, cfg.StreamTopic, cfg.Kafka, m, log, kgo.WithLogger(kzerolog.New(&klog)), compressionOpt(cfg.Output)) // stream.go
	if err != nil {
		return err
	}
	defer releaseDeltas() // runs once the consumer has stopped
	proc := processor.New(caller.NewAPI(apiClient), processor.Config{
		DefaultModel:      cfg.Model,
		Endpoint:          cfg.Endpoint,
		Middleware:        []processor.Middleware{caller.Limit(lim)},
		TokenBudget:       lim.TokenBudget,
		RequestTimeout:    cfg.RequestTimeout,
		MaxAttempts:       cfg.MaxAttempts,
		RetryBase:         cfg.RetryBase,
		RetryMax:          cfg.RetryMax,
		RecordDeadline:    cfg.RecordDeadline,
		Observer:          m,
		Stream:            cfg.Stream,
		StreamIdleTimeout: cfg.StreamIdleTimeout,
		Deltas:            deltas,
	})

	if cfg.HTTPAddr != "" {
		srv := ops.New(cfg.HTTPAddr, reg, mem.Ready)
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("%s_HTTP_ADDR: %w", config.Prefix, err)
		}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Msg("ops endpoint stopped")
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	pub := producer.NewPublisher(cl, cfg.OutputTopic, cfg.DLQTopic)
	var gate sync.Locker // exactly-once's transaction boundary; none in share mode
	if cons != nil {
		gate = cons.ProduceGate()
		pub.Gate = gate
	}
	pub.MaxMessageBytes = limits.maxMessageBytes
	registerStateGauges(reg, lim, mem)
	// Every replica reports the whole group's lag (dashboards take the
	// max over replicas); the watcher stops before the client closes.
	lag := grouplag.New(cl, grouplag.Config{Group: cfg.Group, Topic: cfg.InputTopic, Share: cfg.Shared(), Log: log})
	metrics.RegisterGroupLag(reg, lag.Lag)
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() { defer close(lagDone); lag.Run(lagCtx) }()
	defer func() { stopLag(); <-lagDone }()
	bt, stopBatch, err := startBatchTier(ctx, cfg, cl, gate, apiClient, reg, m, opt.observe, batchOpts, connect, log, limits.maxMessageBytes)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer stopBatch() // deferred after the consumer's client: runs before it closes
	h := pipeline{proc: proc, pub: pub, metrics: m, observe: opt.observe, batch: bt}
	for _, note := range config.SetRemoved() {
		log.Warn().Msg(note)
	}
	log.Info().Strs("brokers", cfg.Brokers).Str("api", redactedURL(cfg.BaseURL)).
		Int("max_in_flight", cfg.MaxInFlight).Stringer("max_buffered_bytes", cfg.MaxBufferedBytes).Int("rpm", cfg.RPM).Int("tpm", cfg.TPM).
		Stringer("model_limits", cfg.ModelLimits).Str("delivery", cfg.Mode).Str("compression", cfg.Codec()).Stringer("ordering", ordering).
		Str("group_protocol", cfg.GroupProtocol).Msg("starting")
	if share != nil {
		return share.Run(ctx, cl, laneOpts, h)
	}
	return cons.Run(ctx, cl, h)
}

// pipeline is the one place where the three packages meet: a record from
// the consumer is processed, and its result published; the consumer learns
// through ack when the outputs are safely in Kafka.
type pipeline struct {
	proc    *processor.Processor
	pub     *producer.Publisher
	metrics *metrics.Metrics
	observe func(*record.Result)
	batch   *batchTier // nil: every record is realtime
}

// resultKey keys, in a record's Context, the result it was processed to.
// A record processed again because its outputs could not be written or
// its transaction aborted is the same *kgo.Record (the consumer holds it
// until it is committed), so its result is published again from there:
// the API call is not paid twice.
type resultKey struct{}

func (p pipeline) Handle(ctx context.Context, rec *kgo.Record, ack func(error)) {
	res, reused := contextResult(rec)
	if reused {
		p.metrics.Reused()
	} else {
		p.metrics.Consumed()
		if p.route(ctx, rec, ack) { // the batch tier (batch.go)
			return
		}
		var err error
		res, err = p.proc.Process(ctx, rec)
		if err != nil {
			ack(err)
			return
		}
		parent := rec.Context
		if parent == nil {
			parent = context.Background()
		}
		rec.Context = context.WithValue(parent, resultKey{}, res)
	}
	p.publish(ctx, rec, res, ack)
}

// publish publishes res (and its dead letter) and acks once the brokers
// acknowledged them.
func (p pipeline) publish(ctx context.Context, rec *kgo.Record, res *record.Result, ack func(error)) {
	p.pub.Publish(ctx, rec, res, func(err error) {
		if err == nil {
			p.metrics.Published(res)
			if p.observe != nil {
				p.observe(res)
			}
		}
		ack(err)
	})
}

// contextResult returns the result rec was processed to before, if any.
func contextResult(rec *kgo.Record) (*record.Result, bool) {
	if rec.Context == nil {
		return nil, false
	}
	res, ok := rec.Context.Value(resultKey{}).(*record.Result)
	return res, ok
}

// member is what serve needs of the group member, consumer-group or
// share-group.
type member interface {
	Hold(held bool)
	Ready() bool
	BufferedBytes() int64
	Uncommitted() map[string]map[int32]int
}

// registerStateGauges exports the limiter's and the consumer's state,
// read at every scrape.
func registerStateGauges(reg prometheus.Registerer, lim *limiter.Limiter, cons member) {
	metrics.RegisterLimiter(reg, func() metrics.LimiterState {
		s := lim.State()
		return metrics.LimiterState{
			InFlight: s.InFlight, Concurrency: s.Concurrency, CooldownUntil: s.CooldownUntil,
			Paused: s.Paused, TokensAvailable: s.TokensAvailable, Share: s.Share,
		}
	})
	metrics.RegisterBufferedBytes(reg, cons.BufferedBytes)
	metrics.RegisterUncommitted(reg,
		func() map[string]map[int32]int64 {
			out := make(map[string]map[int32]int64)
			for t, parts := range cons.Uncommitted() {
				out[t] = make(map[int32]int64, len(parts))
				for p, n := range parts {
					out[t][p] = int64(n)
				}
			}
			return out
		})
}

// checkTopics fails fast, naming the variable, when a topic is missing or
// the brokers cannot be reached. streamTopic is checked when set.
func checkTopics(ctx context.Context, cl *kgo.Client, k config.Kafka, streamTopic string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		if serr := kafkaconn.SecurityError(cl, err); serr != nil {
			return serr // e.g. a wrong SLUICE_KAFKA_SASL_PASSWORD, at once
		}
		return fmt.Errorf("%s_BROKERS %s: cannot reach Kafka: %w", config.Prefix, strings.Join(k.Brokers, ","), err)
	}
	topics := []struct{ name, topic string }{
		{"INPUT_TOPIC", k.InputTopic}, {"OUTPUT_TOPIC", k.OutputTopic}, {"DLQ_TOPIC", k.DLQTopic},
	}
	if streamTopic != "" {
		topics = append(topics, struct{ name, topic string }{"STREAM_TOPIC", streamTopic})
	}
	names := make([]string, 0, len(topics))
	for _, t := range topics {
		names = append(names, t.topic)
	}
	details, err := kadm.NewClient(cl).ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("kafka: list topics: %w", err)
	}
	for _, t := range topics {
		d, ok := details[t.topic]
		if !ok || d.Err != nil {
			cause := "does not exist"
			if ok && d.Err != nil {
				cause = d.Err.Error()
			}
			return fmt.Errorf("%s_%s: topic %q %s", config.Prefix, t.name, t.topic, cause)
		}
	}
	return nil
}

// redactedURL drops any userinfo, query and fragment from u before it is
// logged: keys sometimes ride in them.
func redactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "[unparsable URL]"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}

// newLogger returns the JSON logger of a sluice process.
func newLogger(level string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Logger()
}

// modelBudgets converts the configured per-model limits for the limiter.
func modelBudgets(m config.ModelLimits) map[string]limiter.Budget {
	out := make(map[string]limiter.Budget, len(m))
	for model, b := range m {
		out[model] = limiter.Budget{RPM: b.RPM, TPM: b.TPM}
	}
	return out
}

// dispatchSlots is how many records the consumer hands to the pipeline at
// once for maxInFlight API calls: a quarter more, so that records waiting
// for their outputs to be acknowledged leave no call slot idle.
func dispatchSlots(maxInFlight int) int { return maxInFlight + max(maxInFlight/4, 8) }

// transactionalID is this replica's transactional.id in exactly-once mode
// ("" otherwise): unique in the group, and stable across restarts where it
// can be, so a restarted replica fences its predecessor's open transaction
// at once instead of waiting for it to time out.
func transactionalID(cfg config.Consume) string {
	switch {
	case cfg.Mode != config.ExactlyOnce:
		return ""
	case cfg.TransactionalID != "":
		return cfg.TransactionalID
	case cfg.InstanceID != "":
		return cfg.Group + "-" + cfg.InstanceID
	}
	host, err := os.Hostname()
	if err != nil {
		host = "sluice"
	}
	// In a container the pid is the same after a restart; on a shared
	// host it keeps two replicas apart.
	return fmt.Sprintf("%s-%s-%d", cfg.Group, host, os.Getpid())
}
