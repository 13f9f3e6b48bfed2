package producer_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/producer"
	"github.com/sluice-dev/sluice/record"
)

func ExampleClient_Await() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, err := devkafka.Start(devkafka.Config{Partitions: 2})
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		panic(err)
	}
	defer cl.Close()

	c := producer.NewClient(cl, producer.ClientConfig{InputTopic: "prompts", OutputTopic: "completions"})
	_, err = c.SubmitBatch(ctx, [][]byte{
		[]byte(`{"custom_id":"q-1","prompt":"What is Kafka?"}`),
		[]byte(`{"custom_id":"q-2"}`),
	})
	fmt.Println(errors.Is(err, producer.ErrInvalidRequest), err)

	batch, err := c.SubmitBatch(ctx, [][]byte{
		[]byte(`{"custom_id":"q-1","prompt":"What is Kafka?"}`),
		[]byte(`{"custom_id":"q-2","model":"grok-4","messages":[{"role":"user","content":"What is a batch?"}]}`),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("submitted", batch.Count)

	fakeConsume(ctx, cl, batch.Count) // stands in for sluice consume

	var lines []string
	err = c.Await(ctx, batch, func(r producer.Result) error {
		if r.Failed() {
			lines = append(lines, r.CustomID+": failed: "+r.Error.Code)
		} else {
			lines = append(lines, r.CustomID+": ok")
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// true request 1: invalid input: value has none of "messages", "input", "prompt" or "body"; cannot tell its shape
	// submitted 2
	// q-1: ok
	// q-2: failed: api_error
}

// fakeConsume answers n prompts the way sluice consume would: q-2 fails.
func fakeConsume(ctx context.Context, cl *kgo.Client, n int) {
	in, err := kgo.NewClient(append(cl.Opts(), kgo.ConsumeTopics("prompts"))...)
	if err != nil {
		panic(err)
	}
	defer in.Close()
	pub := producer.NewPublisher(cl, "completions", "prompts.dlq")
	done := make(chan error, 2*n)
	for n > 0 {
		fs := in.PollFetches(ctx)
		if ctx.Err() != nil {
			panic(ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			n--
			res := &record.Result{ID: record.NewID(), CustomID: string(r.Key), Attempts: 1,
				Response: &record.Response{StatusCode: 200, Body: []byte(`{"choices":[]}`)}}
			if res.CustomID == "q-2" {
				res.Response.StatusCode = 400
				res.Error = &record.Error{Code: record.CodeAPIError, Message: "bad request"}
			}
			pub.Publish(ctx, r, res, func(err error) { done <- err })
			pub.Publish(ctx, r, res, func(err error) { done <- err }) // redelivered: Await skips it
		})
	}
	for range cap(done) {
		if err := <-done; err != nil {
			panic(err)
		}
	}
}
