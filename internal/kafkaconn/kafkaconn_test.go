package kafkaconn_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/kafkaconn"
)

const topic = "t"

// startCluster is a one-broker kfake cluster with topic seeded.
func startCluster(t testing.TB, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func newClient(t testing.TB, k config.Kafka, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts, err := kafkaconn.Opts(k)
	if err != nil {
		t.Fatalf("Opts: %v", err)
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// roundTrip produces a record with one client built from k and reads it
// back with another.
func roundTrip(t testing.TB, k config.Kafka) {
	t.Helper()
	// A watchdog, not a bound: SCRAM's key derivation under -race on a
	// loaded machine takes seconds per connection.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := "hello " + t.Name()
	prod := newClient(t, k, kgo.DefaultProduceTopic(topic))
	if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(want)}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cons := newClient(t, k, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume: %v", err)
		}
		for _, r := range fs.Records() {
			if string(r.Value) == want {
				return
			}
		}
	}
}

// ping runs a Ping with a generous deadline, as sluice consume does, and
// returns its error explained, and how long it took.
func ping(t testing.TB, k config.Kafka, extra ...kgo.Opt) (err, explained error, took time.Duration) {
	t.Helper()
	cl := newClient(t, k, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = cl.Ping(ctx)
	return err, kafkaconn.SecurityError(cl, err), time.Since(start)
}

// failsFast checks that a Ping with k fails before its deadline with a
// SecurityError wrapping sentinel (if any) and naming every variable.
func failsFast(t testing.TB, k config.Kafka, sentinel error, names ...string) {
	t.Helper()
	err, serr, took := ping(t, k)
	if err == nil {
		t.Fatal("Ping succeeded, want an error")
	}
	t.Logf("Ping failed after %s: %v", took.Round(time.Millisecond), serr)
	// A hang would end only at the Ping's deadline: the error says which.
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping waited for its deadline (%v), want a prompt error", err)
	}
	if serr == nil {
		t.Fatalf("SecurityError(%v) = nil, want an explanation", err)
	}
	if sentinel != nil && !errors.Is(serr, sentinel) {
		t.Errorf("SecurityError = %v, want it to wrap %v", serr, sentinel)
	}
	for _, n := range names {
		if !strings.Contains(serr.Error(), n) {
			t.Errorf("SecurityError = %q, want it to name %s", serr, n)
		}
	}
}

func TestSASL(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			brokers := startCluster(t, kfake.EnableSASL(), kfake.Superuser(mech, "user", "pass"))
			k := config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{
				SASLMechanism: strings.ToLower(mech), // any case
				SASLUsername:  "user",
				SASLPassword:  "pass",
			}}
			t.Run("good password", func(t *testing.T) { roundTrip(t, k) })
			t.Run("wrong password", func(t *testing.T) {
				bad := k
				bad.SASLPassword = "wrong"
				failsFast(t, bad, kafkaconn.ErrAuth, "SLUICE_KAFKA_SASL_USERNAME", "SLUICE_KAFKA_SASL_PASSWORD")
			})
			t.Run("unknown user", func(t *testing.T) {
				bad := k
				bad.SASLUsername = "nobody"
				failsFast(t, bad, kafkaconn.ErrAuth, "SLUICE_KAFKA_SASL_USERNAME", "SLUICE_KAFKA_SASL_PASSWORD")
			})
		})
	}
}

func TestSASLMissing(t *testing.T) {
	t.Parallel()
	brokers := startCluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "user", "pass"))
	failsFast(t, config.Kafka{Brokers: brokers}, nil, "SLUICE_KAFKA_SASL_MECHANISM")
}

func TestTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	brokers := startCluster(t, kfake.TLS(p.serverTLS(t, false, "127.0.0.1")))

	t.Run("CA file", func(t *testing.T) {
		roundTrip(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSCAFile: p.caFile}})
	})
	t.Run("system roots do not know the test CA", func(t *testing.T) {
		failsFast(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLS: true}},
			kafkaconn.ErrTLS, "SLUICE_KAFKA_TLS_CA_FILE")
	})
	t.Run("another CA", func(t *testing.T) {
		other := newPKI(t)
		failsFast(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSCAFile: other.caFile}},
			kafkaconn.ErrTLS, "SLUICE_KAFKA_TLS_CA_FILE")
	})
	t.Run("insecure skip verify", func(t *testing.T) {
		roundTrip(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSInsecureSkipVerify: true}})
	})
	t.Run("wrong server name", func(t *testing.T) {
		failsFast(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSCAFile: p.caFile, TLSServerName: "kafka.example"}},
			kafkaconn.ErrTLS, "SLUICE_KAFKA_TLS_SERVER_NAME")
	})
	t.Run("plaintext client", func(t *testing.T) {
		failsFast(t, config.Kafka{Brokers: brokers}, nil, "SLUICE_KAFKA_TLS")
	})
}

func TestTLSServerName(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	brokers := startCluster(t, kfake.TLS(p.serverTLS(t, false, "kafka.internal")))
	roundTrip(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSCAFile: p.caFile, TLSServerName: "kafka.internal"}})
}

// TestTLSPlaintextBroker: kfake waits for the rest of the "request" a
// TLS ClientHello announces (a real broker refuses its size and closes),
// so the dial fails only at the dial timeout (10s by default, twice in
// Ping: known brokers, then seeds). Not fast, but bounded: the test
// shortens the timeout.
func TestTLSPlaintextBroker(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	brokers := startCluster(t)
	err, _, took := ping(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSCAFile: p.caFile}},
		kgo.DialTimeout(500*time.Millisecond))
	if err == nil {
		t.Fatal("Ping of a plaintext broker over TLS succeeded")
	}
	t.Logf("Ping failed after %s: %v", took.Round(time.Millisecond), err)
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	brokers := startCluster(t, kfake.TLS(p.serverTLS(t, true, "127.0.0.1")))
	_, cert, key := p.issue(t, "sluice", x509.ExtKeyUsageClientAuth)

	t.Run("client certificate", func(t *testing.T) {
		roundTrip(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSCAFile: p.caFile, TLSCertFile: cert, TLSKeyFile: key}})
	})
	t.Run("no client certificate", func(t *testing.T) {
		failsFast(t, config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{TLSCAFile: p.caFile}},
			kafkaconn.ErrTLS, "SLUICE_KAFKA_TLS_CERT_FILE")
	})
}

