package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/internal/batchjob"
	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/metrics"
	"github.com/sluice-dev/sluice/processor"
	"github.com/sluice-dev/sluice/producer"
	"github.com/sluice-dev/sluice/record"
)

// batchTier is the batch tier of one replica: the gatherer on the
// consume path and the runner of the jobs group (internal/batchjob).
type batchTier struct {
	cfg      config.Consume
	gatherer *batchjob.Gatherer
	parse    record.Options
	// unavailable, when set, is why batch-tier records cannot be served
	// (the jobs topic is missing): they get an error result.
	unavailable string
}

// jobsPartitions returns the jobs topic's partition count, or 0 when it
// does not exist.
func jobsPartitions(ctx context.Context, cl *kgo.Client, topic string) (int32, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	details, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("kafka: list topics: %w", err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		return 0, nil
	}
	return int32(len(d.Partitions)), nil
}

// warnUncompacted logs a warning when the jobs topic is not compacted:
// retention would then delete the records of jobs still waiting for their
// provider batches, and every new owner would read the whole retained log.
func warnUncompacted(ctx context.Context, cl *kgo.Client, topic string, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return // the topic's use will say what is wrong
	}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil && !strings.Contains(*c.Value, "compact") {
				log.Warn().Str("topic", topic).Str("cleanup_policy", *c.Value).
					Msg("the batch jobs topic is not compacted: retention can delete jobs still waiting for their provider batches; set cleanup.policy=compact")
			}
		}
	}
}

// startBatchTier sets the batch tier up on the consuming client cl:
// the gatherer, and the runner with a client of its own in the jobs
// group. With the jobs topic missing, batch-tier records get error
// results, unless SLUICE_TIER=batch, which then fails at start. stop
// seals the open jobs and stops the runner; call it after the consumer
// stopped.
func startBatchTier(ctx context.Context, cfg config.Consume, cl *kgo.Client, gate sync.Locker,
	apiClient *api.Client, reg prometheus.Registerer, m *metrics.Metrics, observe func(*record.Result), kopts, connect []kgo.Opt, log zerolog.Logger, maxMessageBytes func(string) int) (*batchTier, func(), error) {
	cfg.Batch = cfg.Batch.WithDefaults()
	topic := cfg.JobsTopic(cfg.InputTopic)
	bt := &batchTier{cfg: cfg, parse: record.Options{DefaultModel: cfg.Model, Endpoint: cfg.Endpoint}}
	parts, err := jobsPartitions(ctx, cl, topic)
	if err != nil {
		return nil, nil, err
	}
	if parts == 0 {
		if cfg.Tier == config.TierBatch {
			return nil, nil, fmt.Errorf("%s_BATCH_JOBS_TOPIC: topic %q does not exist (create it compacted: cleanup.policy=compact)", config.Prefix, topic)
		}
		bt.unavailable = fmt.Sprintf("the batch tier is not set up: its jobs topic %q does not exist", topic)
		return bt, func() {}, nil
	}
	warnUncompacted(ctx, cl, topic, log)
	gcfg := batchjob.GatherConfig{
		JobsTopic: topic, Partitions: parts, API: cfg.BatchAPI,
		MaxRequests: cfg.BatchMaxRequests, MaxWait: cfg.BatchMaxWait, Gate: gate,
	}
	if cfg.BatchAPI == config.BatchAPIOpenAI {
		gcfg.MaxJobBytes = batchapi.OpenAIMaxFileBytes // one input file per job
	}
	bt.gatherer = batchjob.NewGatherer(cl, gcfg, log)
	rcfg := batchjob.RunnerConfig{
		JobsTopic: topic, Group: cfg.Group + ".batches",
		PollInterval: cfg.BatchPollInterval, MaxWait: cfg.BatchMaxWait, Parse: bt.parse,
		XAI: batchapi.NewXAI(apiClient), OpenAI: batchapi.NewOpenAI(apiClient),
		Observer: batchObserver{m: m, observe: observe},
		Connect:  connect,
	}
	if id := transactionalID(cfg); id != "" {
		// Exactly once: a job's results commit with its end, in a
		// transaction of the runner's own producer.
		rcfg.TransactionalID = id + ".batches"
	}
	runner := batchjob.NewRunner(rcfg, log)
	rcl, err := kgo.NewClient(append(append(kopts[:len(kopts):len(kopts)], runner.ClientOpts()...), kgo.ClientID("sluice-batches"))...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	pub := producer.NewPublisher(rcl, cfg.OutputTopic, cfg.DLQTopic)
	pub.MaxMessageBytes = maxMessageBytes
	metrics.RegisterBatchJobs(reg, func() metrics.BatchJobs {
		open, pending, oldest := runner.Jobs()
		return metrics.BatchJobs{Open: open, Pending: pending, Oldest: oldest}
	})
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := runner.Run(rctx, rcl, pub); err != nil {
			log.Error().Err(err).Msg("batch runner stopped")
		}
	}()
	stop := func() {
		sctx, scancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
		defer scancel()
		if err := bt.gatherer.Close(sctx); err != nil {
			log.Warn().Err(err).Msg("open batch jobs not sealed; their owners seal them after SLUICE_BATCH_MAX_WAIT")
		}
		cancel()
		<-done
		rcl.Close() // leaves the jobs group
	}
	log.Info().Str("topic", topic).Str("api", cfg.BatchAPI).Str("tier", cfg.Tier).Msg("batch tier ready")
	return bt, stop, nil
}

