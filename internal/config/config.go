// Package config holds sluice's environment configuration: one struct read
// with envconfig under the SLUICE_ prefix, a Validate that names the bad
// variable, and the usage table that --help prints.
//
//	cfg, err := config.Load()
//	if err != nil {
//		return err // e.g. "SLUICE_MAX_IN_FLIGHT: must be positive, got 0"
//	}
package config

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/sluice-dev/sluice/record"
)

// Prefix is the environment prefix of every sluice variable (the struct
// tags spell the full names).
const Prefix = "SLUICE"

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid configuration")

// Secret is a string that never prints: fmt, zerolog and JSON all see
// "[redacted]". Use Reveal where the raw value is needed.
type Secret string

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString keeps the secret out of %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalText keeps the secret out of JSON and structured logs.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the raw secret.
func (s Secret) Reveal() string { return string(s) }

// Kafka is how sluice reaches the brokers and which topics it uses.
type Kafka struct {
	Brokers     []string `envconfig:"SLUICE_BROKERS" default:"localhost:9092" desc:"seed brokers, comma-separated"`
	Group       string   `envconfig:"SLUICE_GROUP" default:"sluice" desc:"consumer group, or share group with SLUICE_GROUP_PROTOCOL=share"`
	InputTopic  string   `envconfig:"SLUICE_INPUT_TOPIC" default:"prompts" desc:"topic of prompt records"`
	OutputTopic string   `envconfig:"SLUICE_OUTPUT_TOPIC" default:"completions" desc:"topic of result records"`
	DLQTopic    string   `envconfig:"SLUICE_DLQ_TOPIC" default:"prompts.dlq" desc:"topic of dead letters (failed inputs, byte-for-byte)"`
	// SessionTimeout is how long the group waits for a silent member
	// (killed, partitioned) before giving its partitions to others.
	SessionTimeout time.Duration `envconfig:"SLUICE_SESSION_TIMEOUT" default:"45s" desc:"how long the group waits for a silent (crashed) member before moving its partitions"`
	// InstanceID makes the member static (KIP-345): a restarted replica
	// with the same id takes its partitions back at once, without a
	// rebalance; a dead one holds them until SessionTimeout.
	InstanceID string `envconfig:"SLUICE_INSTANCE_ID" desc:"static group membership id, stable across restarts (e.g. the StatefulSet pod name); empty = dynamic member"`
	// KafkaSecurity is TLS and SASL (security.go).
	KafkaSecurity
}

// API is the OpenAI-compatible API.
type API struct {
	BaseURL string `envconfig:"SLUICE_API_BASE_URL" default:"https://api.x.ai/v1" desc:"OpenAI-compatible base URL; the endpoint's path (/chat/completions, /responses, ...) is appended"`
	// Endpoint is where bare bodies and simple prompts go; Batch lines
	// name their own. "" is /v1/chat/completions.
	Endpoint       string        `envconfig:"SLUICE_ENDPOINT" default:"/v1/chat/completions" desc:"endpoint of bare bodies and simple prompts: /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/completions or /v1/moderations (Batch lines name their own url)"`
	Key            Secret        `envconfig:"SLUICE_API_KEY" desc:"bearer token (falls back to XAI_API_KEY); never logged"`
	KeyFile        string        `envconfig:"SLUICE_API_KEY_FILE" desc:"file holding the bearer token (trailing whitespace trimmed), re-read when it changes; instead of SLUICE_API_KEY"`
	Keyless        bool          `envconfig:"SLUICE_API_KEYLESS" default:"false" desc:"the endpoint needs no API key (e.g. a local vLLM or Ollama): start without one and send no Authorization header"`
	Model          string        `envconfig:"SLUICE_MODEL" default:"grok-4" desc:"model used when a request names none"`
	RequestTimeout time.Duration `envconfig:"SLUICE_REQUEST_TIMEOUT" default:"120s" desc:"timeout of one API attempt"`
	MaxAttempts    int           `envconfig:"SLUICE_MAX_ATTEMPTS" default:"6" desc:"attempts per record before it is dead-lettered"`
	RetryBase      time.Duration `envconfig:"SLUICE_RETRY_BASE" default:"500ms" desc:"first retry backoff (exponential, jittered)"`
	RetryMax       time.Duration `envconfig:"SLUICE_RETRY_MAX" default:"30s" desc:"cap of one retry backoff, and of one server-requested wait (Retry-After) for the record and the replica's global cooldown"`
	// Stream makes every call a streamed one; records whose body has
	// "stream": true are streamed whatever it says.
	Stream bool `envconfig:"SLUICE_STREAM" default:"false" desc:"stream every API call (records with stream true in the body are streamed anyway)"`
	// StreamTopic, when set, receives the token deltas of streamed calls.
	StreamTopic string `envconfig:"SLUICE_STREAM_TOPIC" desc:"topic of the token deltas of streamed calls, keyed by custom_id; empty = deltas are not published"`
	// StreamIdleTimeout is the longest silence of a stream, before its
	// first chunk included: a reasoning model thinks silently, so it must
	// exceed the slowest time to first token. SLUICE_REQUEST_TIMEOUT
	// still bounds the whole call.
	StreamIdleTimeout time.Duration `envconfig:"SLUICE_STREAM_IDLE_TIMEOUT" default:"60s" desc:"longest wait for a stream's next chunk (retried as a timeout); must exceed the slowest time to first token of reasoning models"`
}

