package processor

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

// Refuse returns the error result of a record refused before any call
// (its tier cannot be served, say): code and message, and the record's
// custom_id as far as it can be read.
func Refuse(rec *kgo.Record, code, message string) *record.Result {
	return &record.Result{
		ID:       record.NewID(),
		CustomID: bestEffortID(rec),
		Source:   record.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset},
		Error:    &record.Error{Code: code, Message: message},
	}
}

// FallbackID is the custom_id of a record whose value names none: its
// custom_id header, else "<topic>-<partition>-<offset>" (what Process
// uses, for record.Options.FallbackID).
func FallbackID(rec *kgo.Record) string { return fallbackID(rec) }
