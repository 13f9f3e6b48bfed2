package config

import "strings"

// Output compression codecs (SLUICE_COMPRESSION).
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionSnappy = "snappy"
	CompressionLZ4    = "lz4"
	CompressionZstd   = "zstd"
)

// DefaultCompression is the codec of SLUICE_COMPRESSION when it is unset
// (and of a zero Output): gzip, the one codec that every common Kafka
// client decompresses without a plugin (kafkajs and kafka-python read
// snappy, lz4 and zstd only with extra packages). Results are JSON text,
// which gzip shrinks several fold, and sluice's rate is set by the API, so
// gzip's extra CPU over lz4 or zstd costs no throughput.
const DefaultCompression = CompressionGzip

// Output is how sluice writes its records (results, dead letters, stream
// deltas).
type Output struct {
	Compression string `envconfig:"SLUICE_COMPRESSION" default:"gzip" desc:"compression of the records sluice produces: none, gzip, snappy, lz4 or zstd (every client reads gzip; kafkajs needs plugins for the others)"`
}

// Codec returns the compression codec in canonical (lower) case,
// DefaultCompression when unset.
func (o Output) Codec() string {
	c := strings.ToLower(strings.TrimSpace(o.Compression))
	if c == "" {
		return DefaultCompression
	}
	return c
}

// Validate checks the output settings.
func (o Output) Validate() error {
	switch o.Codec() {
	case CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd:
		return nil
	}
	return invalid("COMPRESSION", "must be none, gzip, snappy, lz4 or zstd, got %q", o.Compression)
}
