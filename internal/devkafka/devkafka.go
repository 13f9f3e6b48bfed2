// Package devkafka runs an in-process Kafka for development, tests and the
// demo: franz-go's kfake, which speaks the real Kafka protocol (groups,
// transactions, SASL), with sluice's topics created up front.
//
//	cluster, err := devkafka.Start(devkafka.Config{Partitions: 8})
//	if err != nil { ... }
//	defer cluster.Close()
//	brokers := cluster.ListenAddrs()
package devkafka

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultTopics are the topics sluice uses by default.
// (prompts.batches: the batch tier's jobs).
var DefaultTopics = []string{"prompts", "completions", "prompts.dlq", "prompts.batches"}

// Config configures the embedded cluster.
type Config struct {
	// Port to listen on (127.0.0.1); 0 picks a free one.
	Port int
	// Partitions of each topic created up front (default 8).
	Partitions int32
	// Topics to create (default DefaultTopics).
	Topics []string
	// Opts are passed on to kfake (fault injection, SASL, ...).
	Opts []kfake.Opt
}

// Start starts a one-broker cluster. Close it when done.
func Start(cfg Config) (*kfake.Cluster, error) {
	if cfg.Partitions <= 0 {
		cfg.Partitions = 8
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = DefaultTopics
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.SeedTopics(cfg.Partitions, cfg.Topics...),
	}
	if cfg.Port != 0 {
		opts = append(opts, kfake.Ports(cfg.Port))
	}
	c, err := kfake.NewCluster(append(opts, cfg.Opts...)...)
	if err != nil {
		return nil, fmt.Errorf("devkafka: %w", err)
	}
	compactJobsTopics(c.ListenAddrs(), cfg.Topics)
	return c, nil
}

// compactJobsTopics sets cleanup.policy=compact on the batch tier's jobs
// topics (named "*.batches"), as a real cluster should have them. It is
// best effort: a cluster that needs SASL keeps the default policy.
func compactJobsTopics(addrs []string, topics []string) {
	var jobs []string
	for _, t := range topics {
		if strings.HasSuffix(t, ".batches") {
			jobs = append(jobs, t)
		}
	}
	if len(jobs) == 0 {
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	compact := "compact"
	_, _ = kadm.NewClient(cl).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "cleanup.policy", Value: &compact}}, jobs...)
}