// TestTLSAndSCRAM is the usual managed-Kafka setup: SCRAM over TLS.
func TestTLSAndSCRAM(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	brokers := startCluster(t, kfake.TLS(p.serverTLS(t, false, "127.0.0.1")),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "user", "pass"))
	k := config.Kafka{Brokers: brokers, KafkaSecurity: config.KafkaSecurity{
		TLSCAFile: p.caFile, SASLMechanism: "SCRAM-SHA-512", SASLUsername: "user", SASLPassword: "pass",
	}}
	roundTrip(t, k)
	k.SASLPassword = "wrong"
	failsFast(t, k, kafkaconn.ErrAuth, "SLUICE_KAFKA_SASL_PASSWORD")
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	_, cert, key := p.issue(t, "sluice", x509.ExtKeyUsageClientAuth)
	_, otherCert, _ := p.issue(t, "other", x509.ExtKeyUsageClientAuth)

	t.Run("off", func(t *testing.T) {
		c, err := kafkaconn.TLSConfig(config.KafkaSecurity{})
		if c != nil || err != nil {
			t.Errorf("TLSConfig(zero) = %v, %v; want nil, nil", c, err)
		}
		opts, err := kafkaconn.Opts(config.Kafka{Brokers: []string{"k:9092"}})
		if err != nil || len(opts) != 1 {
			t.Errorf("Opts(plaintext) = %d options, %v; want only the seed brokers", len(opts), err)
		}
	})
	t.Run("system roots", func(t *testing.T) {
		c, err := kafkaconn.TLSConfig(config.KafkaSecurity{TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.RootCAs != nil || len(c.Certificates) != 0 || c.InsecureSkipVerify || c.MinVersion < 0x0303 {
			t.Errorf("TLSConfig(TLS) = %+v, want system roots, no client cert, verification, TLS >= 1.2", c)
		}
	})
	t.Run("CA and client certificate", func(t *testing.T) {
		c, err := kafkaconn.TLSConfig(config.KafkaSecurity{TLSCAFile: p.caFile, TLSCertFile: cert, TLSKeyFile: key, TLSServerName: "kafka"})
		if err != nil {
			t.Fatal(err)
		}
		if c.RootCAs == nil || len(c.Certificates) != 1 || c.ServerName != "kafka" {
			t.Errorf("TLSConfig = %+v, want the CA pool, one client certificate and the server name", c)
		}
	})

	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		s    config.KafkaSecurity
		bad  string
	}{
		{"missing CA file", config.KafkaSecurity{TLSCAFile: filepath.Join(dir, "nope.pem")}, "SLUICE_KAFKA_TLS_CA_FILE"},
		{"CA file not PEM", config.KafkaSecurity{TLSCAFile: notPEM}, "SLUICE_KAFKA_TLS_CA_FILE"},
		{"CA file is a directory", config.KafkaSecurity{TLSCAFile: dir}, "SLUICE_KAFKA_TLS_CA_FILE"},
		{"cert without key", config.KafkaSecurity{TLSCertFile: cert}, "SLUICE_KAFKA_TLS_KEY_FILE"},
		{"key without cert", config.KafkaSecurity{TLSKeyFile: key}, "SLUICE_KAFKA_TLS_CERT_FILE"},
		{"missing cert file", config.KafkaSecurity{TLSCertFile: filepath.Join(dir, "nope.pem"), TLSKeyFile: key}, "SLUICE_KAFKA_TLS_CERT_FILE"},
		{"key of another cert", config.KafkaSecurity{TLSCertFile: otherCert, TLSKeyFile: key}, "SLUICE_KAFKA_TLS_KEY_FILE"},
		{"key not PEM", config.KafkaSecurity{TLSCertFile: cert, TLSKeyFile: notPEM}, "SLUICE_KAFKA_TLS_KEY_FILE"},
		{"unknown mechanism", config.KafkaSecurity{SASLMechanism: "GSSAPI", SASLUsername: "u", SASLPassword: "p"}, "SLUICE_KAFKA_SASL_MECHANISM"},
		{"mechanism without user", config.KafkaSecurity{SASLMechanism: "PLAIN", SASLPassword: "p"}, "SLUICE_KAFKA_SASL_USERNAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := kafkaconn.Security(tc.s)
			if err == nil {
				t.Fatalf("Security(%+v) = %d options, want an error", tc.s, len(opts))
			}
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("Security = %v, want config.ErrInvalid naming %s", err, tc.bad)
			}
		})
	}
}

// TestSecurityErrorBrokerCodes covers what kfake does not send: a real
// broker answers a bad password with SASL_AUTHENTICATION_FAILED.
func TestSecurityErrorBrokerCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err   error
		names []string
	}{
		{fmt.Errorf("%w: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512", kerr.SaslAuthenticationFailed),
			[]string{"SLUICE_KAFKA_SASL_USERNAME", "SLUICE_KAFKA_SASL_PASSWORD"}},
		{kerr.UnsupportedSaslMechanism, []string{"SLUICE_KAFKA_SASL_MECHANISM"}},
		{kerr.IllegalSaslState, []string{"SLUICE_KAFKA_SASL_MECHANISM"}},
	} {
		got := kafkaconn.SecurityError(nil, tc.err)
		if !errors.Is(got, kafkaconn.ErrAuth) || !errors.Is(got, tc.err) {
			t.Errorf("SecurityError(%v) = %v, want it to wrap ErrAuth and the cause", tc.err, got)
			continue
		}
		for _, n := range tc.names {
			if !strings.Contains(got.Error(), n) {
				t.Errorf("SecurityError(%v) = %q, want it to name %s", tc.err, got, n)
			}
		}
	}
}

func TestSecurityErrorIgnoresOthers(t *testing.T) {
	t.Parallel()
	for _, err := range []error{nil, context.DeadlineExceeded, context.Canceled, errors.New("dial tcp: connection refused")} {
		if got := kafkaconn.SecurityError(nil, err); got != nil {
			t.Errorf("SecurityError(%v) = %v, want nil", err, got)
		}
	}
}
