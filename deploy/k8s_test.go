package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/consumer"
	"github.com/sluice-dev/sluice/internal/config"
)

// rendered is what a kustomization produces, in the order kustomize would.
type rendered struct {
	dir     string
	objects []object
}

// render builds the kustomization in dir the way kustomize does, for what
// the manifests use: resources (files and directories), configMapGenerator,
// and strategic-merge patches of ConfigMap data. Anything else fails, so
// the test is extended rather than silently wrong.
func render(dir string) (*rendered, error) {
	kfile := path.Join(dir, "kustomization.yaml")
	docs, err := readDocuments(kfile)
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("%s: %d documents, want 1", kfile, len(docs))
	}
	ko, err := decodeObject(docs[0])
	if err != nil {
		return nil, err
	}
	k, ok := ko.v.(*kustomization)
	if !ok {
		return nil, fmt.Errorf("%s: kind %s, want Kustomization", kfile, ko.kind)
	}
	r := &rendered{dir: dir}
	for _, res := range k.Resources {
		p := path.Join(dir, res)
		fi, err := os.Stat(filepath.FromSlash(p))
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", kfile, res, err)
		}
		if fi.IsDir() {
			sub, err := render(p)
			if err != nil {
				return nil, fmt.Errorf("%s: resource %s: %w", kfile, res, err)
			}
			r.objects = append(r.objects, sub.objects...)
			continue
		}
		docs, err := readDocuments(p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", kfile, res, err)
		}
		for _, d := range docs {
			o, err := decodeObject(d)
			if err != nil {
				return nil, err
			}
			if o.kind == "Kustomization" {
				return nil, fmt.Errorf("%s: resource %s is a kustomization; name its directory", kfile, res)
			}
			r.objects = append(r.objects, o)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: g.Name}, Data: map[string]string{}}
		for _, f := range g.Files {
			key, file, ok := strings.Cut(f, "=")
			if !ok {
				key, file = path.Base(f), f
			}
			data, err := os.ReadFile(filepath.FromSlash(path.Join(dir, file)))
			if err != nil {
				return nil, fmt.Errorf("%s: configMapGenerator %s: %w", kfile, g.Name, err)
			}
			cm.Data[key] = string(data)
		}
		if g.Options != nil {
			cm.Labels = g.Options.Labels
		}
		r.objects = append(r.objects, object{kind: "ConfigMap", name: g.Name, src: kfile + " configMapGenerator", v: cm})
	}
	for _, p := range k.Patches {
		if p.Path == "" {
			return nil, fmt.Errorf("%s: inline patches are not supported by this test; use a patch file", kfile)
		}
		docs, err := readDocuments(path.Join(dir, p.Path))
		if err != nil {
			return nil, fmt.Errorf("%s: patch: %w", kfile, err)
		}
		for _, d := range docs {
			po, err := decodeObject(d)
			if err != nil {
				return nil, err
			}
			if pso, ok := po.v.(*scaledObject); ok {
				// A custom resource: kustomize merges it as a JSON
				// merge patch (RFC 7386), lists replaced whole.
				if err := r.patchScaledObject(pso.Name, d.raw); err != nil {
					return nil, fmt.Errorf("%s: %w", d, err)
				}
				continue
			}
			pcm, ok := po.v.(*corev1.ConfigMap)
			if !ok {
				return nil, fmt.Errorf("%s: patching a %s is not supported by this test (extend render)", d, po.kind)
			}
			cm := r.configMap(pcm.Name)
			if cm == nil {
				return nil, fmt.Errorf("%s: patches ConfigMap %s, which %s does not have", d, pcm.Name, dir)
			}
			for k, v := range pcm.Data {
				cm.Data[k] = v
			}
		}
	}
	seen := map[string]string{}
	for _, o := range r.objects {
		id := o.kind + "/" + o.name
		if prev, dup := seen[id]; dup {
			return nil, fmt.Errorf("%s: %s defined twice (%s and %s)", dir, id, prev, o.src)
		}
		seen[id] = o.src
	}
	return r, nil
}

