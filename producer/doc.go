// Package producer writes to Kafka: the Publisher that sluice consume uses to
// publish results and dead letters, and the Client that teams use to submit
// prompts and await their results.
//
// # Publishing results (sluice consume)
//
//	pub := producer.NewPublisher(client, "completions", "prompts.dlq")
//	pub.Publish(ctx, input, res, func(err error) { /* acknowledged */ })
//
// # Submitting prompts and awaiting results
//
// A Client validates every value with the consumer's own validator before
// producing it, keyed by its custom_id, to the input topic. A batch
// records the output topic's end offsets before its first prompt is
// produced, so its results are found however late the reader starts:
//
//	cl, _ := kgo.NewClient(kgo.SeedBrokers("localhost:9092")) // keep acks=all, idempotence on
//	c := producer.NewClient(cl, producer.ClientConfig{})     // "prompts" -> "completions"
//	w, _ := c.Begin(ctx, "")                                 // or c.SubmitBatch(ctx, values)
//	for _, v := range values {
//		if _, err := w.Add(ctx, v); errors.Is(err, producer.ErrInvalidRequest) {
//			// reject this one; the batch goes on
//		}
//	}
//	batch, err := w.Close(ctx)      // every record acknowledged
//	_, _ = batch.Save(stateDir)     // for `sluice collect --batch ID`
//	err = c.Await(ctx, batch, func(r producer.Result) error {
//		// first result of every custom_id; r.Failed() says whether it is an error
//		return nil
//	})
//
// Delivery is at least once: a custom_id may have more than one result on
// the output topic; Await and Collect deliver the first and skip the rest.
// custom_id is the join key: a value without one is given a generated id,
// carried in the custom_id record header (the value is never rewritten).
package producer
