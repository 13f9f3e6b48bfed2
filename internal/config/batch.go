package config

import (
	"strings"
	"time"

	"github.com/sluice-dev/sluice/record"
)

// Tiers (SLUICE_TIER, and the sluice.tier header of a record).
const (
	TierRealtime = record.TierRealtime
	TierBatch    = record.TierBatch
)

// Batch APIs (SLUICE_BATCH_API).
const (
	BatchAPIXAI    = "xai"
	BatchAPIOpenAI = "openai"
)

// maxOpenAIBatchRequests is OpenAI's limit on the requests of one batch.
const maxOpenAIBatchRequests = 50_000

// Batch is the batch tier: records that can wait go to the provider's
// Batch API, at its lower price and outside the rate limits.
type Batch struct {
	Tier              string        `envconfig:"SLUICE_TIER" default:"realtime" desc:"tier of a record without a sluice.tier header: realtime, or batch (the provider's Batch API: a lower price, outside the rate limits, results within 24h)"`
	BatchAPI          string        `envconfig:"SLUICE_BATCH_API" default:"xai" desc:"Batch API of the batch tier: xai (xAI's native batches) or openai (files + batches, also OpenAI-compatible providers)"`
	BatchMaxRequests  int           `envconfig:"SLUICE_BATCH_MAX_REQUESTS" default:"10000" desc:"requests gathered into one provider batch (per endpoint and model) before it is sent"`
	BatchMaxWait      time.Duration `envconfig:"SLUICE_BATCH_MAX_WAIT" default:"60s" desc:"longest time a batch-tier record waits to be sent in a provider batch"`
	BatchPollInterval time.Duration `envconfig:"SLUICE_BATCH_POLL_INTERVAL" default:"30s" desc:"how often a provider batch's state is read"`
	BatchJobsTopic    string        `envconfig:"SLUICE_BATCH_JOBS_TOPIC" desc:"compacted topic of the batch jobs, their provider batches and the records they hold (default <input topic>.batches)"`
}

// Defaults of a Batch built in code (what the tags' defaults say).
const (
	defaultBatchMaxRequests  = 10000
	defaultBatchMaxWait      = 60 * time.Second
	defaultBatchPollInterval = 30 * time.Second
)

// WithDefaults returns b with its zero fields (a Consume built in code)
// at their defaults: realtime, xai, 10000, 60s, 30s.
func (b Batch) WithDefaults() Batch {
	if b.Tier == "" {
		b.Tier = TierRealtime
	}
	if b.BatchAPI == "" {
		b.BatchAPI = BatchAPIXAI
	}
	if b.BatchMaxRequests == 0 {
		b.BatchMaxRequests = defaultBatchMaxRequests
	}
	if b.BatchMaxWait == 0 {
		b.BatchMaxWait = defaultBatchMaxWait
	}
	if b.BatchPollInterval == 0 {
		b.BatchPollInterval = defaultBatchPollInterval
	}
	return b
}

// JobsTopic is the batch jobs topic: SLUICE_BATCH_JOBS_TOPIC, else
// "<input topic>.batches".
func (b Batch) JobsTopic(inputTopic string) string {
	if b.BatchJobsTopic != "" {
		return b.BatchJobsTopic
	}
	return inputTopic + ".batches"
}

// Validate checks the batch tier's settings against the topics of k;
// zero fields stand for their defaults (WithDefaults).
func (b Batch) Validate(k Kafka) error {
	b = b.WithDefaults()
	switch b.Tier {
	case TierRealtime, TierBatch:
	default:
		return invalid("TIER", "must be %s or %s, got %q", TierRealtime, TierBatch, b.Tier)
	}
	switch b.BatchAPI {
	case BatchAPIXAI, BatchAPIOpenAI:
	default:
		return invalid("BATCH_API", "must be %s or %s, got %q", BatchAPIXAI, BatchAPIOpenAI, b.BatchAPI)
	}
	if b.BatchMaxRequests <= 0 || (b.BatchAPI == BatchAPIOpenAI && b.BatchMaxRequests > maxOpenAIBatchRequests) {
		return invalid("BATCH_MAX_REQUESTS", "must be positive (at most %d with SLUICE_BATCH_API=openai), got %d", maxOpenAIBatchRequests, b.BatchMaxRequests)
	}
	if b.BatchMaxWait <= 0 {
		return invalid("BATCH_MAX_WAIT", "must be a positive duration, got %s", b.BatchMaxWait)
	}
	if b.BatchPollInterval <= 0 {
		return invalid("BATCH_POLL_INTERVAL", "must be a positive duration, got %s", b.BatchPollInterval)
	}
	if b.BatchJobsTopic != "" && strings.TrimSpace(b.BatchJobsTopic) == "" {
		return invalid("BATCH_JOBS_TOPIC", "must not be blank (unset it for <input topic>.batches)")
	}
	switch b.JobsTopic(k.InputTopic) {
	case k.InputTopic, k.OutputTopic, k.DLQTopic:
		return invalid("BATCH_JOBS_TOPIC", "must differ from SLUICE_INPUT_TOPIC, SLUICE_OUTPUT_TOPIC and SLUICE_DLQ_TOPIC, got %q", b.JobsTopic(k.InputTopic))
	}
	return nil
}
