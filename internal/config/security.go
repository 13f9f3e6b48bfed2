package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/sluice-dev/sluice/internal/secretfile"
)

// SASL mechanisms accepted in SLUICE_KAFKA_SASL_MECHANISM (any case).
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// KafkaSecurity is how sluice authenticates to the brokers and encrypts the
// connection: TLS (optionally mutual) and SASL. It is embedded in Kafka and
// read on its own by submit and collect (LoadKafkaSecurity). The zero value
// is plaintext without authentication.
type KafkaSecurity struct {
	TLS           bool   `envconfig:"SLUICE_KAFKA_TLS" default:"false" desc:"dial the brokers with TLS, verified against the system roots; implied by any other SLUICE_KAFKA_TLS_* setting"`
	TLSCAFile     string `envconfig:"SLUICE_KAFKA_TLS_CA_FILE" desc:"PEM file of the CA(s) that sign the brokers' certificates, instead of the system roots"`
	TLSCertFile   string `envconfig:"SLUICE_KAFKA_TLS_CERT_FILE" desc:"PEM client certificate for mutual TLS (with SLUICE_KAFKA_TLS_KEY_FILE)"`
	TLSKeyFile    string `envconfig:"SLUICE_KAFKA_TLS_KEY_FILE" desc:"PEM private key of SLUICE_KAFKA_TLS_CERT_FILE"`
	TLSServerName string `envconfig:"SLUICE_KAFKA_TLS_SERVER_NAME" desc:"name the brokers' certificates must carry (default: the host dialed)"`
	// TLSInsecureSkipVerify accepts any broker certificate: encryption
	// without authentication of the broker. For tests only.
	TLSInsecureSkipVerify bool   `envconfig:"SLUICE_KAFKA_TLS_INSECURE_SKIP_VERIFY" default:"false" desc:"accept any broker certificate (testing only; logged as a warning)"`
	SASLMechanism         string `envconfig:"SLUICE_KAFKA_SASL_MECHANISM" desc:"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty = no SASL"`
	SASLUsername          string `envconfig:"SLUICE_KAFKA_SASL_USERNAME" desc:"SASL user name"`
	SASLPassword          Secret `envconfig:"SLUICE_KAFKA_SASL_PASSWORD" desc:"SASL password; never logged"`
}

// LoadKafkaSecurity reads only the SLUICE_KAFKA_TLS* and SLUICE_KAFKA_SASL_*
// variables and validates them; submit and collect take the rest from
// flags.
func LoadKafkaSecurity() (KafkaSecurity, error) {
	var s KafkaSecurity
	if err := envconfig.Process("", &s); err != nil {
		return s, EnvError(err)
	}
	return s, s.Validate()
}

// TLSEnabled reports whether the brokers are dialed with TLS:
// SLUICE_KAFKA_TLS, or any file that only makes sense with TLS.
func (s KafkaSecurity) TLSEnabled() bool {
	return s.TLS || s.TLSCAFile != "" || s.TLSCertFile != "" || s.TLSKeyFile != "" ||
		s.TLSServerName != "" || s.TLSInsecureSkipVerify
}

// Mechanism returns SLUICE_KAFKA_SASL_MECHANISM in its canonical (upper)
// case, "" when SASL is off.
func (s KafkaSecurity) Mechanism() string {
	return strings.ToUpper(strings.TrimSpace(s.SASLMechanism))
}

// Validate checks the TLS and SASL settings, naming the first bad
// variable. It reads the TLS files, so an unreadable one fails here, at
// startup, rather than at the first dial.
func (s KafkaSecurity) Validate() error {
	switch {
	case s.TLSCertFile != "" && s.TLSKeyFile == "":
		return invalid("KAFKA_TLS_KEY_FILE", "must be set with SLUICE_KAFKA_TLS_CERT_FILE (the client certificate's key)")
	case s.TLSKeyFile != "" && s.TLSCertFile == "":
		return invalid("KAFKA_TLS_CERT_FILE", "must be set with SLUICE_KAFKA_TLS_KEY_FILE (the key's client certificate)")
	}
	for _, f := range []struct{ name, path string }{
		{"KAFKA_TLS_CA_FILE", s.TLSCAFile},
		{"KAFKA_TLS_CERT_FILE", s.TLSCertFile},
		{"KAFKA_TLS_KEY_FILE", s.TLSKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			return invalid(f.name, "%v", err)
		}
	}
	m := s.Mechanism()
	switch m {
	case "":
		if s.SASLUsername != "" || s.SASLPassword != "" {
			return invalid("KAFKA_SASL_MECHANISM", "must be set (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) when SLUICE_KAFKA_SASL_USERNAME or SLUICE_KAFKA_SASL_PASSWORD is")
		}
		return nil
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		return invalid("KAFKA_SASL_MECHANISM", "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", s.SASLMechanism)
	}
	if strings.TrimSpace(s.SASLUsername) == "" {
		return invalid("KAFKA_SASL_USERNAME", "must be set when SLUICE_KAFKA_SASL_MECHANISM is %s", m)
	}
	if s.SASLPassword == "" {
		return invalid("KAFKA_SASL_PASSWORD", "must be set when SLUICE_KAFKA_SASL_MECHANISM is %s", m)
	}
	return nil
}

// Warnings returns what is legal but unsafe in s, one sentence each, for
// the caller to log at startup.
func (s KafkaSecurity) Warnings() []string {
	var w []string
	if s.TLSInsecureSkipVerify {
		w = append(w, Prefix+"_KAFKA_TLS_INSECURE_SKIP_VERIFY is set: broker certificates are not verified, so the connection can be intercepted")
	}
	if s.Mechanism() == SASLPlain && !s.TLSEnabled() {
		w = append(w, Prefix+"_KAFKA_SASL_MECHANISM is PLAIN without TLS: the password crosses the network in clear text")
	}
	return w
}

// readable fails unless path is a regular file that can be opened.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}

// validateKeyFile checks SLUICE_API_KEY_FILE: exclusive with
// SLUICE_API_KEY, and naming a readable file that holds a key.
func (a API) validateKeyFile() error {
	if a.KeyFile == "" {
		return nil
	}
	if a.Key != "" {
		return invalid("API_KEY_FILE", "cannot be used with SLUICE_API_KEY (both are set); set only one")
	}
	if _, err := secretfile.Read(a.KeyFile); err != nil {
		return invalid("API_KEY_FILE", "%v", err)
	}
	return nil
}
