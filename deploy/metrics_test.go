package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

const (
	dashboardFile = "k8s/base/grafana-dashboard.json"
	readmeFile    = "README.md"
	// kpromNamespace is the namespace cmd/sluice gives franz-go's kprom.
	kpromNamespace = "sluice_kafka"
)

type metricType int

const (
	counter metricType = iota
	gauge
	histogram
)

// metricSpec is a metric's type and label names.
type metricSpec struct {
	typ    metricType
	labels []string
}

// contract lists sluice's own metrics: what the dashboard and the alerts in
// README.md may query. The code exports them (TestContractMatchesCode
// compares the two); a rename there must be made here and in the manifests
// too.
var contract = map[string]metricSpec{
	"sluice_records_consumed_total":          {counter, nil},
	"sluice_records_succeeded_total":         {counter, nil},
	"sluice_records_failed_total":            {counter, []string{"code"}},
	"sluice_records_dead_lettered_total":     {counter, []string{"code"}},
	"sluice_api_requests_total":              {counter, []string{"model", "status_class"}}, // 2xx, 4xx, 429, 5xx, error
	"sluice_api_retries_total":               {counter, nil},
	"sluice_api_request_duration_seconds":    {histogram, []string{"model"}},
	"sluice_api_time_to_first_token_seconds": {histogram, []string{"model"}},
	"sluice_api_tokens_total":                {counter, []string{"model", "kind"}}, // prompt, completion, reasoning
	"sluice_api_rate_limited_total":          {counter, nil},                       // 429s about the rate, not the quota
	"sluice_api_stream_tokens_per_second":    {histogram, []string{"model"}},
	"sluice_stream_deltas_lost_total":        {counter, nil},
	"sluice_records_redone_total":            {counter, nil}, // processed again: aborted transaction, failed outputs
	"sluice_records_skipped_total":           {counter, nil}, // listed finished by the committed offset map
	"sluice_results_reused_total":            {counter, nil}, // of the redone, published again without a call
	"sluice_buffered_bytes":                  {gauge, nil},   // against SLUICE_MAX_BUFFERED_BYTES
	"sluice_in_flight_requests":              {gauge, nil},
	"sluice_limiter_concurrency":             {gauge, nil},
	"sluice_limiter_cooldown_seconds":        {gauge, nil},
	"sluice_limiter_paused":                  {gauge, nil}, // 1 while paused for quota or auth
	"sluice_limiter_tokens_available":        {gauge, nil}, // -1 without SLUICE_TPM
	"sluice_limiter_budget_share":            {gauge, nil},
	"sluice_partition_uncommitted_records":   {gauge, []string{"topic", "partition"}},
	// Share-group mode: acquired, accepted, released, renewed, redelivered, delivery_limit.
	"sluice_share_records_total": {counter, []string{"event"}},
	// Every replica reports the whole group's lag: aggregate with max by
	// (topic, partition), never sum over pods.
	"sluice_consumer_group_lag_records": {gauge, []string{"topic", "partition"}},
	// The batch tier: each replica reports the jobs it owns (sum over
	// replicas).
	"sluice_batch_results_published_total":            {counter, []string{"code"}}, // ok or the error code
	"sluice_batch_cost_usd_total":                     {counter, nil},
	"sluice_batch_state_changes_total":                {counter, []string{"state"}},
	"sluice_batch_open_batches":                       {gauge, nil},
	"sluice_batch_requests_pending":                   {gauge, nil},
	"sluice_batch_oldest_pending_request_age_seconds": {gauge, nil},
}

// targetLabels are the labels Prometheus adds to every scraped series
// (through the ServiceMonitor).
var targetLabels = []string{"namespace", "pod", "instance", "job", "service", "endpoint", "container"}

