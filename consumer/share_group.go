package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrDeliveryLimit is returned by ShareConsumer.Run when MaxDeliveries is
// not below the group's delivery count limit: the broker would archive a
// record before sluice dead-letters it.
var ErrDeliveryLimit = errors.New("consumer: max deliveries not below the group's share.delivery.count.limit")

// Group configuration names (KIP-932); the broker-wide defaults carry a
// "group." prefix.
const (
	cfgShareReset      = "share.auto.offset.reset"
	cfgShareIsolation  = "share.isolation.level"
	cfgShareDeliveries = "share.delivery.count.limit"
)

// setupGroup prepares the share group before the first member joins:
//   - share.auto.offset.reset=earliest when the group has no value for it
//     (unless Reset is latest): a new share group starts at the latest
//     offset, and the prompts produced before the first member started
//     would be skipped;
//   - share.isolation.level=read_committed when the group has no value for
//     it: as in a consumer group, prompts of aborted transactions are never
//     sent to the API;
//   - MaxDeliveries below the group's delivery count limit.
func (c *ShareConsumer) setupGroup(ctx context.Context, admin *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got, err := c.groupConfigs(ctx, admin)
	if err != nil {
		return fmt.Errorf("consumer: describe share group %q configuration: %w", c.cfg.Group, err)
	}
	set := map[string]string{}
	if _, ok := got[cfgShareReset]; !ok && c.cfg.Reset == ShareResetEarliest {
		set[cfgShareReset] = "earliest"
	}
	if _, ok := got[cfgShareIsolation]; !ok {
		set[cfgShareIsolation] = "read_committed"
	}
	if len(set) > 0 {
		if err := c.alterGroupConfigs(ctx, admin, set); err != nil {
			return fmt.Errorf("consumer: configure share group %q: %w", c.cfg.Group, err)
		}
		for k, v := range set {
			c.log.Info().Str("group", c.cfg.Group).Str("config", k).Str("value", v).
				Msg("the share group had no value for this configuration; set it")
		}
	}
	limit, err := c.deliveryCountLimit(ctx, admin, got)
	switch {
	case err != nil:
		c.log.Warn().Err(err).Int("max_deliveries", c.cfg.MaxDeliveries).
			Msg("cannot read the group's delivery count limit; make sure SLUICE_MAX_DELIVERIES is below it")
	case c.cfg.MaxDeliveries >= limit:
		return fmt.Errorf("%w: %d deliveries, the group's limit is %d", ErrDeliveryLimit, c.cfg.MaxDeliveries, limit)
	}
	return nil
}

// groupConfigs returns the configuration values set on the share group
// itself (not defaults).
func (c *ShareConsumer) groupConfigs(ctx context.Context, admin *kgo.Client) (map[string]string, error) {
	req := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType = kmsg.ConfigResourceTypeGroupConfig
	rr.ResourceName = c.cfg.Group
	rr.ConfigNames = []string{cfgShareReset, cfgShareIsolation, cfgShareDeliveries}
	req.Resources = append(req.Resources, rr)
	resp, err := req.RequestWith(ctx, admin)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return nil, err
		}
		for _, cfg := range r.Configs {
			if cfg.Source == kmsg.ConfigSourceGroupConfig && cfg.Value != nil {
				out[cfg.Name] = *cfg.Value
			}
		}
	}
	return out, nil
}

// alterGroupConfigs sets configs on the share group (IncrementalAlterConfigs
// on the GROUP resource).
func (c *ShareConsumer) alterGroupConfigs(ctx context.Context, admin *kgo.Client, configs map[string]string) error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	rr := kmsg.NewIncrementalAlterConfigsRequestResource()
	rr.ResourceType = kmsg.ConfigResourceTypeGroupConfig
	rr.ResourceName = c.cfg.Group
	for k, v := range configs {
		rc := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		rc.Name = k
		rc.Op = kmsg.IncrementalAlterConfigOpSet
		rc.Value = kmsg.StringPtr(v)
		rr.Configs = append(rr.Configs, rc)
	}
	req.Resources = append(req.Resources, rr)
	resp, err := req.RequestWith(ctx, admin)
	if err != nil {
		return err
	}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			if r.ErrorMessage != nil {
				return fmt.Errorf("%w: %s", err, *r.ErrorMessage)
			}
			return err
		}
	}
	return nil
}

