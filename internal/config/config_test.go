package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/config"
)

// names lists the envconfig names (without prefix) of every field of the
// struct type t, embedded structs included.
func names(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, names(f.Type)...)
			continue
		}
		if n := f.Tag.Get("envconfig"); n != "" {
			out = append(out, strings.TrimPrefix(n, config.Prefix+"_"))
		}
	}
	return out
}

// allNames is every variable of `sluice consume`. It is spelled out so the
// test fails if the reflection above ever finds nothing.
var allNames = []string{
	"BROKERS", "GROUP", "INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC", "SESSION_TIMEOUT", "INSTANCE_ID",
	"KAFKA_TLS", "KAFKA_TLS_CA_FILE", "KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE", "KAFKA_TLS_SERVER_NAME",
	"KAFKA_TLS_INSECURE_SKIP_VERIFY", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
	"API_BASE_URL", "API_KEY", "API_KEY_FILE", "MODEL", "REQUEST_TIMEOUT", "MAX_ATTEMPTS", "RETRY_BASE", "RETRY_MAX",
	"STREAM", "STREAM_TOPIC", "STREAM_IDLE_TIMEOUT",
	"MAX_IN_FLIGHT", "RPM", "TPM", "MODEL_LIMITS", "QUOTA_PROBE_INTERVAL", "MAX_BUFFERED_BYTES",
	"DELIVERY", "ORDERING", "TRANSACTIONAL_ID", "RECORD_DEADLINE",
	"HTTP_ADDR", "COMMIT_INTERVAL", "DRAIN_TIMEOUT", "ENDPOINT", "REVOKE_TIMEOUT", "LOG_LEVEL",
	"API_KEYLESS", "COMPRESSION", "GROUP_PROTOCOL", "SHARE_RESET", "MAX_DELIVERIES",
	"TIER", "BATCH_API", "BATCH_MAX_REQUESTS", "BATCH_MAX_WAIT", "BATCH_POLL_INTERVAL", "BATCH_JOBS_TOPIC",
}

// testKey is the XAI_API_KEY of every test's environment unless it says
// otherwise: a consumer without a key does not start.
const testKey = "xai-test-key"

// clearEnv unsets every variable LoadConsume may read, and their unprefixed
// twins (which it must ignore), restoring them after t.
func clearEnv(t *testing.T) {
	t.Helper()
	vars := []string{"XAI_API_KEY"}
	for _, n := range append(slices.Clone(allNames), names(reflect.TypeFor[config.Consume]())...) {
		vars = append(vars, config.Prefix+"_"+n, n)
	}
	for _, v := range vars {
		t.Setenv(v, "") // registers the restore
		if err := os.Unsetenv(v); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("XAI_API_KEY", testKey)
}

// TestUnprefixedNamesIgnored: an unrelated API_KEY or MODEL in the
// environment must never be picked up (envconfig's fallback for tags).
func TestUnprefixedNamesIgnored(t *testing.T) {
	clearEnv(t)
	t.Setenv("API_KEY", "not-ours")
	t.Setenv("MODEL", "not-ours")
	t.Setenv("MAX_IN_FLIGHT", "0")
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatal(err)
	}
	if c.Key.Reveal() != testKey || c.Model != "grok-4" || c.MaxInFlight != 256 {
		t.Fatalf("unprefixed variables were read: key=%q model=%q max_in_flight=%d", c.Key.Reveal(), c.Model, c.MaxInFlight)
	}
}

func TestNamesMatchStruct(t *testing.T) {
	got := names(reflect.TypeFor[config.Consume]())
	slices.Sort(got)
	want := slices.Clone(allNames)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Consume variables = %v, want %v (update allNames)", got, want)
	}
}

