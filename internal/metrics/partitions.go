package metrics

import "github.com/prometheus/client_golang/prometheus"

// The per-partition gauges, with topic and partition labels.
const (
	// UncommittedRecordsName is the records a member holds per partition.
	UncommittedRecordsName = "sluice_partition_uncommitted_records"
	// GroupLagName is the consumer group's lag per partition, as every
	// member reads it for the whole group: aggregate it across replicas
	// with max by (topic, partition), never sum.
	GroupLagName = "sluice_consumer_group_lag_records"
)

// RegisterUncommitted adds UncommittedRecordsName, read from read at every
// scrape.
func RegisterUncommitted(reg prometheus.Registerer, read func() map[string]map[int32]int64) {
	RegisterPartitionGauge(reg, UncommittedRecordsName,
		"Unfinished records held per partition (queued, in flight, or in the open transaction).", read)
}

// RegisterBufferedBytes adds sluice_buffered_bytes, read from read at every
// scrape: the bytes of fetched records the member holds, against
// SLUICE_MAX_BUFFERED_BYTES.
func RegisterBufferedBytes(reg prometheus.Registerer, read func() int64) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_buffered_bytes",
		Help: "Bytes of fetched records this member holds, queued or in flight (bounded by SLUICE_MAX_BUFFERED_BYTES).",
	}, func() float64 { return float64(read()) }))
}

// RegisterGroupLag adds GroupLagName, read from read at every scrape
// (grouplag.Watcher.Lag).
func RegisterGroupLag(reg prometheus.Registerer, read func() map[string]map[int32]int64) {
	RegisterPartitionGauge(reg, GroupLagName,
		"Records of the input topic not yet committed by the consumer group, per partition, "+
			"for the whole group (every replica reports every partition: aggregate with max, not sum).", read)
}