// deliveryCountLimit is the group's share.delivery.count.limit, or the
// brokers' group.share.delivery.count.limit when the group sets none.
func (c *ShareConsumer) deliveryCountLimit(ctx context.Context, admin *kgo.Client, group map[string]string) (int, error) {
	if v, ok := group[cfgShareDeliveries]; ok {
		return strconv.Atoi(v)
	}
	adm := kadm.NewClient(admin)
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return 0, err
	}
	if len(meta.Brokers) == 0 {
		return 0, errors.New("no brokers")
	}
	rcs, err := adm.DescribeBrokerConfigs(ctx, meta.Brokers[0].NodeID)
	if err != nil {
		return 0, err
	}
	for _, rc := range rcs {
		for _, cfg := range rc.Configs {
			if cfg.Key == "group."+cfgShareDeliveries && cfg.Value != nil {
				return strconv.Atoi(*cfg.Value)
			}
		}
	}
	return 5, nil // Kafka's default
}

// renewLoop renews the acquisition locks of the records held past half
// their lock, until stop is closed: a call that outlives the lock (a long
// reasoning call, or a record waiting for a call slot) keeps its record.
func (c *ShareConsumer) renewLoop(stop <-chan struct{}) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		c.mu.Lock()
		lock := c.lockDur
		c.mu.Unlock()
		// Renewals are due at half the lock; checking every eighth
		// leaves at least three eighths for the renewal to land.
		t.Reset(min(max(lock/8, 20*time.Millisecond), 5*time.Second))
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.renewDue(lock)
	}
}

// renewDue renews the locks that are due and flushes the renewals.
func (c *ShareConsumer) renewDue(lock time.Duration) {
	now := time.Now()
	var due []*shareEntry
	c.mu.Lock()
	for e := range c.held {
		if !e.renewAt.After(now) {
			e.renewAt = now.Add(lock / 2)
			due = append(due, e)
		}
	}
	// Acknowledged under mu: finish cannot give a record its final
	// acknowledgement meanwhile (a renewal after it would be ignored
	// anyway).
	lanes := map[*shareLane]bool{}
	for _, e := range due {
		e.rec.Ack(kgo.AckRenew)
		lanes[e.lane] = true
	}
	c.mu.Unlock()
	if len(due) == 0 {
		return
	}
	c.observe(ShareRenewed, len(due))
	// Acknowledgements otherwise wait up to a second to be sent.
	ctx, cancel := context.WithTimeout(c.workCtx, max(lock/8, 100*time.Millisecond))
	defer cancel()
	for l := range lanes {
		_ = l.cl.FlushAcks(ctx) // a late flush still sends; the next round retries
	}
}

// watchShare reports this member's share of the group's work to OnShare
// every ShareRefresh until stop is closed: its lanes' fraction of the share
// group's members, each member taking records as fast as it can.
func (c *ShareConsumer) watchShare(admin *kgo.Client, stop <-chan struct{}) {
	if c.cfg.OnShare == nil {
		return
	}
	adm := kadm.NewClient(admin)
	t := time.NewTicker(c.cfg.ShareRefresh)
	defer t.Stop()
	last := 0.0
	for {
		ctx, cancel := context.WithTimeout(c.workCtx, 10*time.Second)
		share, err := c.groupShare(ctx, adm)
		cancel()
		switch {
		case err != nil:
			c.log.Warn().Err(err).Msg("cannot read the share group's members; keeping the budget share")
		case share != last:
			last = share
			c.cfg.OnShare(share)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// groupShare is this member's part of the share group: its lanes over the
// group's members (1 while the group shows none).
func (c *ShareConsumer) groupShare(ctx context.Context, adm *kadm.Client) (float64, error) {
	groups, err := adm.DescribeShareGroups(ctx, c.cfg.Group)
	if err != nil {
		return 0, err
	}
	g, ok := groups[c.cfg.Group]
	if !ok || len(g.Members) == 0 {
		return 1, nil
	}
	if g.Err != nil {
		return 0, g.Err
	}
	return min(float64(c.cfg.Lanes)/float64(len(g.Members)), 1), nil
}