// patchScaledObject applies a JSON merge patch (YAML) to the ScaledObject
// name of r.
func (r *rendered) patchScaledObject(name string, patch []byte) error {
	var so *scaledObject
	for _, o := range find[*scaledObject](r) {
		if o.Name == name {
			so = o
		}
	}
	if so == nil {
		return fmt.Errorf("patches ScaledObject %s, which %s does not have", name, r.dir)
	}
	var target, p map[string]any
	b, err := json.Marshal(so)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &target); err != nil {
		return err
	}
	if err := yaml.Unmarshal(patch, &p); err != nil {
		return err
	}
	merged, err := json.Marshal(mergePatch(target, p))
	if err != nil {
		return err
	}
	*so = scaledObject{}
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	return dec.Decode(so)
}

// mergePatch is RFC 7386: objects merge key by key, null deletes, anything
// else (lists included) replaces.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

// find returns the objects of type T.
func find[T any](r *rendered) []T {
	var out []T
	for _, o := range r.objects {
		if v, ok := o.v.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func (r *rendered) configMap(name string) *corev1.ConfigMap {
	for _, cm := range find[*corev1.ConfigMap](r) {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

func (r *rendered) secret(name string) *corev1.Secret {
	for _, s := range find[*corev1.Secret](r) {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// workload is a Deployment or StatefulSet running sluice.
type workload struct {
	kind, name string
	template   *corev1.PodTemplateSpec
	selector   *metav1.LabelSelector
	replicas   *int32
}

func (r *rendered) workloads() []workload {
	var ws []workload
	for _, d := range find[*appsv1.Deployment](r) {
		ws = append(ws, workload{"Deployment", d.Name, &d.Spec.Template, d.Spec.Selector, d.Spec.Replicas})
	}
	for _, s := range find[*appsv1.StatefulSet](r) {
		ws = append(ws, workload{"StatefulSet", s.Name, &s.Spec.Template, s.Spec.Selector, s.Spec.Replicas})
	}
	return ws
}

// userSecret stands for the Secret the user creates before applying (the
// manifests do not carry it): the one deploy/README.md tells them to
// create, with a dummy key. Any other name fails t.
func userSecret(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	if name != userSecretName {
		t.Fatalf("the pod needs Secret %q, which neither the kustomization nor deploy/README.md (%s) provides", name, userSecretName)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{userSecretKey: "xai-dummy"}}
}

// secretValues returns a Secret's values, from data and stringData.
func secretValues(s *corev1.Secret) map[string]string {
	vals := map[string]string{}
	for k, v := range s.Data {
		vals[k] = string(v)
	}
	for k, v := range s.StringData {
		vals[k] = v
	}
	return vals
}

// podEnv computes the environment the sluice container of w starts with:
// envFrom ConfigMaps, then env. Secret volumes are written to a temporary
// directory (as the kubelet would mount them) and paths under their mount
// points are pointed there, so file-valued variables can be loaded.
func (r *rendered) podEnv(t *testing.T, w workload) map[string]string {
	t.Helper()
	spec := &w.template.Spec
	c := sluiceContainer(t, w)
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			t.Fatalf("%s %s: envFrom other than a ConfigMap is not supported by this test", w.kind, w.name)
		}
		cm := r.configMap(ef.ConfigMapRef.Name)
		if cm == nil {
			t.Fatalf("%s %s: envFrom ConfigMap %q not in the kustomization", w.kind, w.name, ef.ConfigMapRef.Name)
		}
		for k, v := range cm.Data {
			env[ef.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		switch vf := e.ValueFrom; {
		case vf == nil:
			env[e.Name] = e.Value
		case vf.SecretKeyRef != nil:
			s := r.secret(vf.SecretKeyRef.Name)
			if s == nil {
				s = userSecret(t, vf.SecretKeyRef.Name)
			}
			v, ok := secretValues(s)[vf.SecretKeyRef.Key]
			if !ok {
				t.Fatalf("%s %s: env %s: Secret %q has no key %q", w.kind, w.name, e.Name, s.Name, vf.SecretKeyRef.Key)
			}
			env[e.Name] = v
		case vf.ConfigMapKeyRef != nil:
			cm := r.configMap(vf.ConfigMapKeyRef.Name)
			if cm == nil {
				t.Fatalf("%s %s: env %s: ConfigMap %q not in the kustomization", w.kind, w.name, e.Name, vf.ConfigMapKeyRef.Name)
			}
			env[e.Name] = cm.Data[vf.ConfigMapKeyRef.Key]
		case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = w.name + "-0"
		case vf.ResourceFieldRef != nil:
			// Not sluice's configuration (GOMEMLIMIT).
		default:
			t.Fatalf("%s %s: env %s: valueFrom not supported by this test", w.kind, w.name, e.Name)
		}
	}

	// Mount the Secret volumes.
	mounts := map[string]string{} // mount path -> local directory
	for _, vm := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			t.Fatalf("%s %s: volumeMount %s has no volume", w.kind, w.name, vm.Name)
		}
		sv := spec.Volumes[i].Secret
		if sv == nil {
			continue
		}
		if vm.SubPath != "" {
			t.Errorf("%s %s: Secret volume %s mounted with subPath: the kubelet never updates it, so key rotation would need a restart", w.kind, w.name, vm.Name)
		}
		s := r.secret(sv.SecretName)
		if s == nil {
			s = userSecret(t, sv.SecretName)
		}
		dir := t.TempDir()
		vals := secretValues(s)
		files := map[string]string{}
		for k := range vals {
			files[k] = k
		}
		if len(sv.Items) > 0 {
			files = map[string]string{}
			for _, it := range sv.Items {
				files[it.Key] = it.Path
			}
		}
		for key, p := range files {
			v, ok := vals[key]
			if !ok {
				t.Fatalf("%s %s: volume %s: Secret %q has no key %q", w.kind, w.name, vm.Name, s.Name, key)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(p)), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		mounts[strings.TrimSuffix(vm.MountPath, "/")+"/"] = dir + string(filepath.Separator)
	}
	for k, v := range env {
		for mp, dir := range mounts {
			if rest, ok := strings.CutPrefix(v, mp); ok {
				env[k] = dir + filepath.FromSlash(rest)
			}
		}
	}
	return env
}

func sluiceContainer(t *testing.T, w workload) *corev1.Container {
	t.Helper()
	cs := w.template.Spec.Containers
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == containerName })
	if i < 0 {
		t.Fatalf("%s %s: no container named %q", w.kind, w.name, containerName)
	}
	return &cs[i]
}

// inputPartitions is the partition count of the input topic as created by
// the compose stack (and documented in deploy/README.md).
func inputPartitions(t *testing.T) int {
	t.Helper()
	c := readCompose(t)
	s, _ := c.topicsService(t)
	n, err := strconv.Atoi(s.Environment[partitionsVar])
	if err != nil || n < 1 {
		t.Fatalf("%s: %s=%q: want a positive partition count", composeFile, partitionsVar, s.Environment[partitionsVar])
	}
	return n
}

// selects reports whether sel selects objects labelled lbls.
func selects(t *testing.T, sel *metav1.LabelSelector, lbls map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(lbls))
}

// kustomizations lists the directories under deploy/ that hold a
// kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	for _, f := range manifestFiles(t) {
		if path.Base(f) == "kustomization.yaml" {
			dirs = append(dirs, path.Dir(f))
		}
	}
	return dirs
}

