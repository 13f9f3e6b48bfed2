package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kelseyhightower/envconfig"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/mockapi"
)

// The manifests are read relative to this directory (go test runs in it).
const (
	composeFile = "docker-compose.yml"
	k8sDir      = "k8s"
	// staticDir is the static-membership flavour; k8sDir is the default.
	staticDir = "k8s/static-membership"
	// shareDir is the share-group flavour (SLUICE_GROUP_PROTOCOL=share).
	shareDir = "k8s/share"
	// userSecretName and userSecretKey are the Secret holding the API key
	// that the user creates (deploy/README.md); the manifests carry none.
	userSecretName = "sluice-api"
	userSecretKey  = "api-key"
	// containerName is the sluice container in every pod template.
	containerName = "sluice"
)

// otherEnv are the names besides SLUICE_* that a sluice container or the
// sluice ConfigMap may set.
var otherEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GODEBUG": true, "XAI_API_KEY": true}

// pendingEnv are SLUICE_* names the manifests use ahead of internal/config
// (issue #7 adds them). Accepted while missing; delete an entry once the
// config reads it, and the check covers it again.
var pendingEnv = map[string]bool{}

// document is one YAML document of a manifest file.
type document struct {
	file  string // slash path relative to deploy/
	index int    // 0-based position in the file
	raw   []byte
}

func (d document) String() string { return fmt.Sprintf("%s (document %d)", d.file, d.index+1) }

// splitDocuments splits a multi-document YAML stream on its "---" lines and
// drops documents that hold only comments or whitespace.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		var v any
		if err := yaml.Unmarshal(cur.Bytes(), &v); err != nil || v != nil {
			docs = append(docs, slices.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// readDocuments returns the documents of one manifest file.
func readDocuments(file string) ([]document, error) {
	data, err := os.ReadFile(filepath.FromSlash(file))
	if err != nil {
		return nil, err
	}
	var docs []document
	for i, raw := range splitDocuments(data) {
		docs = append(docs, document{file: file, index: i, raw: raw})
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no YAML document", file)
	}
	return docs, nil
}

// manifestFiles lists every YAML file under deploy/, as slash paths.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(p); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(files, composeFile) || !slices.Contains(files, k8sDir+"/kustomization.yaml") {
		t.Fatalf("manifests not found (have %q): run the test from deploy/", files)
	}
	return files
}

// decodeStrict decodes YAML into v and rejects unknown and duplicate
// fields.
func decodeStrict(raw []byte, v any) error {
	return yaml.UnmarshalStrict(raw, v)
}

// The local types below cover the kinds that k8s.io/api does not have, with
// only the fields the manifests use: a field added to a manifest without
// being added here fails the strict decoding, so a typo cannot hide.

// scaledObject is a KEDA keda.sh/v1alpha1 ScaledObject.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

// serviceMonitor is a Prometheus operator monitoring.coreos.com/v1
// ServiceMonitor.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// kustomization is a kustomization.yaml.
type kustomization struct {
	metav1.TypeMeta    `json:",inline"`
	Resources          []string         `json:"resources"`
	Patches            []kustomizePatch `json:"patches"`
	ConfigMapGenerator []struct {
		Name    string   `json:"name"`
		Files   []string `json:"files"`
		Options *struct {
			DisableNameSuffixHash bool              `json:"disableNameSuffixHash"`
			Labels                map[string]string `json:"labels"`
		} `json:"options"`
	} `json:"configMapGenerator"`
}

type kustomizePatch struct {
	Path string `json:"path"`
}

