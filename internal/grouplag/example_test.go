package grouplag_test

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/grouplag"
)

func ExampleWatcher_Read() {
	c, _ := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "prompts"))
	defer c.Close()
	cl, _ := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	for range 3 {
		cl.ProduceSync(context.Background(), &kgo.Record{Topic: "prompts", Partition: 1, Value: []byte("{}")})
	}

	w := grouplag.New(cl, grouplag.Config{Group: "sluice", Topic: "prompts"})
	lag, err := w.Read(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	// Nothing committed yet: the whole partition is behind.
	fmt.Println("partition 0:", lag[0], "partition 1:", lag[1])
	// Output: partition 0: 0 partition 1: 3
}