// kpromMetrics returns franz-go's client metrics as cmd/sluice registers
// them (kprom under kpromNamespace), read from their descriptors.
var kpromMetrics = sync.OnceValues(func() (map[string]metricSpec, error) {
	rec := &descRecorder{Registry: prometheus.NewRegistry(), specs: map[string]metricSpec{}}
	m := kprom.NewMetrics(kpromNamespace, kprom.Registry(rec))
	// kprom registers its collectors when a client is created; creating one
	// does not connect.
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.WithHooks(m))
	if err != nil {
		return nil, err
	}
	cl.Close()
	if rec.err != nil {
		return nil, rec.err
	}
	if len(rec.specs) == 0 {
		return nil, fmt.Errorf("kprom registered no metrics")
	}
	return rec.specs, nil
})

// descRecorder is a registry that also records the name and labels of
// every metric registered with it.
type descRecorder struct {
	*prometheus.Registry
	mu    sync.Mutex
	specs map[string]metricSpec
	err   error
}

// descPattern parses prometheus.Desc.String(), which is the only way to
// read a descriptor's name and labels.
var descPattern = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		m := descPattern.FindStringSubmatch(d.String())
		if m == nil {
			r.err = fmt.Errorf("cannot parse %s", d)
			continue
		}
		var lbls []string
		for l := range strings.SplitSeq(m[2], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				lbls = append(lbls, l)
			}
		}
		// Histograms expose _bucket, _sum and _count; kprom names them
		// *_seconds, its counters *_total and its gauges anything else.
		typ := gauge
		switch {
		case strings.HasSuffix(m[1], "_total"):
			typ = counter
		case strings.HasSuffix(m[1], "_seconds"):
			typ = histogram
		}
		r.specs[m[1]] = metricSpec{typ, lbls}
	}
	return r.Registry.Register(c)
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// lookupMetric resolves a series name (a histogram's _bucket, _sum or
// _count included) to its metric.
func lookupMetric(series string) (name string, spec metricSpec, bucket bool, err error) {
	specs := contract
	if strings.HasPrefix(series, kpromNamespace+"_") {
		if specs, err = kpromMetrics(); err != nil {
			return "", metricSpec{}, false, err
		}
	}
	if s, ok := specs[series]; ok && s.typ != histogram {
		return series, s, false, nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if s, found := specs[base]; ok && found && s.typ == histogram {
			return base, s, suffix == "_bucket", nil
		}
	}
	if s, ok := specs[series]; ok && s.typ == histogram {
		return "", metricSpec{}, false, fmt.Errorf("%s is a histogram: query %[1]s_bucket, _sum or _count", series)
	}
	return "", metricSpec{}, false, fmt.Errorf("%s is not a sluice metric (not in the contract of deploy/metrics_test.go nor registered by kprom)", series)
}

