package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/internal/config"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func TestSecurityDefaults(t *testing.T) {
	clearEnv(t)
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatal(err)
	}
	if c.KafkaSecurity != (config.KafkaSecurity{}) || c.TLSEnabled() || c.Mechanism() != "" || c.KeyFile != "" {
		t.Errorf("defaults = %+v, key file %q; want plaintext, no SASL, no key file", c.KafkaSecurity, c.KeyFile)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q, want none", w)
	}
}

func TestSecurityFromEnv(t *testing.T) {
	clearEnv(t)
	ca := writeFile(t, "ca.pem", "ca")
	cert := writeFile(t, "cert.pem", "cert")
	key := writeFile(t, "key.pem", "key")
	setEnv(t, map[string]string{
		"SLUICE_KAFKA_TLS_CA_FILE":     ca,
		"SLUICE_KAFKA_TLS_CERT_FILE":   cert,
		"SLUICE_KAFKA_TLS_KEY_FILE":    key,
		"SLUICE_KAFKA_TLS_SERVER_NAME": "kafka.internal",
		"SLUICE_KAFKA_SASL_MECHANISM":  "scram-sha-512",
		"SLUICE_KAFKA_SASL_USERNAME":   "sluice",
		"SLUICE_KAFKA_SASL_PASSWORD":   "pw",
	})
	for name, load := range map[string]func() (config.KafkaSecurity, error){
		"LoadConsume": func() (config.KafkaSecurity, error) {
			c, err := config.LoadConsume()
			return c.KafkaSecurity, err
		},
		"LoadKafkaSecurity": config.LoadKafkaSecurity,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := load()
			if err != nil {
				t.Fatal(err)
			}
			want := config.KafkaSecurity{
				TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key, TLSServerName: "kafka.internal",
				SASLMechanism: "scram-sha-512", SASLUsername: "sluice", SASLPassword: "pw",
			}
			if s != want {
				t.Errorf("%s = %+v, want %+v", name, s, want)
			}
			if !s.TLSEnabled() {
				t.Error("TLSEnabled() = false; a CA file implies TLS")
			}
			if s.Mechanism() != config.SASLScramSHA512 {
				t.Errorf("Mechanism() = %q, want %q", s.Mechanism(), config.SASLScramSHA512)
			}
		})
	}
}

func TestTLSImplied(t *testing.T) {
	t.Parallel()
	for _, s := range []config.KafkaSecurity{
		{TLS: true},
		{TLSCAFile: "ca.pem"},
		{TLSCertFile: "c.pem", TLSKeyFile: "k.pem"},
		{TLSServerName: "kafka"},
		{TLSInsecureSkipVerify: true},
	} {
		if !s.TLSEnabled() {
			t.Errorf("%+v: TLSEnabled() = false, want true", s)
		}
	}
}

func TestSecurityWarnings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    config.KafkaSecurity
		want string
	}{
		{config.KafkaSecurity{TLS: true, TLSInsecureSkipVerify: true}, "SLUICE_KAFKA_TLS_INSECURE_SKIP_VERIFY"},
		{config.KafkaSecurity{SASLMechanism: "plain", SASLUsername: "u", SASLPassword: "p"}, "clear text"},
	} {
		if w := strings.Join(tc.s.Warnings(), "\n"); !strings.Contains(w, tc.want) {
			t.Errorf("%+v: Warnings() = %q, want %q", tc.s, w, tc.want)
		}
	}
	if w := (config.KafkaSecurity{TLS: true, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: "p"}).Warnings(); len(w) != 0 {
		t.Errorf("PLAIN over TLS: Warnings() = %q, want none", w)
	}
}

