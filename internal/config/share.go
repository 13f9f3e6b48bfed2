package config

import "strings"

// Group protocols (SLUICE_GROUP_PROTOCOL).
const (
	ProtocolConsumer = "consumer"
	ProtocolShare    = "share"
)

// Share selects the group protocol and tunes share-group mode (KIP-932,
// Kafka 4.2+).
type Share struct {
	GroupProtocol string `envconfig:"SLUICE_GROUP_PROTOCOL" default:"consumer" desc:"consumer: a consumer group (busy members <= partitions); share: a share group (Kafka 4.2+), any number of members per partition, no ordering, at-least-once"`
	ShareReset    string `envconfig:"SLUICE_SHARE_RESET" default:"earliest" desc:"share: earliest sets the group's share.auto.offset.reset to earliest at start when the group has no value for it (records produced before the first member are processed); latest leaves the group alone (Kafka's default: they are skipped)"`
	MaxDeliveries int    `envconfig:"SLUICE_MAX_DELIVERIES" default:"3" desc:"share: a record on its Nth delivery, N >= this, is not called again: error result delivery_limit plus dead letter; must be below the group's share.delivery.count.limit"`
}

// Shared reports whether sluice runs as a share-group member.
func (s Share) Shared() bool { return s.GroupProtocol == ProtocolShare }

// Validate checks the share settings against the delivery settings.
func (s Share) Validate(d Delivery) error {
	// Zero values (a Consume built in code) are the defaults.
	switch s.GroupProtocol {
	case "", ProtocolConsumer, ProtocolShare:
	default:
		return invalid("GROUP_PROTOCOL", "must be %s or %s, got %q", ProtocolConsumer, ProtocolShare, s.GroupProtocol)
	}
	switch s.ShareReset {
	case "", "earliest", "latest":
	default:
		return invalid("SHARE_RESET", "must be earliest or latest, got %q", s.ShareReset)
	}
	if s.MaxDeliveries == 1 || s.MaxDeliveries < 0 {
		return invalid("MAX_DELIVERIES", "must be at least 2 (the first delivery and one redelivery), got %d", s.MaxDeliveries)
	}
	if !s.Shared() {
		return nil
	}
	if d.Mode == ExactlyOnce {
		return invalid("GROUP_PROTOCOL", "share groups have no transactions: SLUICE_DELIVERY=exactly-once needs SLUICE_GROUP_PROTOCOL=consumer")
	}
	if o := strings.ToLower(d.Ordering); o != "unordered" {
		return invalid("GROUP_PROTOCOL", "share groups have no ordering: SLUICE_ORDERING=%s needs SLUICE_GROUP_PROTOCOL=consumer", o)
	}
	return nil
}
