package devkafka

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestJobsTopicCompacted: the batch tier's jobs topic is compacted, as
// sluice consume expects of a real cluster; the others keep the default.
func TestJobsTopicCompacted(t *testing.T) {
	c, err := Start(Config{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(context.Background(), DefaultTopics...)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rc := range rcs {
		for _, cfg := range rc.Configs {
			if cfg.Key == "cleanup.policy" && cfg.Value != nil {
				got[rc.Name] = *cfg.Value
			}
		}
	}
	if got["prompts.batches"] != "compact" || got["prompts"] == "compact" {
		t.Fatalf("cleanup.policy by topic: %v", got)
	}
}