func TestLoadConsumeDefaults(t *testing.T) {
	clearEnv(t)
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatalf("LoadConsume with an empty environment: %v", err)
	}
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"SLUICE_BROKERS", c.Brokers, []string{"localhost:9092"}},
		{"SLUICE_GROUP", c.Group, "sluice"},
		{"SLUICE_INPUT_TOPIC", c.InputTopic, "prompts"},
		{"SLUICE_OUTPUT_TOPIC", c.OutputTopic, "completions"},
		{"SLUICE_DLQ_TOPIC", c.DLQTopic, "prompts.dlq"},
		{"SLUICE_API_BASE_URL", c.BaseURL, "https://api.x.ai/v1"},
		{"SLUICE_API_KEY", c.Key.Reveal(), testKey}, // from XAI_API_KEY
		{"SLUICE_API_KEYLESS", c.Keyless, false},
		{"SLUICE_COMPRESSION", c.Compression, "gzip"},
		{"SLUICE_MODEL", c.Model, "grok-4"},
		{"SLUICE_MAX_IN_FLIGHT", c.MaxInFlight, 256},
		{"SLUICE_RPM", c.RPM, 0},
		{"SLUICE_REQUEST_TIMEOUT", c.RequestTimeout, 120 * time.Second},
		{"SLUICE_MAX_ATTEMPTS", c.MaxAttempts, 6},
		{"SLUICE_RETRY_BASE", c.RetryBase, 500 * time.Millisecond},
		{"SLUICE_RETRY_MAX", c.RetryMax, 30 * time.Second},
		{"SLUICE_STREAM", c.Stream, false},
		{"SLUICE_STREAM_TOPIC", c.StreamTopic, ""},
		{"SLUICE_STREAM_IDLE_TIMEOUT", c.StreamIdleTimeout, 60 * time.Second},
		{"SLUICE_ENDPOINT", c.Endpoint, "/v1/chat/completions"},
		{"SLUICE_MAX_BUFFERED_BYTES", c.MaxBufferedBytes, config.ByteSize(256 << 20)},
		{"SLUICE_HTTP_ADDR", c.HTTPAddr, ":8080"},
		{"SLUICE_COMMIT_INTERVAL", c.CommitInterval, time.Second},
		{"SLUICE_DRAIN_TIMEOUT", c.DrainTimeout, 25 * time.Second},
		{"SLUICE_REVOKE_TIMEOUT", c.RevokeTimeout, 15 * time.Second},
		{"SLUICE_LOG_LEVEL", c.LogLevel, "info"},
		{"SLUICE_GROUP_PROTOCOL", c.GroupProtocol, "consumer"},
		{"SLUICE_SHARE_RESET", c.ShareReset, "earliest"},
		{"SLUICE_MAX_DELIVERIES", c.MaxDeliveries, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("%s default = %#v, want %#v", tc.name, tc.got, tc.want)
			}
		})
	}
}

func TestLoadConsumeOverrides(t *testing.T) {
	clearEnv(t)
	for k, v := range map[string]string{
		"SLUICE_BROKERS":         "k1:9092,k2:9092",
		"SLUICE_OUTPUT_TOPIC":    "out",
		"SLUICE_API_BASE_URL":    "http://127.0.0.1:8000/v1/",
		"SLUICE_MAX_IN_FLIGHT":   "8",
		"SLUICE_RPM":             "600",
		"SLUICE_REQUEST_TIMEOUT": "1500ms",
		"SLUICE_LOG_LEVEL":       "DEBUG",
		"SLUICE_HTTP_ADDR":       "",
	} {
		t.Setenv(k, v)
	}
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatalf("LoadConsume: %v", err)
	}
	if !slices.Equal(c.Brokers, []string{"k1:9092", "k2:9092"}) || c.OutputTopic != "out" ||
		c.BaseURL != "http://127.0.0.1:8000/v1/" || c.MaxInFlight != 8 || c.RPM != 600 ||
		c.RequestTimeout != 1500*time.Millisecond || c.LogLevel != "DEBUG" || c.HTTPAddr != "" {
		t.Errorf("LoadConsume = %+v, overrides not applied", c)
	}
}

