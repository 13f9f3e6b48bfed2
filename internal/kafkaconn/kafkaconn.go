// Package kafkaconn turns sluice's Kafka configuration into franz-go client
// options: the seed brokers, TLS (optionally mutual) and SASL (PLAIN,
// SCRAM-SHA-256, SCRAM-SHA-512). Every command that talks to Kafka builds
// its client from here, so they all read the same SLUICE_KAFKA_* variables.
//
//	opts, err := kafkaconn.Opts(cfg.Kafka)
//	if err != nil {
//		return err // names the variable, e.g. SLUICE_KAFKA_TLS_CA_FILE
//	}
//	cl, err := kgo.NewClient(append(opts, kgo.ClientID("sluice"))...)
//	if err := cl.Ping(ctx); err != nil {
//		if serr := kafkaconn.SecurityError(cl, err); serr != nil {
//			return serr // e.g. wrong SLUICE_KAFKA_SASL_PASSWORD
//		}
//		return err
//	}
package kafkaconn

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluice-dev/sluice/internal/config"
)

// Opts returns the client options that reach the brokers of k: its seed
// brokers and its security (see Security).
func Opts(k config.Kafka) ([]kgo.Opt, error) {
	sec, err := Security(k.KafkaSecurity)
	if err != nil {
		return nil, err
	}
	return append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, sec...), nil
}

// Security returns the TLS and SASL options of s, none for plaintext
// without authentication. It validates s first; every error wraps
// config.ErrInvalid and names the variable to fix.
func Security(s config.KafkaSecurity) ([]kgo.Opt, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	tc, err := TLSConfig(s)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	m, err := mechanism(s)
	if err != nil {
		return nil, err
	}
	if m != nil {
		opts = append(opts, kgo.SASL(m), kgo.WithHooks(new(saslWatch)))
	}
	return opts, nil
}

func mechanism(s config.KafkaSecurity) (sasl.Mechanism, error) {
	user, pass := s.SASLUsername, s.SASLPassword.Reveal()
	switch s.Mechanism() {
	case "":
		return nil, nil
	case config.SASLPlain:
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case config.SASLScramSHA256:
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case config.SASLScramSHA512:
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	default: // unreachable after Validate
		return nil, fmt.Errorf("%w: %s_KAFKA_SASL_MECHANISM: unknown mechanism %q", config.ErrInvalid, config.Prefix, s.SASLMechanism)
	}
}
