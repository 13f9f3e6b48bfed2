package main

import (
	"context"
	"strconv"
	"sync"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicLimits is the largest record each output topic takes: its
// max.message.bytes (the broker's message.max.bytes when the topic sets
// none), read with kadm at start. The producer's batches are capped at it
// (kgo.ProducerBatchMaxBytesFn, consulted when an output partition is
// first produced to, after the limits are read) and the Publisher sizes
// every output against it, so a topic that takes more than franz-go's
// default of 1,000,012 bytes is used to its limit, and one that takes
// less never answers a batch with MESSAGE_TOO_LARGE.
type topicLimits struct{ m sync.Map } // topic -> int

// Bounds franz-go accepts for a batch cap, and its default, kept for a
// topic whose limit could not be read.
const minBatchBytes, maxBatchBytes, defaultBatchBytes = 512, 1 << 30, 1_000_012

func (l *topicLimits) maxMessageBytes(topic string) int {
	if v, ok := l.m.Load(topic); ok {
		return v.(int)
	}
	return defaultBatchBytes
}

func (l *topicLimits) batchMaxBytes(topic string) int32 {
	return int32(l.maxMessageBytes(topic))
}

// load reads the limits of topics; a topic it cannot read keeps the
// default (the brokers' MESSAGE_TOO_LARGE still shrinks what is too big).
func (l *topicLimits) load(ctx context.Context, cl *kgo.Client, log zerolog.Logger, topics ...string) {
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		log.Warn().Err(err).Strs("topics", topics).Msg("cannot read the topics' max.message.bytes; assuming the default")
		return
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			log.Warn().Err(rc.Err).Str("topic", rc.Name).Msg("cannot read the topic's max.message.bytes; assuming the default")
			continue
		}
		for _, c := range rc.Configs {
			if c.Key != "max.message.bytes" || c.Value == nil {
				continue
			}
			if n, err := strconv.Atoi(*c.Value); err == nil && n > 0 {
				l.m.Store(rc.Name, min(max(n, minBatchBytes), maxBatchBytes))
			}
		}
	}
}
