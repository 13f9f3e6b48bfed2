package main

import (
	"fmt"
	"io"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/kafkaconn"
	"github.com/sluice-dev/sluice/internal/secretfile"
)

// apiKey returns the API key source of a: the file of SLUICE_API_KEY_FILE,
// re-read when it changes (a rotated Kubernetes Secret needs no restart),
// else the fixed SLUICE_API_KEY.
func apiKey(a config.API, log zerolog.Logger) (func() string, error) {
	if a.KeyFile == "" {
		return a.Key.Reveal, nil
	}
	f, err := secretfile.Open(a.KeyFile, secretfile.WithLogger(log.With().Str("variable", config.Prefix+"_API_KEY_FILE").Logger()))
	if err != nil {
		return nil, fmt.Errorf("%w: %s_API_KEY_FILE: %w", config.ErrInvalid, config.Prefix, err)
	}
	log.Info().Str("path", a.KeyFile).Msg("API key read from file; a new key in it is picked up without a restart")
	return f.Get, nil
}

// kafkaOpts returns the options that reach the brokers of k (seeds, TLS,
// SASL), logging what is unsafe in them.
func kafkaOpts(k config.Kafka, log zerolog.Logger) ([]kgo.Opt, error) {
	for _, w := range k.Warnings() {
		log.Warn().Msg(w)
	}
	return kafkaconn.Opts(k)
}

// cliKafkaSecurity returns the TLS and SASL options of submit and collect,
// read from the same SLUICE_KAFKA_* variables as sluice consume, writing
// what is unsafe in them to errOut.
func cliKafkaSecurity(errOut io.Writer) ([]kgo.Opt, error) {
	s, err := config.LoadKafkaSecurity()
	if err != nil {
		return nil, err
	}
	for _, w := range s.Warnings() {
		fmt.Fprintln(errOut, "warning:", w)
	}
	return kafkaconn.Security(s)
}

// writeKafkaEnvHelp writes the environment of submit and collect.
func writeKafkaEnvHelp(w io.Writer) {
	fmt.Fprint(w, "\n"+kafkaEnvHelp)
	fmt.Fprint(w, "\nKafka TLS and SASL are read from the environment only, as by sluice consume.\n")
	_ = config.Usage(w, &config.KafkaSecurity{})
}
