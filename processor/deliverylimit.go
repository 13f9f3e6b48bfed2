package processor

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

// DeliveryLimit returns the error result of a share-group record delivered
// deliveries times, at or past the member's limit, without processing it
// (code delivery_limit): a record that crashes every member that takes it
// ends in the dead-letter topic instead of being archived by the broker
// without a trace. Attempts is the deliveries before this one.
func DeliveryLimit(rec *kgo.Record, deliveries int) *record.Result {
	return &record.Result{
		ID:       record.NewID(),
		CustomID: bestEffortID(rec),
		Source:   record.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset},
		Error: &record.Error{Code: record.CodeDeliveryLimit, Message: fmt.Sprintf(
			"delivery %d of the record: the %d before it ended without a result (a member stopped or crashed while processing it, or its outputs could not be written); not processed again",
			deliveries, deliveries-1)},
		Attempts: deliveries - 1,
	}
}