func TestSecurityInvalid(t *testing.T) {
	cert := writeFile(t, "cert.pem", "cert")
	key := writeFile(t, "key.pem", "key")
	keyFile := writeFile(t, "api-key", "sk-file\n")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name string
		env  map[string]string
		bad  []string // the variables the error must name
	}{
		{"unknown mechanism", map[string]string{"SLUICE_KAFKA_SASL_MECHANISM": "GSSAPI", "SLUICE_KAFKA_SASL_USERNAME": "u", "SLUICE_KAFKA_SASL_PASSWORD": "p"}, []string{"SLUICE_KAFKA_SASL_MECHANISM"}},
		{"mechanism without username", map[string]string{"SLUICE_KAFKA_SASL_MECHANISM": "PLAIN", "SLUICE_KAFKA_SASL_PASSWORD": "p"}, []string{"SLUICE_KAFKA_SASL_USERNAME"}},
		{"mechanism without password", map[string]string{"SLUICE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "SLUICE_KAFKA_SASL_USERNAME": "u"}, []string{"SLUICE_KAFKA_SASL_PASSWORD"}},
		{"username without mechanism", map[string]string{"SLUICE_KAFKA_SASL_USERNAME": "u", "SLUICE_KAFKA_SASL_PASSWORD": "p"}, []string{"SLUICE_KAFKA_SASL_MECHANISM"}},
		{"cert without key", map[string]string{"SLUICE_KAFKA_TLS_CERT_FILE": cert}, []string{"SLUICE_KAFKA_TLS_KEY_FILE"}},
		{"key without cert", map[string]string{"SLUICE_KAFKA_TLS_KEY_FILE": key}, []string{"SLUICE_KAFKA_TLS_CERT_FILE"}},
		{"unreadable CA file", map[string]string{"SLUICE_KAFKA_TLS_CA_FILE": missing}, []string{"SLUICE_KAFKA_TLS_CA_FILE"}},
		{"CA file is a directory", map[string]string{"SLUICE_KAFKA_TLS_CA_FILE": t.TempDir()}, []string{"SLUICE_KAFKA_TLS_CA_FILE"}},
		{"unreadable cert file", map[string]string{"SLUICE_KAFKA_TLS_CERT_FILE": missing, "SLUICE_KAFKA_TLS_KEY_FILE": key}, []string{"SLUICE_KAFKA_TLS_CERT_FILE"}},
		{"tls not a bool", map[string]string{"SLUICE_KAFKA_TLS": "maybe"}, []string{"SLUICE_KAFKA_TLS"}},
		{"skip verify not a bool", map[string]string{"SLUICE_KAFKA_TLS_INSECURE_SKIP_VERIFY": "please"}, []string{"SLUICE_KAFKA_TLS_INSECURE_SKIP_VERIFY"}},
		{"key and key file", map[string]string{"SLUICE_API_KEY": "sk-env", "SLUICE_API_KEY_FILE": keyFile}, []string{"SLUICE_API_KEY_FILE", "SLUICE_API_KEY "}},
		{"missing key file", map[string]string{"SLUICE_API_KEY_FILE": missing}, []string{"SLUICE_API_KEY_FILE"}},
		{"empty key file", map[string]string{"SLUICE_API_KEY_FILE": writeFile(t, "empty", " \n")}, []string{"SLUICE_API_KEY_FILE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, tc.env)
			_, err := config.LoadConsume()
			if err == nil {
				t.Fatalf("LoadConsume with %v: nil error", tc.env)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("err = %v, want it to wrap config.ErrInvalid", err)
			}
			for _, bad := range tc.bad {
				if !strings.Contains(err.Error()+" ", bad) {
					t.Errorf("err = %q, want it to name %s", err, strings.TrimSpace(bad))
				}
			}
			for _, secret := range []string{"sk-env", "sk-file"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("err = %q leaks a key", err)
				}
			}
		})
	}
}

func TestAPIKeyFile(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, "api-key", "sk-from-file\n")
	t.Setenv("SLUICE_API_KEY_FILE", path)
	t.Setenv("XAI_API_KEY", "xai-fallback") // not used: the file is the key
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyFile != path || c.Key != "" {
		t.Errorf("KeyFile = %q, Key = %q; want the file and no inline key", c.KeyFile, c.Key.Reveal())
	}
}

// TestSecretsNeverPrint: the SASL password and the API key, inline or
// from the file, appear in no rendering of the configuration, nor in the
// usage table.
func TestSecretsNeverPrint(t *testing.T) {
	const (
		password = "kafka-PASSWORD-0042"
		key      = "xai-KEYFILE-0042"
	)
	clearEnv(t)
	setEnv(t, map[string]string{
		"SLUICE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
		"SLUICE_KAFKA_SASL_USERNAME":  "sluice",
		"SLUICE_KAFKA_SASL_PASSWORD":  password,
		"SLUICE_API_KEY_FILE":         writeFile(t, "api-key", key+"\n"),
	})
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatal(err)
	}
	if c.SASLPassword.Reveal() != password {
		t.Fatalf("SASLPassword.Reveal() = %q, want the password", c.SASLPassword.Reveal())
	}
	sec, err := config.LoadKafkaSecurity()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	secJS, err := json.Marshal(sec)
	if err != nil {
		t.Fatal(err)
	}
	var usage bytes.Buffer
	if err := config.Usage(&usage, &c); err != nil { // a loaded config, not a zero one
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v config":        fmt.Sprintf("%v", c),
		"%+v config":       fmt.Sprintf("%+v", c),
		"%#v config":       fmt.Sprintf("%#v", c),
		"%+v kafka":        fmt.Sprintf("%+v", c.Kafka),
		"%+v security":     fmt.Sprintf("%+v", sec),
		"%s password":      fmt.Sprintf("%s", c.SASLPassword),
		"json config":      string(js),
		"json security":    string(secJS),
		"usage":            usage.String(),
		"warnings":         strings.Join(c.Warnings(), "\n"),
		"validation error": fmt.Sprint(c.Validate()),
	}
	for name, out := range outputs {
		for _, secret := range []string{password, key} {
			if strings.Contains(out, secret) {
				t.Errorf("%s leaks %q: %s", name, secret, out)
			}
		}
	}
	for _, name := range []string{"%+v config", "json config", "%+v security"} {
		if !strings.Contains(outputs[name], "[redacted]") {
			t.Errorf("%s = %s, want the password shown as [redacted]", name, outputs[name])
		}
	}
}

func TestUsageListsSecurity(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := config.Usage(&buf, &config.KafkaSecurity{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for line := range strings.Lines(buf.String()) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "SLUICE_") {
			got = append(got, f[0])
		}
	}
	want := []string{
		"SLUICE_KAFKA_TLS", "SLUICE_KAFKA_TLS_CA_FILE", "SLUICE_KAFKA_TLS_CERT_FILE", "SLUICE_KAFKA_TLS_KEY_FILE",
		"SLUICE_KAFKA_TLS_SERVER_NAME", "SLUICE_KAFKA_TLS_INSECURE_SKIP_VERIFY",
		"SLUICE_KAFKA_SASL_MECHANISM", "SLUICE_KAFKA_SASL_USERNAME", "SLUICE_KAFKA_SASL_PASSWORD",
	}
	if !slices.Equal(got, want) {
		t.Errorf("usage of KafkaSecurity lists %v, want %v", got, want)
	}
}