// Limits bound how hard sluice drives the API and how much it buffers.
type Limits struct {
	MaxInFlight        int           `envconfig:"SLUICE_MAX_IN_FLIGHT" default:"256" desc:"global cap on concurrent API calls across all partitions"`
	RPM                int           `envconfig:"SLUICE_RPM" default:"0" desc:"requests-per-minute budget of the whole consumer group, smoothed per second (0 = off)"`
	TPM                int           `envconfig:"SLUICE_TPM" default:"0" desc:"tokens-per-minute budget of the whole consumer group, smoothed per second (0 = off)"`
	ModelLimits        ModelLimits   `envconfig:"SLUICE_MODEL_LIMITS" desc:"per-model budgets of the group, e.g. grok-4=rpm:600,tpm:2000000;grok-3-mini=rpm:1200"`
	QuotaProbeInterval time.Duration `envconfig:"SLUICE_QUOTA_PROBE_INTERVAL" default:"5s" desc:"while the API account is unusable (quota, 401, 403), how often one call probes it"`
	// MaxBufferedBytes bounds the memory of the records the member holds.
	MaxBufferedBytes ByteSize `envconfig:"SLUICE_MAX_BUFFERED_BYTES" default:"256MiB" desc:"bytes of fetched records held (queued and in flight), e.g. 64MiB; fetching pauses at the bound; a larger record is still processed, alone"`
}

// RemovedVariables are variables earlier versions read, with what took
// their place. Setting one is not an error (a rolling upgrade keeps the
// old environment), but it is reported at start.
var RemovedVariables = map[string]string{
	Prefix + "_PARTITION_WINDOW": "no longer used: memory is bounded by " + Prefix + "_MAX_BUFFERED_BYTES, calls in flight by " +
		Prefix + "_MAX_IN_FLIGHT, and a partition runs ahead of a slow record as far as its committed offset map can describe",
}

// SetRemoved returns the removed variables set in the environment, each
// with its note, sorted.
func SetRemoved() []string {
	var out []string
	for name, note := range RemovedVariables {
		if _, ok := os.LookupEnv(name); ok {
			out = append(out, name+": "+note)
		}
	}
	slices.Sort(out)
	return out
}