func TestAPIKeyFallback(t *testing.T) {
	for _, tc := range []struct {
		name         string
		sluice, xai  string
		want         string
		setSluice    bool
		setXAIApiKey bool
	}{
		{name: "XAI_API_KEY only", xai: "xai-fallback", setXAIApiKey: true, want: "xai-fallback"},
		{name: "SLUICE_API_KEY only", sluice: "sk-primary", setSluice: true, want: "sk-primary"},
		{name: "SLUICE_API_KEY wins", sluice: "sk-primary", xai: "xai-fallback", setSluice: true, setXAIApiKey: true, want: "sk-primary"},
		{name: "empty SLUICE_API_KEY falls back", sluice: "", xai: "xai-fallback", setSluice: true, setXAIApiKey: true, want: "xai-fallback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			os.Unsetenv("XAI_API_KEY")
			if tc.setSluice {
				t.Setenv("SLUICE_API_KEY", tc.sluice)
			}
			if tc.setXAIApiKey {
				t.Setenv("XAI_API_KEY", tc.xai)
			}
			c, err := config.LoadConsume()
			if err != nil {
				t.Fatalf("LoadConsume: %v", err)
			}
			if got := c.Key.Reveal(); got != tc.want {
				t.Errorf("Key = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLoadConsumeInvalid(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		bad  string // the variable the error must name
	}{
		{"empty output topic", map[string]string{"SLUICE_OUTPUT_TOPIC": ""}, "SLUICE_OUTPUT_TOPIC"},
		{"blank input topic", map[string]string{"SLUICE_INPUT_TOPIC": "  "}, "SLUICE_INPUT_TOPIC"},
		{"empty dlq topic", map[string]string{"SLUICE_DLQ_TOPIC": ""}, "SLUICE_DLQ_TOPIC"},
		{"empty group", map[string]string{"SLUICE_GROUP": ""}, "SLUICE_GROUP"},
		{"input is output", map[string]string{"SLUICE_INPUT_TOPIC": "completions"}, "SLUICE_INPUT_TOPIC"},
		{"input is dlq", map[string]string{"SLUICE_INPUT_TOPIC": "prompts.dlq"}, "SLUICE_INPUT_TOPIC"},
		{"empty brokers", map[string]string{"SLUICE_BROKERS": ""}, "SLUICE_BROKERS"},
		{"empty broker entry", map[string]string{"SLUICE_BROKERS": "a:9092,,b:9092"}, "SLUICE_BROKERS"},
		{"max in flight 0", map[string]string{"SLUICE_MAX_IN_FLIGHT": "0"}, "SLUICE_MAX_IN_FLIGHT"},
		{"max in flight negative", map[string]string{"SLUICE_MAX_IN_FLIGHT": "-4"}, "SLUICE_MAX_IN_FLIGHT"},
		{"max in flight non-numeric", map[string]string{"SLUICE_MAX_IN_FLIGHT": "lots"}, "SLUICE_MAX_IN_FLIGHT"},
		{"rpm -1", map[string]string{"SLUICE_RPM": "-1"}, "SLUICE_RPM"},
		{"rpm non-numeric", map[string]string{"SLUICE_RPM": "10/s"}, "SLUICE_RPM"},
		{"ftp url", map[string]string{"SLUICE_API_BASE_URL": "ftp://x"}, "SLUICE_API_BASE_URL"},
		{"not a url", map[string]string{"SLUICE_API_BASE_URL": "not a url"}, "SLUICE_API_BASE_URL"},
		{"url without host", map[string]string{"SLUICE_API_BASE_URL": "https:///v1"}, "SLUICE_API_BASE_URL"},
		{"empty model", map[string]string{"SLUICE_MODEL": " "}, "SLUICE_MODEL"},
		{"max attempts 0", map[string]string{"SLUICE_MAX_ATTEMPTS": "0"}, "SLUICE_MAX_ATTEMPTS"},
		{"max attempts non-numeric", map[string]string{"SLUICE_MAX_ATTEMPTS": "six"}, "SLUICE_MAX_ATTEMPTS"},
		{"request timeout 0s", map[string]string{"SLUICE_REQUEST_TIMEOUT": "0s"}, "SLUICE_REQUEST_TIMEOUT"},
		{"request timeout no unit", map[string]string{"SLUICE_REQUEST_TIMEOUT": "120"}, "SLUICE_REQUEST_TIMEOUT"},
		{"retry base above max", map[string]string{"SLUICE_RETRY_BASE": "1m"}, "SLUICE_RETRY_BASE"},
		{"stream not a bool", map[string]string{"SLUICE_STREAM": "sometimes"}, "SLUICE_STREAM"},
		{"stream idle timeout 0s", map[string]string{"SLUICE_STREAM_IDLE_TIMEOUT": "0s"}, "SLUICE_STREAM_IDLE_TIMEOUT"},
		{"stream idle timeout negative", map[string]string{"SLUICE_STREAM_IDLE_TIMEOUT": "-1s"}, "SLUICE_STREAM_IDLE_TIMEOUT"},
		{"endpoint not served", map[string]string{"SLUICE_ENDPOINT": "/v1/images/generations"}, "SLUICE_ENDPOINT"},
		{"stream topic blank", map[string]string{"SLUICE_STREAM_TOPIC": " "}, "SLUICE_STREAM_TOPIC"},
		{"stream topic is input", map[string]string{"SLUICE_STREAM_TOPIC": "prompts"}, "SLUICE_STREAM_TOPIC"},
		{"stream topic is output", map[string]string{"SLUICE_STREAM_TOPIC": "completions"}, "SLUICE_STREAM_TOPIC"},
		{"stream topic is dlq", map[string]string{"SLUICE_STREAM_TOPIC": "prompts.dlq"}, "SLUICE_STREAM_TOPIC"},
		{"max buffered bytes 0", map[string]string{"SLUICE_MAX_BUFFERED_BYTES": "0"}, "SLUICE_MAX_BUFFERED_BYTES"},
		{"max buffered bytes unknown unit", map[string]string{"SLUICE_MAX_BUFFERED_BYTES": "64MB"}, "SLUICE_MAX_BUFFERED_BYTES"},
		{"max buffered bytes overflow", map[string]string{"SLUICE_MAX_BUFFERED_BYTES": "9999999999GiB"}, "SLUICE_MAX_BUFFERED_BYTES"},
		{"drain timeout negative", map[string]string{"SLUICE_DRAIN_TIMEOUT": "-1s"}, "SLUICE_DRAIN_TIMEOUT"},
		{"commit interval 0", map[string]string{"SLUICE_COMMIT_INTERVAL": "0s"}, "SLUICE_COMMIT_INTERVAL"},
		{"revoke timeout non-duration", map[string]string{"SLUICE_REVOKE_TIMEOUT": "soon"}, "SLUICE_REVOKE_TIMEOUT"},
		{"log level", map[string]string{"SLUICE_LOG_LEVEL": "trace"}, "SLUICE_LOG_LEVEL"},
		{"compression", map[string]string{"SLUICE_COMPRESSION": "brotli"}, "SLUICE_COMPRESSION"},
		{"keyless with a key", map[string]string{"SLUICE_API_KEYLESS": "true", "SLUICE_API_KEY": "sk-1"}, "SLUICE_API_KEYLESS"},
		{"keyless not a bool", map[string]string{"SLUICE_API_KEYLESS": "yes please"}, "SLUICE_API_KEYLESS"},
		{"tier", map[string]string{"SLUICE_TIER": "later"}, "SLUICE_TIER"},
		{"batch api", map[string]string{"SLUICE_BATCH_API": "anthropic"}, "SLUICE_BATCH_API"},
		{"batch max requests negative", map[string]string{"SLUICE_BATCH_MAX_REQUESTS": "-1"}, "SLUICE_BATCH_MAX_REQUESTS"},
		{"batch max requests over openai's", map[string]string{"SLUICE_BATCH_API": "openai", "SLUICE_BATCH_MAX_REQUESTS": "50001"}, "SLUICE_BATCH_MAX_REQUESTS"},
		{"batch max wait negative", map[string]string{"SLUICE_BATCH_MAX_WAIT": "-1s"}, "SLUICE_BATCH_MAX_WAIT"},
		{"batch poll interval negative", map[string]string{"SLUICE_BATCH_POLL_INTERVAL": "-1s"}, "SLUICE_BATCH_POLL_INTERVAL"},
		{"batch jobs topic is output", map[string]string{"SLUICE_BATCH_JOBS_TOPIC": "completions"}, "SLUICE_BATCH_JOBS_TOPIC"},
		{"batch jobs topic blank", map[string]string{"SLUICE_BATCH_JOBS_TOPIC": " "}, "SLUICE_BATCH_JOBS_TOPIC"},
		{"group protocol", map[string]string{"SLUICE_GROUP_PROTOCOL": "classic"}, "SLUICE_GROUP_PROTOCOL"},
		{"share reset", map[string]string{"SLUICE_SHARE_RESET": "none"}, "SLUICE_SHARE_RESET"},
		{"max deliveries 1", map[string]string{"SLUICE_MAX_DELIVERIES": "1"}, "SLUICE_MAX_DELIVERIES"},
		{"share with exactly-once", map[string]string{"SLUICE_GROUP_PROTOCOL": "share", "SLUICE_DELIVERY": "exactly-once"}, "SLUICE_DELIVERY=exactly-once"},
		{"share with key ordering", map[string]string{"SLUICE_GROUP_PROTOCOL": "share", "SLUICE_ORDERING": "key"}, "SLUICE_ORDERING=key"},
		{"share with partition ordering", map[string]string{"SLUICE_GROUP_PROTOCOL": "share", "SLUICE_ORDERING": "partition"}, "SLUICE_ORDERING=partition"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := config.LoadConsume()
			if err == nil {
				t.Fatalf("LoadConsume with %v: nil error", tc.env)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("err = %v, want it to wrap config.ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("err = %q, want it to name %s", err, tc.bad)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	clearEnv(t)
	const key = "xai-SUPERSECRET-0042"
	t.Setenv("SLUICE_API_KEY", key)
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatal(err)
	}
	if c.Key.Reveal() != key {
		t.Fatalf("Reveal() = %q, want the key", c.Key.Reveal())
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	keyJS, err := json.Marshal(c.Key)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v key":          fmt.Sprintf("%v", c.Key),
		"%s key":          fmt.Sprintf("%s", c.Key),
		"%q key":          fmt.Sprintf("%q", c.Key),
		"%v config":       fmt.Sprintf("%v", c),
		"%+v config":      fmt.Sprintf("%+v", c),
		"%v api":          fmt.Sprintf("%v", c.API),
		"%v pointer":      fmt.Sprintf("%v", &c),
		"Sprint key":      fmt.Sprint(c.Key),
		"json config":     string(js),
		"json key":        string(keyJS),
		"Println-ish key": fmt.Sprintln("key:", c.Key),
	}
	for name, out := range outputs {
		if strings.Contains(out, key) {
			t.Errorf("%s leaks the key: %s", name, out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("%s = %s, want [redacted] in it", name, out)
		}
	}
	if got := config.Secret("").String(); got != "" {
		t.Errorf(`Secret("").String() = %q, want ""`, got)
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var buf bytes.Buffer
	if err := config.Usage(&buf, &config.Consume{}); err != nil {
		t.Fatalf("Usage: %v", err)
	}
	out := buf.String()
	for _, n := range append(slices.Clone(allNames), names(reflect.TypeFor[config.Consume]())...) {
		if !strings.Contains(out, config.Prefix+"_"+n) {
			t.Errorf("usage does not list %s_%s:\n%s", config.Prefix, n, out)
		}
	}
	for _, want := range []string{"localhost:9092", "grok-4", "never logged"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want config.ByteSize
		text string
	}{
		{"268435456", 256 << 20, "256MiB"},
		{"256MiB", 256 << 20, "256MiB"},
		{" 64 KiB ", 64 << 10, "64KiB"},
		{"1GiB", 1 << 30, "1GiB"},
		{"1000", 1000, "1000"},
		{"1000B", 1000, "1000"},
		{"1536KiB", 1536 << 10, "1536KiB"},
	} {
		var b config.ByteSize
		if err := b.Decode(tc.in); err != nil || b != tc.want || b.String() != tc.text {
			t.Errorf("Decode(%q) = %d (%q), %v; want %d (%q)", tc.in, b, b.String(), err, tc.want, tc.text)
		}
	}
	for _, bad := range []string{"", "-1", "1.5MiB", "64MB", "MiB", "9223372036854775807KiB"} {
		var b config.ByteSize
		if err := b.Decode(bad); err == nil {
			t.Errorf("Decode(%q) = %d, want an error", bad, b)
		}
	}
}

func TestRemovedVariableIsReported(t *testing.T) {
	clearEnv(t)
	t.Setenv("SLUICE_PARTITION_WINDOW", "1024")
	if _, err := config.LoadConsume(); err != nil {
		t.Fatalf("a removed variable must not stop the start: %v", err)
	}
	notes := config.SetRemoved()
	if len(notes) != 1 || !strings.Contains(notes[0], "SLUICE_PARTITION_WINDOW") || !strings.Contains(notes[0], "SLUICE_MAX_BUFFERED_BYTES") {
		t.Fatalf("notes = %q", notes)
	}
}

// TestMissingAPIKey: with no key anywhere, consume refuses to start with
// one line naming every way to give one, and the way to say there is none.
func TestMissingAPIKey(t *testing.T) {
	clearEnv(t)
	os.Unsetenv("XAI_API_KEY")
	_, err := config.LoadConsume()
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("LoadConsume without a key = %v, want ErrInvalid", err)
	}
	for _, name := range []string{"SLUICE_API_KEY", "SLUICE_API_KEY_FILE", "XAI_API_KEY", "SLUICE_API_KEYLESS=true"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("err = %q, want it to name %s", err, name)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("err = %q, want one line", err)
	}

	// A keyless endpoint starts without one, and ignores XAI_API_KEY,
	// which may be in the environment for other tools.
	t.Setenv("XAI_API_KEY", testKey)
	t.Setenv("SLUICE_API_KEYLESS", "true")
	t.Setenv("SLUICE_API_BASE_URL", "http://127.0.0.1:11434/v1")
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatalf("keyless: %v", err)
	}
	if !c.Keyless || c.Key != "" {
		t.Errorf("keyless: Keyless=%v, key %q; want true and no key", c.Keyless, c.Key.Reveal())
	}
}

// TestEnvParseErrors: a value of the wrong form is one line naming the
// variable and the form, not envconfig's message.
func TestEnvParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"SLUICE_DRAIN_TIMEOUT", "25", `invalid configuration: SLUICE_DRAIN_TIMEOUT: "25" is not a duration; give a number with a unit, e.g. 25s, 500ms or 2m`},
		{"SLUICE_MAX_IN_FLIGHT", "lots", `invalid configuration: SLUICE_MAX_IN_FLIGHT: "lots" is not a whole number`},
		{"SLUICE_STREAM", "sometimes", `invalid configuration: SLUICE_STREAM: "sometimes" is not true or false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.name, tc.value)
			_, err := config.LoadConsume()
			if err == nil || err.Error() != tc.want {
				t.Errorf("err = %v\nwant  %s", err, tc.want)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("err = %v, want it to wrap ErrInvalid", err)
			}
		})
	}
	t.Run("model limits", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("SLUICE_MODEL_LIMITS", "grok-4=rpm")
		_, err := config.LoadConsume()
		if err == nil || !strings.HasPrefix(err.Error(), "invalid configuration: SLUICE_MODEL_LIMITS: ") || strings.Contains(err.Error(), "envconfig") {
			t.Errorf("err = %v, want it to start with the variable, without envconfig's wording", err)
		}
	})
}

// A Batch built in code means what the tags' defaults say.
func TestBatchDefaultsMatchTags(t *testing.T) {
	clearEnv(t)
	c, err := config.LoadConsume()
	if err != nil {
		t.Fatal(err)
	}
	if got := (config.Batch{}).WithDefaults(); got != c.Batch || c.Batch.WithDefaults() != c.Batch {
		t.Fatalf("WithDefaults %+v, the tags %+v", got, c.Batch)
	}
	if c.JobsTopic("prompts") != "prompts.batches" {
		t.Fatalf("jobs topic %q", c.JobsTopic("prompts"))
	}
}
