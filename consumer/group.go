package consumer

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// groupRefresh is how often the group's size is re-read between
// rebalances (a safety net: every rebalance triggers a read at once).
const groupRefresh = 30 * time.Second

// watchGroup reports this member's share of the group's work to
// OnShare after every rebalance and every groupRefresh, until stop is
// closed.
func (c *Consumer) watchGroup(stop <-chan struct{}) {
	if c.cfg.OnShare == nil {
		return
	}
	adm := kadm.NewClient(c.cl)
	t := time.NewTicker(groupRefresh)
	defer t.Stop()
	last := 0.0
	for {
		select {
		case <-stop:
			return
		case <-c.rebalanced:
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.workCtx, 10*time.Second)
		share, err := c.groupShare(ctx, adm)
		cancel()
		if err != nil {
			c.log.Warn().Err(err).Msg("cannot read the group's assignment; keeping the budget share")
			continue
		}
		if share != last {
			last = share
			c.cfg.OnShare(share)
		}
	}
}

// groupShare is this member's part of the work: the fraction of the
// topic's assigned partitions it owns, so members with more partitions get
// more of the budget and all finish a backlog together. While a rebalance
// is in progress, or the description disagrees with what this member
// holds, the members share equally.
func (c *Consumer) groupShare(ctx context.Context, adm *kadm.Client) (float64, error) {
	groups, err := adm.DescribeGroups(ctx, c.cfg.Group)
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
	if g.State != "Stable" {
		return 1 / float64(len(g.Members)), nil
	}
	total := 0
	for _, m := range g.Members {
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				if t.Topic == c.cfg.Topic {
					total += len(t.Partitions)
				}
			}
		}
	}
	c.mu.Lock()
	mine := len(c.parts)
	c.mu.Unlock()
	if total == 0 || mine == 0 || mine > total {
		return 1 / float64(len(g.Members)), nil
	}
	return float64(mine) / float64(total), nil
}

// signalRebalance asks watchGroup for a fresh read; it never blocks.
func (c *Consumer) signalRebalance() {
	select {
	case c.rebalanced <- struct{}{}:
	default:
	}
}

// Hold pauses fetching of every partition and marks the member not ready
// (held is true), or undoes that. Records in flight are not touched: the
// caller (the limiter, while the API account is unusable) holds them.
func (c *Consumer) Hold(held bool) {
	if c.held.Swap(held) == held {
		return
	}
	c.bytes.hold(held)
	if held {
		c.log.Warn().Msg("fetching paused; not ready")
		return
	}
	c.log.Info().Msg("fetching resumed; ready")
}
