package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// partitionsVar is the variable of the compose topic job that holds the
// input topic's partition count.
const partitionsVar = "INPUT_PARTITIONS"

// compose is the part of the Compose specification docker-compose.yml uses.
type compose struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]*struct{}      `json:"volumes"`
}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string            `json:"context"`
		Dockerfile string            `json:"dockerfile"`
		Args       map[string]string `json:"args"`
	} `json:"build"`
	Entrypoint  []string          `json:"entrypoint"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Ports       []string          `json:"ports"`
	Volumes     []string          `json:"volumes"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		Timeout     string   `json:"timeout"`
		Retries     int      `json:"retries"`
		StartPeriod string   `json:"start_period"`
	} `json:"healthcheck"`
	Restart         string   `json:"restart"`
	ReadOnly        bool     `json:"read_only"`
	CapDrop         []string `json:"cap_drop"`
	SecurityOpt     []string `json:"security_opt"`
	StopGracePeriod string   `json:"stop_grace_period"`
}

// isSluice reports whether the service runs the image built from the
// repository.
func (s composeService) isSluice() bool { return s.Build != nil }

// decodeCompose decodes a compose file strictly. Top-level x-* extension
// fields are dropped first: Compose ignores them, and their content reaches
// the services through YAML anchors, where it is decoded.
func decodeCompose(raw []byte) (*compose, error) {
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, err
	}
	for k := range top {
		if strings.HasPrefix(k, "x-") {
			delete(top, k)
		}
	}
	if j, err = json.Marshal(top); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var c compose
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if len(c.Services) == 0 {
		return nil, fmt.Errorf("no services")
	}
	return &c, nil
}

func readCompose(t *testing.T) *compose {
	t.Helper()
	docs, err := readDocuments(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", composeFile, len(docs))
	}
	c, err := decodeCompose(docs[0].raw)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return c
}

func (c *compose) envUses(where string) []envUse {
	var uses []envUse
	for name, s := range c.Services {
		for k := range s.Environment {
			uses = append(uses, envUse{k, where + " service " + name, s.isSluice()})
		}
	}
	return uses
}

// service returns the one service matching ok, and its name.
func (c *compose) service(t *testing.T, what string, ok func(composeService) bool) (composeService, string) {
	t.Helper()
	var names []string
	for name, s := range c.Services {
		if ok(s) {
			names = append(names, name)
		}
	}
	if len(names) != 1 {
		t.Fatalf("%s: %d services %s (%q), want 1", composeFile, len(names), what, names)
	}
	return c.Services[names[0]], names[0]
}

func (c *compose) topicsService(t *testing.T) (composeService, string) {
	t.Helper()
	return c.service(t, "creating the topics ("+partitionsVar+")", func(s composeService) bool {
		_, ok := s.Environment[partitionsVar]
		return ok
	})
}

func (c *compose) subcommand(t *testing.T, sub string) (composeService, string) {
	t.Helper()
	return c.service(t, "running `sluice "+sub+"`", func(s composeService) bool {
		return s.isSluice() && len(s.Command) > 0 && s.Command[0] == sub
	})
}

