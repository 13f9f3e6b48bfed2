// Package producer writes to Kafka: the Publisher that sluice consume uses to
// publish results and dead letters, and the client side that teams use to
// submit prompts and await their results.
//
//	pub := producer.NewPublisher(client, "completions", "prompts.dlq")
//	pub.Publish(ctx, input, res, func(err error) { /* acknowledged */ })
package producer