var (
	seriesPattern   = regexp.MustCompile(`\b(sluice_[a-z0-9_]+)\b\s*(\{[^}]*\})?`)
	matcherPattern  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupingPattern = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	legendPattern   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// checkExpr checks a PromQL expression: every sluice series it selects
// exists, and every label it matches, groups by or shows in legend is one
// those series have. It is a lexical check, not a PromQL parser: enough for
// the dashboard's and the alerts' expressions.
func checkExpr(expr, legend string) []error {
	var errs []error
	allowed := map[string]bool{}
	for _, l := range targetLabels {
		allowed[l] = true
	}
	matches := seriesPattern.FindAllStringSubmatch(expr, -1)
	if len(matches) == 0 {
		return []error{fmt.Errorf("%q queries no sluice metric", expr)}
	}
	type selector struct {
		series   string
		matchers string
		labels   map[string]bool
	}
	var sels []selector
	for _, m := range matches {
		_, spec, bucket, err := lookupMetric(m[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		own := map[string]bool{}
		for _, l := range spec.labels {
			own[l], allowed[l] = true, true
		}
		if bucket {
			own["le"], allowed["le"] = true, true
		}
		sels = append(sels, selector{m[1], m[2], own})
	}
	for _, s := range sels {
		for _, m := range matcherPattern.FindAllStringSubmatch(s.matchers, -1) {
			if l := m[1]; !s.labels[l] && !slices.Contains(targetLabels, l) {
				errs = append(errs, fmt.Errorf("%s has no label %q", s.series, l))
			}
		}
	}
	grouped := map[string]bool{}
	groupings := groupingPattern.FindAllStringSubmatch(expr, -1)
	for _, g := range groupings {
		for l := range strings.SplitSeq(g[1], ",") {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			grouped[l] = true
			if !allowed[l] {
				errs = append(errs, fmt.Errorf("%q groups by %q, a label none of its metrics has", expr, l))
			}
		}
	}
	for _, m := range legendPattern.FindAllStringSubmatch(legend, -1) {
		l := m[1]
		if len(groupings) > 0 && !grouped[l] || !allowed[l] {
			errs = append(errs, fmt.Errorf("legend %q shows {{%s}}, which %q does not keep", legend, l, expr))
		}
	}
	return errs
}

func TestCheckExprFails(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ expr, legend string }{
		{`rate(sluice_records_consumd_total[5m])`, ""},                                    // misspelled metric
		{`sum by (status) (rate(sluice_api_requests_total[5m]))`, ""},                     // unknown label
		{`sluice_api_requests_total{status_code="429"}`, ""},                              // unknown matcher label
		{`sluice_api_request_duration_seconds`, ""},                                       // a histogram's bare name
		{`sluice_in_flight_requests_bucket`, ""},                                          // a gauge is no histogram
		{`sum by (code) (rate(sluice_records_failed_total[5m]))`, "{{model}}"},            // legend label dropped
		{`rate(sluice_kafka_fetch_recods_total[5m])`, ""},                                 // misspelled kprom metric
		{`histogram_quantile(0.9, sum by (le) (rate(sluice_api_retries_total[5m])))`, ""}, // le of a counter
		{`up`, ""}, // no sluice metric at all
	} {
		if errs := checkExpr(c.expr, c.legend); len(errs) == 0 {
			t.Errorf("checkExpr(%q, %q) found nothing wrong", c.expr, c.legend)
		}
	}
	for _, c := range []struct{ expr, legend string }{
		{`histogram_quantile(0.99, sum by (le, model) (rate(sluice_api_request_duration_seconds_bucket{namespace="x"}[5m])))`, "{{model}}"},
		{`sum by (topic) (rate(sluice_kafka_fetch_records_total[5m]))`, "{{topic}}"},
		{`max by (pod) (sluice_limiter_paused) == 1`, "{{pod}}"},
	} {
		if errs := checkExpr(c.expr, c.legend); len(errs) != 0 {
			t.Errorf("checkExpr(%q, %q): %v", c.expr, c.legend, errs)
		}
	}
}

// dashboard is the part of Grafana's dashboard JSON model the dashboard
// uses; decoded strictly, so a misspelled field fails.
type dashboard struct {
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	Description   string   `json:"description"`
	Tags          []string `json:"tags"`
	Timezone      string   `json:"timezone"`
	Editable      bool     `json:"editable"`
	GraphTooltip  int      `json:"graphTooltip"`
	SchemaVersion int      `json:"schemaVersion"`
	Version       int      `json:"version"`
	Refresh       string   `json:"refresh"`
	Time          struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []struct {
			Name       string      `json:"name"`
			Label      string      `json:"label"`
			Type       string      `json:"type"`
			Query      string      `json:"query"`
			Datasource *datasource `json:"datasource"`
			Refresh    int         `json:"refresh"`
			Sort       int         `json:"sort"`
			Multi      bool        `json:"multi"`
			IncludeAll bool        `json:"includeAll"`
			AllValue   string      `json:"allValue"`
			Hide       int         `json:"hide"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID          int         `json:"id"`
		Type        string      `json:"type"`
		Title       string      `json:"title"`
		Description string      `json:"description"`
		Datasource  *datasource `json:"datasource"`
		GridPos     struct {
			H int `json:"h"`
			W int `json:"w"`
			X int `json:"x"`
			Y int `json:"y"`
		} `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Unit string   `json:"unit"`
				Min  *float64 `json:"min"`
				Max  *float64 `json:"max"`
			} `json:"defaults"`
			Overrides []json.RawMessage `json:"overrides"`
		} `json:"fieldConfig"`
		Options struct {
			Legend struct {
				DisplayMode string `json:"displayMode"`
				Placement   string `json:"placement"`
			} `json:"legend"`
			Tooltip struct {
				Mode string `json:"mode"`
				Sort string `json:"sort"`
			} `json:"tooltip"`
		} `json:"options"`
		Targets []struct {
			RefID        string `json:"refId"`
			Expr         string `json:"expr"`
			LegendFormat string `json:"legendFormat"`
		} `json:"targets"`
	} `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: want a uid, a title and panels", dashboardFile)
	}

	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" {
			for _, m := range seriesPattern.FindAllStringSubmatch(v.Query, -1) {
				if _, _, _, err := lookupMetric(m[1]); err != nil {
					t.Errorf("variable %s: %v", v.Name, err)
				}
			}
		}
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	type rect struct {
		title      string
		x, y, w, h int
	}
	var rects []rect
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if p.Title == "" || g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %d %q: needs a title and a gridPos within 24 columns, got %+v", p.ID, p.Title, g)
		}
		for _, o := range rects {
			if g.X < o.x+o.w && o.x < g.X+g.W && g.Y < o.y+o.h && o.y < g.Y+g.H {
				t.Errorf("panel %q overlaps panel %q", p.Title, o.title)
			}
		}
		rects = append(rects, rect{p.Title, g.X, g.Y, g.W, g.H})
		if p.Datasource == nil || !strings.HasPrefix(p.Datasource.UID, "$") || !vars[strings.Trim(p.Datasource.UID, "${}")] {
			t.Errorf("panel %q: datasource must be the dashboard's datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: missing or repeated refId %q", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			for _, err := range checkExpr(tg.Expr, tg.LegendFormat) {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			for _, m := range seriesPattern.FindAllStringSubmatch(tg.Expr, -1) {
				if name, _, _, err := lookupMetric(m[1]); err == nil {
					used[name] = true
				}
			}
			for _, v := range []string{"namespace", "pod"} {
				if !strings.Contains(tg.Expr, "$"+v) {
					t.Errorf("panel %q: %q ignores the $%s variable", p.Title, tg.Expr, v)
				}
			}
		}
	}
	for name := range contract {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}

// promqlBlock finds ```promql fenced blocks in Markdown.
var promqlBlock = regexp.MustCompile("(?s)```promql\n(.*?)```")

// The alert examples of deploy/README.md query what exists.
func TestReadmeAlerts(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(readmeFile)
	if err != nil {
		t.Fatal(err)
	}
	blocks := promqlBlock.FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 5 {
		t.Fatalf("%s: %d promql blocks, want the alert examples", readmeFile, len(blocks))
	}
	for _, b := range blocks {
		// One expression per block; # lines are comments.
		var lines []string
		for l := range strings.SplitSeq(b[1], "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "#") {
				lines = append(lines, l)
			}
		}
		expr := strings.Join(lines, "\n")
		for _, err := range checkExpr(expr, "") {
			t.Errorf("%s: %v", readmeFile, err)
		}
	}
}

// The kprom names the manifests rely on are franz-go's.
func TestKpromMetrics(t *testing.T) {
	t.Parallel()
	specs, err := kpromMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sluice_kafka_fetch_records_total", "sluice_kafka_produce_records_total", "sluice_kafka_connect_errors_total"} {
		if _, ok := specs[name]; !ok {
			t.Errorf("kprom registers no %s (have %d metrics)", name, len(specs))
		}
	}
	for name := range specs {
		if _, dup := contract[name]; dup {
			t.Errorf("%s is both in the contract and kprom's", name)
		}
	}
}