// flagValue returns the value of --name in args (either form), if any.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// The compose stack starts in order and its sluice runs with a
// configuration the code accepts, wired to the stack's broker and mock API.
func TestCompose(t *testing.T) {
	// Not parallel: loadConsume and loadMock set the environment.
	c := readCompose(t)

	// Start order.
	for name, s := range c.Services {
		for dep, d := range s.DependsOn {
			target, ok := c.Services[dep]
			switch {
			case !ok:
				t.Errorf("service %s depends on %s, which does not exist", name, dep)
			case d.Condition == "service_healthy" && target.Healthcheck == nil:
				t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, d.Condition):
				t.Errorf("service %s depends on %s with condition %q", name, dep, d.Condition)
			}
		}
	}
	consume, consumeName := c.subcommand(t, "consume")
	mock, mockName := c.subcommand(t, "mockapi")
	topics, topicsName := c.topicsService(t)
	if consume.DependsOn[topicsName].Condition != "service_completed_successfully" {
		t.Errorf("service %s must wait for %s with service_completed_successfully: sluice refuses to start without its topics", consumeName, topicsName)
	}
	if _, ok := consume.DependsOn[mockName]; !ok {
		t.Errorf("service %s must depend on %s", consumeName, mockName)
	}

	// One image, built from the repository's Dockerfile.
	for name, s := range c.Services {
		if !s.isSluice() {
			continue
		}
		if s.Image != consume.Image || !equalJSON(t, s.Build, consume.Build) {
			t.Errorf("service %s: image or build differs from %s's; the sluice services share one image", name, consumeName)
		}
		df := path.Join(s.Build.Context, s.Build.Dockerfile)
		if _, err := os.Stat(filepath.FromSlash(df)); err != nil {
			t.Errorf("service %s: build: %v", name, err)
		}
	}

	// sluice's configuration.
	cfg, err := loadConsume(t, consume.Environment)
	if err != nil {
		t.Fatalf("service %s: sluice would not start with this environment: %v", consumeName, err)
	}
	grace, err := time.ParseDuration(consume.StopGracePeriod)
	if err != nil || grace <= cfg.DrainTimeout {
		t.Errorf("service %s: stop_grace_period %q must exceed SLUICE_DRAIN_TIMEOUT %s", consumeName, consume.StopGracePeriod, cfg.DrainTimeout)
	}
	var brokerSvc string
	for _, b := range cfg.Brokers {
		host, _, err := net.SplitHostPort(b)
		if _, ok := c.Services[host]; err != nil || !ok {
			t.Errorf("SLUICE_BROKERS %q is not a service of the stack", b)
		}
		brokerSvc = host
	}
	if topics.DependsOn[brokerSvc].Condition != "service_healthy" {
		t.Errorf("service %s must wait for the broker %s to be healthy", topicsName, brokerSvc)
	}
	_, opsPort, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		t.Errorf("SLUICE_HTTP_ADDR %q: %v", cfg.HTTPAddr, err)
	}
	if !slices.ContainsFunc(consume.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+opsPort) }) {
		t.Errorf("service %s: ports %q do not publish the ops port %s", consumeName, consume.Ports, opsPort)
	}

	// The topics created are the topics consumed.
	for k, want := range map[string]string{
		"SLUICE_INPUT_TOPIC":  cfg.InputTopic,
		"SLUICE_OUTPUT_TOPIC": cfg.OutputTopic,
		"SLUICE_DLQ_TOPIC":    cfg.DLQTopic,
		"SLUICE_BROKERS":      strings.Join(cfg.Brokers, ","),
	} {
		if got := topics.Environment[k]; got != want {
			t.Errorf("service %s: %s=%q, but sluice uses %q", topicsName, k, got, want)
		}
	}
	if inputPartitions(t) < 1 {
		t.Error("no input partitions")
	}

	// The mock API: reachable from sluice, configured validly, same key.
	addr, ok := flagValue(mock.Command[1:], "addr")
	if !ok {
		addr = mock.Environment["SLUICE_MOCK_ADDR"]
	}
	mockHost, mockPort, err := net.SplitHostPort(addr)
	if err != nil || (mockHost != "" && mockHost != "0.0.0.0") {
		t.Errorf("service %s: listen address %q: want all interfaces (--addr :PORT), or other containers cannot reach it", mockName, addr)
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || u.Hostname() != mockName || u.Port() != mockPort || u.Path != "/v1" {
		t.Errorf("SLUICE_API_BASE_URL %q: want http://%s:%s/v1", cfg.BaseURL, mockName, mockPort)
	}
	mcfg, err := loadMock(t, mock.Environment)
	if err != nil {
		t.Fatalf("service %s: sluice mockapi would not start with this environment: %v", mockName, err)
	}
	if mcfg.APIKey != "" && cfg.Key.Reveal() != mcfg.APIKey {
		t.Errorf("SLUICE_API_KEY of %s differs from SLUICE_MOCK_API_KEY of %s: every call would get 401", consumeName, mockName)
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}
