package config

import (
	"strings"
	"time"
)

// Delivery modes (SLUICE_DELIVERY).
const (
	AtLeastOnce = "at-least-once"
	ExactlyOnce = "exactly-once"
)

// Delivery is what sluice guarantees about results and in which order it
// processes a partition's records.
type Delivery struct {
	Mode            string        `envconfig:"SLUICE_DELIVERY" default:"at-least-once" desc:"at-least-once, or exactly-once: results, dead letters and input offsets commit in one Kafka transaction (readers use read_committed)"`
	Ordering        string        `envconfig:"SLUICE_ORDERING" default:"unordered" desc:"unordered; key: one key's records in input order, keys in parallel; partition: strictly one at a time"`
	TransactionalID string        `envconfig:"SLUICE_TRANSACTIONAL_ID" desc:"exactly-once: this replica's transactional.id, unique and stable across restarts (default <group>-<instance id>, else <group>-<hostname>-<pid>)"`
	RecordDeadline  time.Duration `envconfig:"SLUICE_RECORD_DEADLINE" default:"0s" desc:"total time one record may take, retries and pauses included, before it fails with code expired (0 = none)"`
}

// Validate checks the delivery settings.
func (d Delivery) Validate() error {
	switch d.Mode {
	case AtLeastOnce, ExactlyOnce:
	default:
		return invalid("DELIVERY", "must be %s or %s, got %q", AtLeastOnce, ExactlyOnce, d.Mode)
	}
	switch strings.ToLower(d.Ordering) {
	case "unordered", "key", "partition":
	default:
		return invalid("ORDERING", "must be unordered, key or partition, got %q", d.Ordering)
	}
	if d.RecordDeadline < 0 {
		return invalid("RECORD_DEADLINE", "must not be negative, got %s", d.RecordDeadline)
	}
	return nil
}
