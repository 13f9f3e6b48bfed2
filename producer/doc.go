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
// A Client validates every value with the consumer's own validator, and
// its record's size against the input topic's max.message.bytes, before
// producing it, keyed by its custom_id, to the input topic. Every record of
// a batch carries the batch id in the sluice.batch header, which sluice
// keeps on the result, so results are matched on (batch, custom_id) and
// batches may reuse ids. A batch records the output topic's end offsets
// before its first prompt is produced, so its results are found however
// late the reader starts:
//
//	cl, _ := kgo.NewClient(kgo.SeedBrokers("localhost:9092")) // keep acks=all, idempotence on
//	// (and kgo.ProducerBatchMaxBytes at most the input topic's max.message.bytes)
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
// To save a batch before any of it is produced, Check every value, save
// w.Batch(), then Send them; with a transactional kgo client
// (kgo.TransactionalID) the batch is one transaction, all or nothing.
//
// Delivery is at least once: a custom_id may have more than one result on
// the output topic; Await and Collect deliver the first and skip the rest.
// custom_id is the join key: a value without one is given a generated id,
// carried in the custom_id record header (the value is never rewritten).
package producer