// Every kustomization renders: its resources, generator files and patches
// exist and decode strictly.
func TestKustomizationsRender(t *testing.T) {
	t.Parallel()
	dirs := kustomizations(t)
	for _, want := range []string{k8sDir, staticDir, shareDir} {
		if !slices.Contains(dirs, want) {
			t.Errorf("no kustomization in %s", want)
		}
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			if _, err := render(dir); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("missing resource is caught", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - nothere.yaml\n"
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := render(filepath.ToSlash(dir)); err == nil {
			t.Error("render succeeded with a missing resource")
		}
	})
}

// The deployable flavours (deploy/k8s and deploy/k8s/static-membership):
// each runs sluice with a configuration the code accepts, and its parts fit
// together.
func TestFlavours(t *testing.T) {
	// Not parallel: loadConsume sets the environment.
	known := knownEnv(t)
	partitions := inputPartitions(t)
	for _, dir := range []string{k8sDir, staticDir, shareDir} {
		t.Run(dir, func(t *testing.T) {
			r, err := render(dir)
			if err != nil {
				t.Fatal(err)
			}
			ws := r.workloads()
			if len(ws) != 1 {
				t.Fatalf("%d workloads, want one Deployment or StatefulSet", len(ws))
			}
			w := ws[0]
			cfg := checkWorkload(t, r, w, known)
			checkSecrets(t, r)
			checkService(t, r, w)
			checkPDB(t, r, w)
			sos := find[*scaledObject](r)
			for _, so := range sos {
				if cfg.Shared() {
					checkShareScaledObject(t, so, w, cfg, partitions)
					continue
				}
				checkScaledObject(t, so, w, cfg, partitions)
			}
			switch w.kind {
			case "Deployment":
				if len(sos) != 1 {
					t.Errorf("%d ScaledObjects, want 1 scaling the Deployment", len(sos))
				}
				if w.replicas != nil {
					t.Errorf("Deployment %s sets spec.replicas: every apply would undo KEDA's scaling", w.name)
				}
			case "StatefulSet":
				checkStatefulSet(t, r, w, cfg, partitions)
			}
		})
	}
}