// newObject returns a pointer to the type of the apiVersion and kind, for
// strict decoding.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "keda.sh/v1alpha1 ScaledObject":
		return &scaledObject{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &serviceMonitor{}, nil
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		return &kustomization{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: unknown to this test (add its type to newObject)", apiVersion, kind)
}

// object is one decoded Kubernetes object.
type object struct {
	kind, name string
	src        string // where it came from, for messages
	v          any    // *corev1.ConfigMap, *appsv1.Deployment, ...
}

// decodeObject decodes one Kubernetes document strictly.
func decodeObject(d document) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(d.raw, &tm); err != nil {
		return object{}, fmt.Errorf("%s: %w", d, err)
	}
	v, err := newObject(tm.APIVersion, tm.Kind)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", d, err)
	}
	if err := decodeStrict(d.raw, v); err != nil {
		return object{}, fmt.Errorf("%s: %w", d, err)
	}
	o := object{kind: tm.Kind, src: d.String(), v: v}
	if m, ok := v.(metav1.Object); ok {
		o.name = m.GetName()
		if o.name == "" {
			return object{}, fmt.Errorf("%s: %s without metadata.name", d, tm.Kind)
		}
	}
	return o, nil
}

func TestManifestsDecodeStrictly(t *testing.T) {
	t.Parallel()
	for _, file := range manifestFiles(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			docs, err := readDocuments(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range docs {
				if file == composeFile {
					if _, err := decodeCompose(d.raw); err != nil {
						t.Errorf("%s: %v", d, err)
					}
					continue
				}
				if _, err := decodeObject(d); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// The strict decoding must reject what it claims to.
func TestDecodeStrictRejects(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndta: {A: b}\n",
		"duplicate key": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {A: b}\ndata: {A: c}\n",
		"unknown kind":  "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
		"CRD typo":      "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec: {maxReplicas: 3}\n",
		"no name":       "apiVersion: v1\nkind: ConfigMap\ndata: {A: b}\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := decodeObject(document{file: name, raw: []byte(doc)}); err == nil {
				t.Errorf("decoded without error:\n%s", doc)
			}
		})
	}
	if _, err := decodeCompose([]byte("services:\n  a:\n    imgae: x\n")); err == nil {
		t.Error("compose: unknown service field decoded without error")
	}
	if got := len(splitDocuments([]byte("# only a comment\n---\na: 1\n---\n\n---\nb: 2\n"))); got != 2 {
		t.Errorf("splitDocuments found %d documents, want 2", got)
	}
}

