package main

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
)

// compressionOpt is the producer option of SLUICE_COMPRESSION: one codec,
// with no fallback, so readers get exactly the codec the operator chose
// (franz-go's own default is snappy, which kafkajs cannot read).
func compressionOpt(o config.Output) kgo.Opt {
	var c kgo.CompressionCodec
	switch o.Codec() {
	case config.CompressionNone:
		c = kgo.NoCompression()
	case config.CompressionSnappy:
		c = kgo.SnappyCompression()
	case config.CompressionLZ4:
		c = kgo.Lz4Compression()
	case config.CompressionZstd:
		c = kgo.ZstdCompression()
	default:
		c = kgo.GzipCompression()
	}
	return kgo.ProducerBatchCompression(c)
}