// checkWorkload checks the pod of w and returns the configuration its
// sluice container loads.
func checkWorkload(t *testing.T, r *rendered, w workload, known map[string]bool) config.Consume {
	t.Helper()
	spec := &w.template.Spec
	c := sluiceContainer(t, w)
	if !selects(t, w.selector, w.template.Labels) {
		t.Errorf("%s %s: selector %v does not select its pod labels %v", w.kind, w.name, w.selector, w.template.Labels)
	}
	if !slices.Equal(c.Args, []string{"consume"}) || len(c.Command) != 0 {
		t.Errorf("container command %q args %q: want the image's entrypoint with args [consume]", c.Command, c.Args)
	}
	if c.Image == "" || strings.HasPrefix(c.Image, "sluice:") {
		t.Errorf("container image %q: want the published image", c.Image)
	}

	env := r.podEnv(t, w)
	var uses []envUse
	for k := range env {
		uses = append(uses, envUse{k, w.kind + " " + w.name + " environment", true})
	}
	for _, err := range checkEnvNames(uses, known) {
		t.Error(err)
	}
	cfg, err := loadConsume(t, env)
	if err != nil {
		t.Fatalf("%s %s: sluice would not start with this environment: %v", w.kind, w.name, err)
	}
	if cfg.Key.Reveal() == "" && cfg.KeyFile == "" {
		t.Errorf("%s %s: no API key: set SLUICE_API_KEY_FILE (or SLUICE_API_KEY) from the Secret", w.kind, w.name)
	}

	// Grace period: the drain, then the commit and the leave.
	grace := spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= cfg.DrainTimeout {
		t.Errorf("terminationGracePeriodSeconds %v must exceed SLUICE_DRAIN_TIMEOUT %s", ptrString(grace), cfg.DrainTimeout)
	}

	// Probes on the ops endpoint.
	_, portStr, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		t.Fatalf("SLUICE_HTTP_ADDR %q: %v (the probes need the ops endpoint)", cfg.HTTPAddr, err)
	}
	opsPort, _ := strconv.Atoi(portStr)
	pi := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "http" })
	if pi < 0 || int(c.Ports[pi].ContainerPort) != opsPort {
		t.Errorf("container ports %v: want one named http on SLUICE_HTTP_ADDR's port %d", c.Ports, opsPort)
	}
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"livenessProbe", "/livez", c.LivenessProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		portOK := g.Port.String() == "http" || g.Port.IntValue() == opsPort
		if g.Path != p.path || !portOK {
			t.Errorf("%s: httpGet %s on port %s, want %s on port http (%d)", p.name, g.Path, g.Port.String(), p.path, opsPort)
		}
	}

	// Hardening.
	psc, csc := spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("pod securityContext: want runAsNonRoot and a numeric non-root runAsUser (the kubelet cannot verify a named USER)")
	}
	seccompOK := func(sp *corev1.SeccompProfile) bool {
		return sp != nil && sp.Type == corev1.SeccompProfileTypeRuntimeDefault
	}
	if (psc == nil || !seccompOK(psc.SeccompProfile)) && (csc == nil || !seccompOK(csc.SeccompProfile)) {
		t.Error("securityContext: want seccompProfile RuntimeDefault")
	}
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		t.Error("container securityContext: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL")
	}

	// Resources.
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[res]
		lim, hasLim := c.Resources.Limits[res]
		if !hasReq || !hasLim {
			t.Errorf("resources: want a %s request and limit", res)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("resources: %s request %s above its limit %s", res, req.String(), lim.String())
		}
	}
	return cfg
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "<unset>"
	}
	return fmt.Sprint(*p)
}