// batchObserver is the runner's Observer: the metrics, and the demo's
// summary.
type batchObserver struct {
	m       *metrics.Metrics
	observe func(*record.Result)
}

func (o batchObserver) BatchState(api, from, to string) { o.m.BatchState(api, from, to) }

func (o batchObserver) BatchResult(res *record.Result) {
	o.m.BatchResult(res)
	if o.observe != nil {
		o.observe(res)
	}
}

// route handles rec when it is a batch-tier record: it is gathered (ack
// once its chunk is durable) or refused with an error result. It reports
// false for a realtime record, which the caller processes.
func (p pipeline) route(ctx context.Context, rec *kgo.Record, ack func(error)) bool {
	if p.batch == nil {
		return false
	}
	tier, err := batchjob.Tier(rec, p.batch.cfg.Tier)
	if err != nil {
		p.refuse(ctx, rec, record.CodeInvalidInput, err.Error(), ack)
		return true
	}
	if tier != record.TierBatch {
		return false
	}
	bt := p.batch
	if bt.unavailable != "" {
		p.refuse(ctx, rec, record.CodeInvalidInput, "invalid input: sluice.tier batch: "+bt.unavailable, ack)
		return true
	}
	opts := bt.parse
	opts.FallbackID = processor.FallbackID(rec)
	req, err := record.Parse(rec.Value, opts)
	if err != nil {
		code := record.CodeInvalidInput
		if errors.Is(err, record.ErrUnsupportedURL) {
			code = record.CodeUnsupportedURL
		}
		p.refuse(ctx, rec, code, err.Error(), ack)
		return true
	}
	supported := batchapi.XAISupports
	if bt.cfg.BatchAPI == config.BatchAPIOpenAI {
		supported = batchapi.OpenAISupports
	}
	switch {
	case !supported(req.URL):
		p.refuse(ctx, rec, record.CodeUnsupportedURL, fmt.Sprintf("invalid input: the %s Batch API does not take %s requests: send them with sluice.tier realtime", bt.cfg.BatchAPI, req.URL), ack)
		return true
	case req.Stream:
		p.refuse(ctx, rec, record.CodeInvalidInput, `invalid input: a batch-tier request cannot be streamed ("stream": true)`, ack)
		return true
	}
	if err := bt.gatherer.Add(rec, req.CustomID, req.URL, req.Model, ack); err != nil {
		p.refuse(ctx, rec, record.CodeInvalidInput, "invalid input: "+err.Error(), ack)
	}
	return true
}

// refuse publishes the error result (and dead letter) of a record refused
// before any call.
func (p pipeline) refuse(ctx context.Context, rec *kgo.Record, code, msg string, ack func(error)) {
	p.publish(ctx, rec, processor.Refuse(rec, code, msg), ack)
}
