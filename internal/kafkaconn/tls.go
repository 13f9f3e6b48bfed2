package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/sluice-dev/sluice/internal/config"
)

// TLSConfig returns the TLS configuration of s, nil when TLS is off: at
// least TLS 1.2, the brokers verified against SLUICE_KAFKA_TLS_CA_FILE
// (else the system roots) and, for mutual TLS, the client certificate.
// The files are read now; a rotated client certificate needs a restart.
func TLSConfig(s config.KafkaSecurity) (*tls.Config, error) {
	if !s.TLSEnabled() {
		return nil, nil
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Empty: franz-go verifies each broker against the host it dials.
		ServerName:         s.TLSServerName,
		InsecureSkipVerify: s.TLSInsecureSkipVerify, //nolint:gosec // opt-in, warned about at startup
	}
	if s.TLSCAFile != "" {
		pem, err := os.ReadFile(s.TLSCAFile)
		if err != nil {
			return nil, bad("KAFKA_TLS_CA_FILE", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, bad("KAFKA_TLS_CA_FILE", fmt.Errorf("%s holds no PEM certificate", s.TLSCAFile))
		}
		c.RootCAs = pool
	}
	if s.TLSCertFile != "" || s.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s_KAFKA_TLS_CERT_FILE and %s_KAFKA_TLS_KEY_FILE: %w", config.ErrInvalid, config.Prefix, config.Prefix, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func bad(name string, err error) error {
	return fmt.Errorf("%w: %s_%s: %w", config.ErrInvalid, config.Prefix, name, err)
}