// Consume is the configuration of `sluice consume`.
type Consume struct {
	Kafka
	API
	Limits
	Delivery
	Share
	Output
	Batch
	HTTPAddr       string        `envconfig:"SLUICE_HTTP_ADDR" default:":8080" desc:"ops endpoint (/livez, /readyz, /metrics); empty = off"`
	CommitInterval time.Duration `envconfig:"SLUICE_COMMIT_INTERVAL" default:"1s" desc:"offsets commit as records finish (one commit at a time, at least 20ms apart; exactly-once: each ends the open transaction); a failed commit is retried after this"`
	DrainTimeout   time.Duration `envconfig:"SLUICE_DRAIN_TIMEOUT" default:"25s" desc:"on SIGTERM, how long in-flight records may finish"`
	RevokeTimeout  time.Duration `envconfig:"SLUICE_REVOKE_TIMEOUT" default:"15s" desc:"on rebalance, how long a revoked partition's records may finish"`
	LogLevel       string        `envconfig:"SLUICE_LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// LoadConsume reads the consume configuration from the environment and
// validates it.
func LoadConsume() (Consume, error) {
	var c Consume
	// Full names in the tags and an empty prefix: envconfig otherwise
	// falls back to the unprefixed name, and an unrelated API_KEY or
	// MODEL in the environment would be used.
	if err := envconfig.Process("", &c); err != nil {
		return c, EnvError(err)
	}
	if c.Key == "" && c.KeyFile == "" && !c.Keyless {
		c.Key = Secret(os.Getenv("XAI_API_KEY"))
	}
	return c, c.Validate()
}

// Validate checks every field and names the first bad variable.
func (c Consume) Validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return err
	}
	if err := c.API.Validate(); err != nil {
		return err
	}
	if err := c.API.validateStreamTopic(c.Kafka); err != nil {
		return err
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if err := c.Delivery.Validate(); err != nil {
		return err
	}
	if err := c.Share.Validate(c.Delivery); err != nil {
		return err
	}
	if err := c.Output.Validate(); err != nil {
		return err
	}
	if err := c.Batch.Validate(c.Kafka); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"COMMIT_INTERVAL", c.CommitInterval},
		{"DRAIN_TIMEOUT", c.DrainTimeout},
		{"REVOKE_TIMEOUT", c.RevokeTimeout},
	} {
		if d.v <= 0 {
			return invalid(d.name, "must be a positive duration, got %s", d.v)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return invalid("LOG_LEVEL", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return nil
}

// Validate checks the Kafka settings.
func (k Kafka) Validate() error {
	if len(k.Brokers) == 0 {
		return invalid("BROKERS", "must name at least one broker")
	}
	for _, b := range k.Brokers {
		if strings.TrimSpace(b) == "" {
			return invalid("BROKERS", "has an empty entry")
		}
	}
	for _, t := range []struct{ name, v string }{
		{"GROUP", k.Group},
		{"INPUT_TOPIC", k.InputTopic},
		{"OUTPUT_TOPIC", k.OutputTopic},
		{"DLQ_TOPIC", k.DLQTopic},
	} {
		if strings.TrimSpace(t.v) == "" {
			return invalid(t.name, "must not be empty")
		}
	}
	if k.SessionTimeout < 0 {
		return invalid("SESSION_TIMEOUT", "must not be negative, got %s", k.SessionTimeout)
	}
	if k.InputTopic == k.OutputTopic || k.InputTopic == k.DLQTopic {
		return invalid("INPUT_TOPIC", "must differ from SLUICE_OUTPUT_TOPIC and SLUICE_DLQ_TOPIC, got %q", k.InputTopic)
	}
	return k.KafkaSecurity.Validate()
}

// Validate checks the API settings.
func (a API) Validate() error {
	u, err := url.Parse(a.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalid("API_BASE_URL", "must be an absolute http(s) URL, got %q", a.BaseURL)
	}
	if a.Endpoint != "" && !record.SupportedEndpoint(a.Endpoint) {
		return invalid("ENDPOINT", "must be one of %s, got %q", strings.Join(record.Endpoints(), ", "), a.Endpoint)
	}
	if strings.TrimSpace(a.Model) == "" {
		return invalid("MODEL", "must not be empty")
	}
	if a.RequestTimeout <= 0 {
		return invalid("REQUEST_TIMEOUT", "must be a positive duration, got %s", a.RequestTimeout)
	}
	if a.MaxAttempts <= 0 {
		return invalid("MAX_ATTEMPTS", "must be positive, got %d", a.MaxAttempts)
	}
	if a.RetryBase <= 0 || a.RetryMax < a.RetryBase {
		return invalid("RETRY_BASE", "must be positive and at most SLUICE_RETRY_MAX, got %s", a.RetryBase)
	}
	if a.StreamIdleTimeout <= 0 {
		return invalid("STREAM_IDLE_TIMEOUT", "must be a positive duration, got %s", a.StreamIdleTimeout)
	}
	switch {
	case a.Keyless && (a.Key != "" || a.KeyFile != ""):
		return invalid("API_KEYLESS", "is true, yet SLUICE_API_KEY or SLUICE_API_KEY_FILE is set: unset one of them")
	case !a.Keyless && a.Key == "" && a.KeyFile == "":
		return invalid("API_KEY", "not set: set SLUICE_API_KEY, SLUICE_API_KEY_FILE or XAI_API_KEY, or SLUICE_API_KEYLESS=true for an endpoint that needs no key")
	}
	return a.validateKeyFile()
}

// validateStreamTopic checks that the stream topic, when set, is none of
// the topics of k.
func (a API) validateStreamTopic(k Kafka) error {
	if a.StreamTopic == "" {
		return nil
	}
	if strings.TrimSpace(a.StreamTopic) == "" {
		return invalid("STREAM_TOPIC", "must not be blank (unset it to publish no deltas)")
	}
	switch a.StreamTopic {
	case k.InputTopic, k.OutputTopic, k.DLQTopic:
		return invalid("STREAM_TOPIC", "must differ from SLUICE_INPUT_TOPIC, SLUICE_OUTPUT_TOPIC and SLUICE_DLQ_TOPIC, got %q", a.StreamTopic)
	}
	return nil
}

// Validate checks the limits.
func (l Limits) Validate() error {
	if l.MaxInFlight <= 0 {
		return invalid("MAX_IN_FLIGHT", "must be positive, got %d", l.MaxInFlight)
	}
	if l.RPM < 0 {
		return invalid("RPM", "must be zero (off) or positive, got %d", l.RPM)
	}
	if l.TPM < 0 {
		return invalid("TPM", "must be zero (off) or positive, got %d", l.TPM)
	}
	if l.QuotaProbeInterval <= 0 {
		return invalid("QUOTA_PROBE_INTERVAL", "must be a positive duration, got %s", l.QuotaProbeInterval)
	}
	if l.MaxBufferedBytes <= 0 {
		return invalid("MAX_BUFFERED_BYTES", "must be positive, got %d", l.MaxBufferedBytes)
	}
	return nil
}

func invalid(name, format string, args ...any) error {
	return fmt.Errorf("%w: %s_%s: %s", ErrInvalid, Prefix, name, fmt.Sprintf(format, args...))
}

// Usage writes the table of environment variables of spec (a pointer to a
// config struct) to w.
func Usage(w io.Writer, spec any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if err := envconfig.Usagef("", spec, tw, usageFormat); err != nil {
		return err
	}
	return tw.Flush()
}

const usageFormat = `Environment:
VARIABLE	DEFAULT	MEANING
{{range .}}{{usage_key .}}	{{usage_default .}}	{{usage_description .}}
{{end}}`
