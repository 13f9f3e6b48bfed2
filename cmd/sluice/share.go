package main

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/consumer"
	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/limiter"
	"github.com/sluice-dev/sluice/internal/metrics"
	"github.com/sluice-dev/sluice/processor"
)

// shareConfig is the share-group member of cfg (SLUICE_GROUP_PROTOCOL=share).
func shareConfig(cfg config.Consume, lim *limiter.Limiter, m *metrics.Metrics) consumer.ShareConfig {
	return consumer.ShareConfig{
		Group: cfg.Group,
		Topic: cfg.InputTopic,
		// As in a consumer group: above the calls in flight. The member
		// acquires no more than it can start soon.
		MaxDispatched:    dispatchSlots(cfg.MaxInFlight),
		MaxBufferedBytes: int64(cfg.MaxBufferedBytes),
		DrainTimeout:     cfg.DrainTimeout,
		MaxDeliveries:    cfg.MaxDeliveries,
		Reset:            cfg.ShareReset,
		// The budgets are the group's: each member takes its share.
		OnShare:  lim.SetShare,
		Observer: m,
	}
}

// HandleDeliveryLimit publishes the delivery_limit result and dead letter
// of a record past SLUICE_MAX_DELIVERIES; no call is made.
func (p pipeline) HandleDeliveryLimit(ctx context.Context, rec *kgo.Record, deliveries int, ack func(error)) {
	p.metrics.Consumed()
	p.publish(ctx, rec, processor.DeliveryLimit(rec, deliveries), ack)
}
