package producer

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrRecordTooLarge is wrapped by the error of a value whose record would
// not fit in one record batch on the input topic (its max.message.bytes).
// Such a value is rejected before anything is produced, like an invalid
// one.
var ErrRecordTooLarge = errors.New("record too large")

// Kafka's names and defaults for the largest record batch a topic accepts.
const (
	topicMaxMessageBytes  = "max.message.bytes" // topic config
	brokerMaxMessageBytes = "message.max.bytes" // broker default of it
	// DefaultMaxMessageBytes is Kafka's default message.max.bytes, used
	// when the broker does not say (e.g. DescribeConfigs is not
	// authorized).
	DefaultMaxMessageBytes = 1048588
	// recordBatchOverhead is the most bytes a record batch holding one
	// record adds to it: the v2 batch header (61 bytes) and its length
	// prefixes, counted as franz-go counts them before producing.
	recordBatchOverhead = 70
)

// MaxMessageBytes returns the input topic's max.message.bytes, the largest
// record batch (in bytes, after compression) its brokers accept, read with
// DescribeConfigs: the topic's own value, else the brokers'
// message.max.bytes, else Kafka's default. When the brokers refuse to
// describe configs (authorization), it returns DefaultMaxMessageBytes and
// an error wrapping the refusal, which the caller may log and go on with.
func (c *Client) MaxMessageBytes(ctx context.Context) (int, error) {
	topic := c.cfg.InputTopic
	rcs, err := c.adm.DescribeTopicConfigs(ctx, topic)
	var rc kadm.ResourceConfig
	if err == nil {
		if rc, err = rcs.On(topic, nil); err == nil {
			err = rc.Err
		}
	}
	if err != nil {
		if isAuthErr(err) {
			return DefaultMaxMessageBytes, fmt.Errorf("producer: describe configs of topic %q (assuming %d bytes): %w", topic, DefaultMaxMessageBytes, err)
		}
		return 0, fmt.Errorf("producer: describe configs of topic %q: %w", topic, err)
	}
	n, src, ok := configInt(rc.Configs, topicMaxMessageBytes)
	if ok && src != kmsg.ConfigSourceDefaultConfig && src != kmsg.ConfigSourceUnknown {
		return n, nil // the topic's, or a broker default already applied
	}
	if !ok {
		n = DefaultMaxMessageBytes
	}
	// Not set on the topic: what the brokers were given, if anything.
	brs, err := c.adm.DescribeBrokerConfigs(ctx)
	if err != nil {
		if isAuthErr(err) {
			return n, fmt.Errorf("producer: describe broker configs (assuming %d bytes): %w", n, err)
		}
		return 0, fmt.Errorf("producer: describe broker configs: %w", err)
	}
	for _, rc := range brs {
		if b, _, ok := configInt(rc.Configs, brokerMaxMessageBytes); ok && rc.Err == nil {
			return b, nil
		}
	}
	return n, nil
}

func configInt(cs []kadm.Config, key string) (int, kmsg.ConfigSource, bool) {
	for _, cfg := range cs {
		if cfg.Key == key && cfg.Value != nil {
			n, err := strconv.Atoi(*cfg.Value)
			return n, cfg.Source, err == nil && n > 0
		}
	}
	return 0, 0, false
}

func isAuthErr(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed)
}

// sizeLimit is what a record of the input topic must fit in.
type sizeLimit struct {
	bytes int    // the largest record batch of one record
	what  string // names the limit in errors
}

// recordLimit reads the input topic's max.message.bytes and checks that
// the client does not batch more than that (kgo.ProducerBatchMaxBytes),
// else batches of small records would fail with MESSAGE_TOO_LARGE. An
// authorization error is not fatal: Kafka's default is assumed and the
// error returned beside the limit.
func (c *Client) recordLimit(ctx context.Context) (sizeLimit, error) {
	topic := c.cfg.InputTopic
	limit, err := c.MaxMessageBytes(ctx)
	if limit == 0 {
		return sizeLimit{}, err
	}
	batchMax := clientBatchMaxBytes(c.cl, topic)
	if batchMax > limit {
		return sizeLimit{}, fmt.Errorf("producer: topic %q takes record batches of at most %d bytes (max.message.bytes) but the client batches up to %d: create it with kgo.ProducerBatchMaxBytes(%d)", topic, limit, batchMax, limit)
	}
	if batchMax < limit {
		return sizeLimit{batchMax, fmt.Sprintf("the client's batch limit (kgo.ProducerBatchMaxBytes) %d bytes; topic %q takes %d", batchMax, topic, limit)}, err
	}
	return sizeLimit{limit, fmt.Sprintf("max.message.bytes %d of topic %q", limit, topic)}, err
}

// clientBatchMaxBytes is cl's kgo.ProducerBatchMaxBytes for topic.
func clientBatchMaxBytes(cl *kgo.Client, topic string) int {
	switch v := cl.OptValue(kgo.ProducerBatchMaxBytesFn).(type) {
	case func(string) int32:
		return int(v(topic))
	}
	if v, ok := cl.OptValue(kgo.ProducerBatchMaxBytes).(int32); ok {
		return int(v)
	}
	return 1000012 // franz-go's default
}

// batchBytes is the size of a record batch holding only rec, uncompressed,
// as franz-go measures it against ProducerBatchMaxBytes (compression may
// make the batch smaller; the check does not count on it).
func batchBytes(rec *kgo.Record) int {
	l := 1 + 1 + 1 + // attributes, timestamp delta 0, offset delta 0
		kbin.VarintLen(int32(len(rec.Key))) + len(rec.Key) +
		kbin.VarintLen(int32(len(rec.Value))) + len(rec.Value) +
		kbin.VarintLen(int32(len(rec.Headers)))
	for _, h := range rec.Headers {
		l += kbin.VarintLen(int32(len(h.Key))) + len(h.Key) + kbin.VarintLen(int32(len(h.Value))) + len(h.Value)
	}
	return recordBatchOverhead + kbin.VarintLen(int32(l)) + l
}
