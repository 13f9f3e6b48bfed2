package consumer

import (
	"fmt"
	"strings"
)

// Ordering is the order in which a partition's records are processed.
type Ordering int

const (
	// OrderUnordered processes every record of a partition at once;
	// results come in completion order.
	OrderUnordered Ordering = iota
	// OrderKey keeps the records of one key in input order (the next
	// starts once the previous one's result is in Kafka) while different
	// keys run in parallel. Records without a key are not ordered.
	OrderKey
	// OrderPartition processes a partition's records one at a time, in
	// order.
	OrderPartition
)

// ParseOrdering reads "unordered", "key" or "partition".
func ParseOrdering(s string) (Ordering, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "unordered":
		return OrderUnordered, nil
	case "key":
		return OrderKey, nil
	case "partition":
		return OrderPartition, nil
	}
	return 0, fmt.Errorf("unknown ordering %q (want unordered, key or partition)", s)
}

func (o Ordering) String() string {
	switch o {
	case OrderKey:
		return "key"
	case OrderPartition:
		return "partition"
	}
	return "unordered"
}