// checkSecrets fails if the kustomization carries a Secret: a committed
// one either leaks a key or, holding a placeholder, writes over the user's
// real key on every apply.
func checkSecrets(t *testing.T, r *rendered) {
	t.Helper()
	for _, s := range find[*corev1.Secret](r) {
		t.Errorf("%s renders Secret %s: the API key Secret is the user's to create (deploy/README.md), never applied from here", r.dir, s.Name)
	}
}

// TestSecretDocumented: deploy/README.md creates the very Secret and key
// the pods mount, before the first apply, and says nothing of a Secret in
// the manifests.
func TestSecretDocumented(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	create := fmt.Sprintf("kubectl create secret generic %s --from-literal=%s=", userSecretName, userSecretKey)
	i, j := strings.Index(doc, create), strings.Index(doc, "kubectl apply -k deploy/k8s\n")
	if i < 0 || j < 0 || i > j {
		t.Errorf("deploy/README.md must show %q before the first `kubectl apply -k deploy/k8s`", create)
	}
	for _, dir := range []string{k8sDir, staticDir, shareDir} {
		r, err := render(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range r.workloads() {
			found := false
			for _, v := range w.template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == userSecretName {
					found = true
				}
			}
			if !found {
				t.Errorf("%s %s mounts no Secret %s: deploy/README.md tells users to create it", w.kind, w.name, userSecretName)
			}
		}
	}
	for _, wrong := range []string{"secret.yaml", "REPLACE_ME", "after the first apply"} {
		if strings.Contains(doc, wrong) {
			t.Errorf("deploy/README.md still mentions %q", wrong)
		}
	}
}

// checkService checks the metrics Service and the ServiceMonitor that
// scrapes it.
func checkService(t *testing.T, r *rendered, w workload) {
	t.Helper()
	var metrics *corev1.Service
	for _, s := range find[*corev1.Service](r) {
		if selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, w.template.Labels) {
			metrics = s
		}
	}
	if metrics == nil {
		t.Fatalf("no Service selects the %s's pods", w.kind)
	}
	if !slices.ContainsFunc(metrics.Spec.Ports, func(p corev1.ServicePort) bool {
		return p.Name == "http" && p.TargetPort.String() == "http"
	}) {
		t.Errorf("Service %s: want a port named http targeting the container port http", metrics.Name)
	}
	sms := find[*serviceMonitor](r)
	if len(sms) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(sms))
	}
	sm := sms[0]
	if !selects(t, &sm.Spec.Selector, metrics.Labels) {
		t.Errorf("ServiceMonitor %s: selector %v does not select Service %s (labels %v)", sm.Name, sm.Spec.Selector, metrics.Name, metrics.Labels)
	}
	if len(sm.Spec.Endpoints) == 0 {
		t.Errorf("ServiceMonitor %s: no endpoints", sm.Name)
	}
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(metrics.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) || ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor %s: endpoint port %q path %q, want a port of Service %s and /metrics", sm.Name, ep.Port, ep.Path, metrics.Name)
		}
	}
	// The dashboard ConfigMap is picked up by Grafana's sidecar.
	dash := r.configMap("sluice-grafana-dashboard")
	if dash == nil || dash.Labels["grafana_dashboard"] != "1" || len(dash.Data) != 1 {
		t.Error("want the dashboard ConfigMap sluice-grafana-dashboard, labelled grafana_dashboard=1, with one file")
	}
}