// envNames returns the variable names envconfig reads for spec under
// prefix, composed by envconfig itself (so embedded structs, prefixes and
// tags are handled exactly as the code reads them).
func envNames(prefix string, spec any) (map[string]bool, error) {
	var b bytes.Buffer
	if err := envconfig.Usagef(prefix, spec, &b, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, n := range strings.Fields(b.String()) {
		names[n] = true
	}
	return names, nil
}

// knownEnv returns every SLUICE_* name the code reads: `sluice consume`'s
// (internal/config) and `sluice mockapi`'s (internal/mockapi).
func knownEnv(t *testing.T) map[string]bool {
	t.Helper()
	known, err := envNames("", &config.Consume{})
	if err != nil {
		t.Fatal(err)
	}
	mock, err := envNames(mockapi.EnvPrefix, &mockapi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for n := range mock {
		known[n] = true
	}
	// Read by cmd/sluice/mockapi.go next to mockapi.Config.
	known[mockapi.EnvPrefix+"_ADDR"] = true
	for n := range pendingEnv {
		if known[n] {
			t.Logf("%s is now in internal/config: delete it from pendingEnv", n)
			continue
		}
		t.Logf("%s is not in internal/config yet; accepted as pending", n)
		known[n] = true
	}
	if !known["SLUICE_BROKERS"] || !known[mockapi.EnvPrefix+"_LATENCY"] {
		t.Fatalf("env names not collected: %v", known)
	}
	return known
}

// envUse is one place where a manifest sets an environment variable.
type envUse struct {
	name, where string
	// sluiceOnly: the place configures sluice itself (its container, its
	// ConfigMap), so every name must be a SLUICE_* one the code reads or
	// one of otherEnv. Elsewhere only SLUICE_* names are checked.
	sluiceOnly bool
}

// checkEnvNames reports every use of a name the code does not read.
func checkEnvNames(uses []envUse, known map[string]bool) []error {
	var errs []error
	for _, u := range uses {
		switch {
		case strings.HasPrefix(u.name, config.Prefix+"_"):
			if !known[u.name] {
				errs = append(errs, fmt.Errorf("%s: %s is not read by sluice (not in internal/config or internal/mockapi)", u.where, u.name))
			}
		case u.sluiceOnly && !otherEnv[u.name]:
			errs = append(errs, fmt.Errorf("%s: %s is not a %s_* variable sluice reads", u.where, u.name, config.Prefix))
		}
	}
	return errs
}

// podEnvUses lists the variables a pod template sets.
func podEnvUses(src string, spec *corev1.PodSpec) []envUse {
	var uses []envUse
	for _, c := range spec.Containers {
		for _, e := range c.Env {
			uses = append(uses, envUse{e.Name, src + " container " + c.Name, c.Name == containerName})
		}
	}
	return uses
}

func TestEnvNamesExist(t *testing.T) {
	t.Parallel()
	known := knownEnv(t)
	var uses []envUse
	for _, file := range manifestFiles(t) {
		docs, err := readDocuments(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			if file == composeFile {
				c, err := decodeCompose(d.raw)
				if err != nil {
					t.Fatal(err)
				}
				uses = append(uses, c.envUses(d.String())...)
				continue
			}
			o, err := decodeObject(d)
			if err != nil {
				t.Fatal(err)
			}
			switch v := o.v.(type) {
			case *corev1.ConfigMap:
				for k := range v.Data {
					uses = append(uses, envUse{k, o.src + " data", v.Name == containerName})
				}
			case *appsv1.Deployment:
				uses = append(uses, podEnvUses(o.src, &v.Spec.Template.Spec)...)
			case *appsv1.StatefulSet:
				uses = append(uses, podEnvUses(o.src, &v.Spec.Template.Spec)...)
			}
		}
	}
	if len(uses) < 10 {
		t.Fatalf("only %d environment variables found in the manifests", len(uses))
	}
	for _, err := range checkEnvNames(uses, known) {
		t.Error(err)
	}

	t.Run("misspelled names are caught", func(t *testing.T) {
		t.Parallel()
		for _, u := range []envUse{
			{"SLUICE_MAX_INFLIGHT", "test", false},
			{"SLUICE_MOCK_LATENCYY", "test", false},
			{"SLUCIE_BROKERS", "test", true},
		} {
			if errs := checkEnvNames([]envUse{u}, known); len(errs) != 1 {
				t.Errorf("%s: got %v, want one error", u.name, errs)
			}
		}
		if errs := checkEnvNames([]envUse{{"SLUICE_MAX_IN_FLIGHT", "test", true}, {"GOMEMLIMIT", "test", true}}, known); len(errs) != 0 {
			t.Errorf("valid names rejected: %v", errs)
		}
	})
}

// loadConsume runs config.LoadConsume with exactly env as the SLUICE_*
// environment. It uses t.Setenv, so its test cannot be parallel.
func loadConsume(t *testing.T, env map[string]string) (config.Consume, error) {
	t.Helper()
	clearEnv(t, config.Prefix+"_", "XAI_API_KEY")
	for k, v := range env {
		t.Setenv(k, v)
	}
	return config.LoadConsume()
}

// loadMock reads and validates the mock API's configuration from exactly
// env, as `sluice mockapi` does.
func loadMock(t *testing.T, env map[string]string) (mockapi.Config, error) {
	t.Helper()
	clearEnv(t, config.Prefix+"_")
	for k, v := range env {
		t.Setenv(k, v)
	}
	var c mockapi.Config
	if err := envconfig.Process(mockapi.EnvPrefix, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// clearEnv unsets every variable that starts with one of prefixes, for the
// rest of the test.
func clearEnv(t *testing.T, prefixes ...string) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				t.Setenv(k, "") // restores the old value after the test
				if err := os.Unsetenv(k); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}
