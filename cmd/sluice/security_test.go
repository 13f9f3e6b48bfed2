package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/internal/kafkaconn"
)

const (
	saslUser     = "sluice"
	saslPassword = "kafka-PASSWORD-0042"
)

// startSASLKafka is a kfake cluster with sluice's topics that only lets
// saslUser in, with SCRAM-SHA-256.
func startSASLKafka(t testing.TB) []string {
	t.Helper()
	c, err := devkafka.Start(devkafka.Config{Partitions: 2, Opts: []kfake.Opt{
		kfake.EnableSASL(), kfake.Superuser(config.SASLScramSHA256, saslUser, saslPassword),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func saslSecurity(password string) config.KafkaSecurity {
	return config.KafkaSecurity{SASLMechanism: "scram-sha-256", SASLUsername: saslUser, SASLPassword: config.Secret(password)}
}

func saslEnv(t *testing.T, password string) {
	t.Helper()
	t.Setenv("SLUICE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
	t.Setenv("SLUICE_KAFKA_SASL_USERNAME", saslUser)
	t.Setenv("SLUICE_KAFKA_SASL_PASSWORD", password)
}

// keyAPI is a chat-completions endpoint that records the bearer tokens it
// is sent.
type keyAPI struct {
	mu   sync.Mutex
	keys map[string]int
}

func (a *keyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.keys[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]++
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"grok-4","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
}

func (a *keyAPI) saw(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys[key] > 0
}

// TestServeWrongSASLPassword: a wrong password is a startup error naming
// the variables, within moments, not a hang until the ping deadline.
func TestServeWrongSASLPassword(t *testing.T) {
	t.Parallel()
	s := newTestStack(t, 1) // for a valid configuration
	cfg := s.cfg
	cfg.Brokers = startSASLKafka(t)
	cfg.KafkaSecurity = saslSecurity("wrong-password")
	var logs syncBuffer
	start := time.Now()
	err := serve(context.Background(), cfg, zerolog.New(&logs), pipelineOptions{})
	took := time.Since(start)
	t.Logf("serve failed after %s: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, kafkaconn.ErrAuth) {
		t.Fatalf("serve = %v, want kafkaconn.ErrAuth", err)
	}
	for _, name := range []string{"SLUICE_KAFKA_SASL_USERNAME", "SLUICE_KAFKA_SASL_PASSWORD"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("serve = %q, want it to name %s", err, name)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("serve waited for the ping deadline (%v), want a prompt error", err)
	}
	if strings.Contains(err.Error()+logs.String(), "wrong-password") {
		t.Errorf("the password leaks: %v\n%s", err, logs.String())
	}
}

// TestProcessWrongSASLPassword runs the real `sluice consume` with a wrong
// password in its environment: it exits 1 at once, naming the variables.
func TestProcessWrongSASLPassword(t *testing.T) {
	t.Parallel()
	brokers := startSASLKafka(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"SLUICE_TEST_RUN_MAIN=1",
		"SLUICE_TEST_ARGS=consume",
		"SLUICE_BROKERS="+strings.Join(brokers, ","),
		"SLUICE_HTTP_ADDR=",
		"SLUICE_KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
		"SLUICE_KAFKA_SASL_USERNAME="+saslUser,
		"SLUICE_KAFKA_SASL_PASSWORD=wrong-password",
		"SLUICE_API_KEY=sk-test-secret",
	)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	// A hang would end at the child's 30s ping deadline with "cannot
	// reach Kafka": the message below tells a prompt refusal from it.
	err := cmd.Run()
	took := time.Since(start)
	t.Logf("sluice consume exited after %s (%v): %s", took.Round(time.Millisecond), err, stderr.String())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit = %v, want status 1", err)
	}
	out := stderr.String()
	if !strings.Contains(out, "SLUICE_KAFKA_SASL_PASSWORD") || strings.Contains(out, "wrong-password") {
		t.Errorf("stderr = %q, want the variable named and the password not shown", out)
	}
	if strings.Contains(out, "cannot reach Kafka") {
		t.Errorf("stderr = %q: it waited for the ping deadline, want a prompt refusal", out)
	}
}

// TestServeSASLAndKeyFile runs a member over SCRAM with the API key in a
// file, then rotates the file as a writer that renames does: the new key
// is sent without a restart, and neither secret is logged.
func TestServeSASLAndKeyFile(t *testing.T) {
	t.Parallel()
	api := &keyAPI{keys: map[string]int{}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	keyFile := filepath.Join(t.TempDir(), "api-key")
	if err := os.WriteFile(keyFile, []byte("key-ONE-0042\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	s := newTestStack(t, 1) // for a valid configuration
	cfg := s.cfg
	cfg.Brokers = startSASLKafka(t)
	cfg.KafkaSecurity = saslSecurity(saslPassword)
	cfg.BaseURL, cfg.Key, cfg.KeyFile, cfg.Keyless = srv.URL+"/v1", "", keyFile, false
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, zerolog.New(&logs).Level(zerolog.InfoLevel), pipelineOptions{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if out := logs.String(); strings.Contains(out, saslPassword) || strings.Contains(out, "key-ONE") || strings.Contains(out, "key-TWO") {
			t.Errorf("a secret appears in the logs:\n%s", out)
		}
	})

	opts, err := kafkaconn.Opts(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic(cfg.InputTopic))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	// waitKey produces a prompt every 100ms until the API saw key: the
	// secret file is looked at every 5s, so a rotation shows within that.
	waitKey := func(key string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for i := 0; !api.saw(key); i++ {
			if time.Now().After(deadline) {
				t.Fatalf("the API never saw %s; logs:\n%s", key, logs.String())
			}
			select {
			case err := <-done:
				t.Fatalf("serve stopped: %v", err)
			default:
			}
			rec := &kgo.Record{Value: fmt.Appendf(nil, `{"custom_id":"%s-%d","prompt":"hi"}`, key, i)}
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitKey("key-ONE-0042")
	tmp := keyFile + ".tmp"
	if err := os.WriteFile(tmp, []byte("key-TWO-0042\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, keyFile); err != nil {
		t.Fatal(err)
	}
	waitKey("key-TWO-0042")
}

// TestSubmitSASL: submit and collect read SLUICE_KAFKA_* from the
// environment; a wrong password fails at once, naming the variables.
func TestSubmitSASL(t *testing.T) {
	brokers := strings.Join(startSASLKafka(t), ",")
	in := writeLines(t, []string{`{"custom_id":"s-1","prompt":"hi"}`})
	state := t.TempDir()

	saslEnv(t, saslPassword)
	out, stderr, err := runCLI(t, submit, "", "--brokers", brokers, "--state-dir", state, in)
	if err != nil || !strings.Contains(out, "submitted 1, rejected 0") {
		t.Fatalf("submit over SASL = %v\n%s\n%s", err, out, stderr)
	}

	saslEnv(t, "wrong-password")
	for name, cmd := range map[string]func(context.Context, []string, stdio) error{"submit": submit, "collect": collect} {
		args := []string{"--brokers", brokers, "--state-dir", state, in}
		if name == "collect" {
			args = []string{"--brokers", brokers, "--follow"}
		}
		start := time.Now()
		_, stderr, err := runCLI(t, cmd, "", args...)
		took := time.Since(start)
		t.Logf("%s failed after %s: %v", name, took.Round(time.Millisecond), err)
		if !errors.Is(err, kafkaconn.ErrAuth) || !strings.Contains(fmt.Sprint(err), "SLUICE_KAFKA_SASL_PASSWORD") {
			t.Errorf("%s with a wrong password = %v, want kafkaconn.ErrAuth naming SLUICE_KAFKA_SASL_PASSWORD", name, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s waited for its deadline (%v), want a prompt error", name, err)
		}
		if strings.Contains(fmt.Sprint(err)+stderr, "wrong-password") {
			t.Errorf("%s leaks the password", name)
		}
	}

	t.Setenv("SLUICE_KAFKA_SASL_MECHANISM", "KERBEROS")
	if _, _, err := runCLI(t, submit, "", "--brokers", brokers, in); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "SLUICE_KAFKA_SASL_MECHANISM") {
		t.Errorf("submit with an unknown mechanism = %v, want config.ErrInvalid naming SLUICE_KAFKA_SASL_MECHANISM", err)
	}
}

// TestHelpHidesSecrets: with the SASL password and the API key in the
// environment, no --help shows them, and every help lists the security
// variables.
func TestHelpHidesSecrets(t *testing.T) {
	const key = "xai-INLINE-0042"
	saslEnv(t, saslPassword)
	t.Setenv("SLUICE_API_KEY", key)
	t.Setenv("XAI_API_KEY", key)

	var top bytes.Buffer
	usage(&top)
	helps := map[string]string{"sluice --help": top.String()}
	for name, cmd := range map[string]func(context.Context, []string, stdio) error{"submit": submit, "collect": collect} {
		stdout, _, err := runCLI(t, cmd, "", "--help")
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help = %v", name, err)
		}
		helps[name+" --help"] = stdout
	}
	for name, out := range helps {
		if strings.Contains(out, saslPassword) || strings.Contains(out, key) {
			t.Errorf("%s shows a secret:\n%s", name, out)
		}
		for _, v := range []string{"SLUICE_KAFKA_TLS_CA_FILE", "SLUICE_KAFKA_SASL_MECHANISM", "SLUICE_KAFKA_SASL_PASSWORD"} {
			if !strings.Contains(out, v) {
				t.Errorf("%s does not list %s:\n%s", name, v, out)
			}
		}
	}
	if !strings.Contains(helps["sluice --help"], "SLUICE_API_KEY_FILE") {
		t.Errorf("sluice --help does not list SLUICE_API_KEY_FILE:\n%s", helps["sluice --help"])
	}
}
