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
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
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
	return c, nil
}