func checkPDB(t *testing.T, r *rendered, w workload) {
	t.Helper()
	pdbs := find[*policyv1.PodDisruptionBudget](r)
	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(pdbs))
	}
	p := pdbs[0]
	if !selects(t, p.Spec.Selector, w.template.Labels) {
		t.Errorf("PodDisruptionBudget %s does not select the %s's pods", p.Name, w.kind)
	}
	if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.String() != "1" || p.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget %s: want maxUnavailable 1 (and no minAvailable)", p.Name)
	}
}

func checkScaledObject(t *testing.T, so *scaledObject, w workload, cfg config.Consume, partitions int) {
	t.Helper()
	maxR := checkScaleTarget(t, so, w)
	if err := checkMaxReplicas(maxR, partitions); err != nil {
		t.Errorf("ScaledObject %s: %v", so.Name, err)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "kafka" {
		t.Fatalf("ScaledObject %s: want one kafka trigger", so.Name)
	}
	md := so.Spec.Triggers[0].Metadata
	for k, want := range map[string]string{
		"bootstrapServers":   strings.Join(cfg.Brokers, ","),
		"consumerGroup":      cfg.Group,
		"topic":              cfg.InputTopic,
		"allowIdleConsumers": "false",
	} {
		if md[k] != want {
			t.Errorf("ScaledObject %s: trigger %s %q, want %q (as sluice's configuration)", so.Name, k, md[k], want)
		}
	}
	lag, err := strconv.Atoi(md["lagThreshold"])
	if err != nil || lag <= cfg.MaxInFlight {
		t.Errorf("ScaledObject %s: lagThreshold %q must be a number above SLUICE_MAX_IN_FLIGHT (%d): in-flight records count as lag", so.Name, md["lagThreshold"], cfg.MaxInFlight)
	}
}

// checkScaleTarget checks that so scales w from one replica, and returns
// its maxReplicaCount.
func checkScaleTarget(t *testing.T, so *scaledObject, w workload) *int32 {
	t.Helper()
	ref := so.Spec.ScaleTargetRef
	if ref.Kind != w.kind || ref.Name != w.name {
		t.Errorf("ScaledObject %s scales %s %s, want %s %s", so.Name, ref.Kind, ref.Name, w.kind, w.name)
	}
	if minR := so.Spec.MinReplicaCount; minR == nil || *minR != 1 {
		t.Errorf("ScaledObject %s: minReplicaCount %s, want 1", so.Name, ptrString(minR))
	}
	return so.Spec.MaxReplicaCount
}

// checkShareScaledObject checks the autoscaling of a share group: past the
// partition count, within the group's member cap, on the lag sluice
// reports (KEDA's kafka trigger reads committed offsets, which a share
// group has none of).
func checkShareScaledObject(t *testing.T, so *scaledObject, w workload, cfg config.Consume, partitions int) {
	t.Helper()
	maxR := checkScaleTarget(t, so, w)
	// Kafka's default group.share.max.size is 200 members.
	if maxR == nil || int(*maxR) <= partitions || int(*maxR)*consumer.ShareLanes > 200 {
		t.Errorf("ScaledObject %s: maxReplicaCount %s, want above the %d partitions (the point of a share group) and at most 200/%d (the group's member cap)",
			so.Name, ptrString(maxR), partitions, consumer.ShareLanes)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" {
		t.Fatalf("ScaledObject %s: want one prometheus trigger", so.Name)
	}
	md := so.Spec.Triggers[0].Metadata
	q := md["query"]
	for _, want := range []string{"sluice_consumer_group_lag_records", fmt.Sprintf("topic=%q", cfg.InputTopic), "max by (topic, partition)"} {
		if !strings.Contains(q, want) {
			t.Errorf("ScaledObject %s: query %q lacks %s", so.Name, q, want)
		}
	}
	if md["serverAddress"] == "" {
		t.Errorf("ScaledObject %s: no serverAddress", so.Name)
	}
	lag, err := strconv.Atoi(md["threshold"])
	if err != nil || lag <= cfg.MaxInFlight {
		t.Errorf("ScaledObject %s: threshold %q must be a number above SLUICE_MAX_IN_FLIGHT (%d): in-flight records count as lag", so.Name, md["threshold"], cfg.MaxInFlight)
	}
}

// checkMaxReplicas: more members than partitions sit idle.
func checkMaxReplicas(maxR *int32, partitions int) error {
	if maxR == nil || *maxR < 1 || int(*maxR) > partitions {
		return fmt.Errorf("maxReplicaCount %s must be set, at least 1 and at most the input topic's %d partitions", ptrString(maxR), partitions)
	}
	return nil
}

func TestCheckMaxReplicasFails(t *testing.T) {
	t.Parallel()
	for _, n := range []int32{0, 9, 100} {
		if checkMaxReplicas(&n, 8) == nil {
			t.Errorf("maxReplicaCount %d with 8 partitions accepted", n)
		}
	}
	if checkMaxReplicas(nil, 8) == nil {
		t.Error("unset maxReplicaCount accepted")
	}
}

func checkStatefulSet(t *testing.T, r *rendered, w workload, cfg config.Consume, partitions int) {
	t.Helper()
	sts := find[*appsv1.StatefulSet](r)[0]
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet %s: podManagementPolicy %q, want Parallel", sts.Name, sts.Spec.PodManagementPolicy)
	}
	if sts.Spec.Replicas == nil || int(*sts.Spec.Replicas) > partitions || *sts.Spec.Replicas < 1 {
		t.Errorf("StatefulSet %s: replicas %s, want 1..%d (the input topic's partitions)", sts.Name, ptrString(sts.Spec.Replicas), partitions)
	}
	if !slices.ContainsFunc(find[*corev1.Service](r), func(s *corev1.Service) bool {
		return s.Name == sts.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone
	}) {
		t.Errorf("StatefulSet %s: serviceName %q is not a headless Service of the kustomization", sts.Name, sts.Spec.ServiceName)
	}
	c := sluiceContainer(t, w)
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "SLUICE_INSTANCE_ID" })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("StatefulSet %s: want SLUICE_INSTANCE_ID from fieldRef metadata.name (the stable pod name)", sts.Name)
	}
	if len(find[*scaledObject](r)) != 0 {
		t.Errorf("StatefulSet %s is autoscaled: static members do not leave the group, so each scale-in strands partitions for %s", sts.Name, cfg.SessionTimeout)
	}
}

