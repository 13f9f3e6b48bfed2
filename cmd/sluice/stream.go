package main

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/kafkaconn"
	"github.com/sluice-dev/sluice/internal/metrics"
	"github.com/sluice-dev/sluice/processor"
	"github.com/sluice-dev/sluice/producer"
)

// deltaSink is the processor's DeltaSink on the stream topic: it adapts
// producer.DeltaPublisher and counts the deltas Kafka did not take.
type deltaSink struct {
	pub     *producer.DeltaPublisher
	metrics *metrics.Metrics
	log     zerolog.Logger
}

// newDeltaSink returns the sink of topic, or nil (no deltas published)
// when topic is empty, and a func that releases what it holds, to call once
// no record is processed any more.
//
// Deltas are produced through cl unless cl is transactional (exactly-once
// delivery): deltas are best effort and must be readable as they arrive,
// not when the transaction commits (nor dropped when it aborts), and they
// are produced outside the consumer's transaction boundaries. They then
// get a plain (idempotent) producer of their own, reaching the brokers of
// k as cl does; opts add e.g. its logger.
func newDeltaSink(cl *kgo.Client, topic string, k config.Kafka, m *metrics.Metrics, log zerolog.Logger, opts ...kgo.Opt) (processor.DeltaSink, func(), error) {
	if topic == "" {
		return nil, func() {}, nil
	}
	release := func() {}
	if txn := cl.OptValues(kgo.TransactionalID); len(txn) == 2 && txn[1] == true {
		kopts, err := kafkaconn.Opts(k) // seed brokers, TLS, SASL
		if err != nil {
			return nil, nil, err
		}
		kopts = append(kopts, kgo.ClientID("sluice-deltas"))
		dcl, err := kgo.NewClient(append(kopts, opts...)...)
		if err != nil {
			return nil, nil, fmt.Errorf("kafka client for %s_STREAM_TOPIC: %w", config.Prefix, err)
		}
		cl, release = dcl, dcl.Close
	}
	return deltaSink{pub: producer.NewDeltaPublisher(cl, topic), metrics: m, log: log}, release, nil
}

// Begin implements processor.DeltaSink.
func (s deltaSink) Begin(rec *kgo.Record, customID string, attempt int) processor.DeltaWriter {
	return deltaWriter{s: s, stream: s.pub.Begin(rec, customID, attempt)}
}

// deltaWriter is one attempt's producer.DeltaStream.
type deltaWriter struct {
	s      deltaSink
	stream *producer.DeltaStream
}

// Delta implements processor.DeltaWriter; it never blocks on Kafka.
func (w deltaWriter) Delta(ctx context.Context, d processor.Delta) {
	if d.Type != "" {
		w.stream.Event(ctx, d.Type, d.Index, d.Data)
		return
	}
	w.stream.Delta(ctx, d.Index, d.Data, d.FinishReason)
}

// End implements processor.DeltaWriter: once every record of the attempt
// is acknowledged, the failed ones are counted.
func (w deltaWriter) End(ctx context.Context, finishReason string, cause error) {
	w.stream.End(ctx, finishReason, cause, func(failed int, err error) {
		if failed == 0 {
			return
		}
		w.s.metrics.DeltasLost(failed)
		// Debug: deltas are best effort, and a Kafka outage would
		// otherwise log a line per streamed call. err names the
		// custom_id and the first lost delta.
		w.s.log.Debug().Err(err).Int("lost", failed).Msg("stream topic: deltas lost")
	})
}