// The StatefulSet runs the same pod as the Deployment, plus its instance
// id: a fix to one must not be forgotten in the other.
func TestPodTemplatesInStep(t *testing.T) {
	t.Parallel()
	dep, err := render(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	static, err := render(staticDir)
	if err != nil {
		t.Fatal(err)
	}
	ds, ss := find[*appsv1.Deployment](dep), find[*appsv1.StatefulSet](static)
	if len(ds) != 1 || len(ss) != 1 {
		t.Fatalf("%d Deployments in %s and %d StatefulSets in %s, want one each", len(ds), k8sDir, len(ss), staticDir)
	}
	want := ds[0].Spec.Template.DeepCopy()
	got := ss[0].Spec.Template.DeepCopy()
	for i := range got.Spec.Containers {
		got.Spec.Containers[i].Env = slices.DeleteFunc(got.Spec.Containers[i].Env, func(e corev1.EnvVar) bool {
			return e.Name == "SLUICE_INSTANCE_ID"
		})
	}
	if !equality.Semantic.DeepEqual(want, got) {
		t.Errorf("the StatefulSet's pod template (without SLUICE_INSTANCE_ID) differs from the Deployment's:\n%s", firstDiff(t, want, got))
	}
}

// firstDiff shows where the JSON forms of a and b first differ.
func firstDiff(t *testing.T, a, b any) string {
	t.Helper()
	ja, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	la, lb := strings.Split(string(ja), "\n"), strings.Split(string(jb), "\n")
	for i := range max(len(la), len(lb)) {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  Deployment:  %s\n  StatefulSet: %s", i+1, x, y)
		}
	}
	return "(no textual difference)"
}
