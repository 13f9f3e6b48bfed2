package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
)

// docFiles are the documents whose snippets must each be run by a test or
// say why they cannot be, relative to this package's directory.
var docFiles = []string{"../../README.md", "../../docs/clients.md", "../../deploy/README.md"}

// snippet is a fenced code block of a document and the marker on the line
// before it: "runs: TestName ..." or "not runnable here: reason" (or "not
// runnable as written: reason").
type snippet struct {
	file, lang, marker, body string
	line                     int
}

var markerRE = regexp.MustCompile(`^<!--\s*(.*?)\s*-->$`)

// snippets returns the code blocks of file. Data examples (json, jsonc) and
// unlabelled blocks (program output, diagrams) are not snippets.
func snippets(t *testing.T, file string) []snippet {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []snippet
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "```") {
			continue
		}
		lang := strings.TrimPrefix(l, "```")
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
		start := i
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], strings.Repeat(" ", indent)))
		}
		if lang == "" || lang == "json" || lang == "jsonc" {
			continue
		}
		s := snippet{file: file, lang: lang, line: start + 1, body: strings.Join(body, "\n") + "\n"}
		for j := start - 1; j >= 0; j-- {
			if prev := strings.TrimSpace(lines[j]); prev != "" {
				if m := markerRE.FindStringSubmatch(prev); m != nil {
					s.marker = m[1]
				}
				break
			}
		}
		out = append(out, s)
	}
	return out
}

// TestDocSnippetsMarked: every snippet of the README and the docs is run
// by a test that exists, or says why it cannot be run here.
func TestDocSnippetsMarked(t *testing.T) {
	t.Parallel()
	tests := testNames(t)
	n := 0
	for _, f := range docFiles {
		for _, s := range snippets(t, f) {
			n++
			where := fmt.Sprintf("%s:%d (%s)", s.file, s.line, s.lang)
			switch {
			case strings.HasPrefix(s.marker, "runs: "):
				name := strings.FieldsFunc(strings.TrimPrefix(s.marker, "runs: "), func(r rune) bool { return r == ' ' || r == ',' || r == ';' })[0]
				if !tests[name] {
					t.Errorf("%s: marked as run by %s, which is no test of this repository", where, name)
				}
			case strings.HasPrefix(s.marker, "not runnable here: "), strings.HasPrefix(s.marker, "not runnable as written: "):
				if len(strings.Fields(s.marker)) < 5 {
					t.Errorf("%s: %q gives no reason", where, s.marker)
				}
			default:
				t.Errorf("%s: no <!-- runs: TestName --> or <!-- not runnable here: reason --> on the line before it", where)
			}
		}
	}
	if n < 10 {
		t.Fatalf("found %d snippets: the parser is broken", n)
	}
}

// testNames returns the Test functions of the repository.
func testNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	re := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestCIRunsReadmeTestCommand: .ci/run runs the README's test command word
// for word, so "what CI runs" stays true.
func TestCIRunsReadmeTestCommand(t *testing.T) {
	t.Parallel()
	var cmd string
	for _, s := range snippets(t, "../../README.md") {
		for _, l := range strings.Split(s.body, "\n") {
			if strings.HasPrefix(l, "go test ") && cmd == "" {
				cmd = strings.TrimSpace(l)
			}
		}
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if cmd == "" || !strings.Contains("\n"+string(ci)+"\n", "\n"+cmd+"\n") {
		t.Errorf(".ci/run does not run the README's test command %q", cmd)
	}
	if !strings.Contains(cmd, "-shuffle=on") || !strings.Contains(cmd, "-race") {
		t.Errorf("the README's test command %q lacks -race or -shuffle=on", cmd)
	}
}

// TestDocSnippets runs the snippets marked "runs: TestDocSnippets": the
// environment blocks are loaded as sluice consume loads them, and the kcat
// blocks run with
// bash against an embedded broker (localhost:9092 replaced by its address),
// each checked for its effect. The kcat blocks need kcat and jq, which
// .ci/run installs; without them they are skipped.
func TestDocSnippets(t *testing.T) {
	var env, kcat []snippet
	for _, f := range docFiles {
		for _, s := range snippets(t, f) {
			if !strings.HasPrefix(s.marker, "runs: TestDocSnippets") {
				if s.lang == "js" || s.lang == "python" {
					syntaxCheck(t, s)
				}
				continue
			}
			switch {
			case onlyExports(s.body):
				env = append(env, s)
			case strings.Contains(s.body, "kcat"):
				kcat = append(kcat, s)
			default:
				t.Errorf("%s:%d: marked as run by TestDocSnippets, which does not know how to run it", s.file, s.line)
			}
		}
	}
	if len(env) < 3 || len(kcat) != 3 {
		t.Fatalf("%d environment and %d kcat snippets, want 3+ and 3", len(env), len(kcat))
	}
	t.Run("environment", func(t *testing.T) {
		for _, s := range env {
			clearSluiceEnv(t)
			for k, v := range exports(s.body) {
				t.Setenv(k, v)
			}
			if _, err := config.LoadConsume(); err != nil {
				t.Errorf("%s:%d: sluice consume would not start: %v", s.file, s.line, err)
			}
		}
	})
	t.Run("kcat", func(t *testing.T) {
		for _, tool := range []string{"bash", "kcat", "jq"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s is not installed (.ci/run installs it): %v", tool, err)
			}
		}
		runKcatSnippets(t, kcat)
	})
}

// TestDocBuildSnippet runs the README's build snippet, building into a
// temporary directory instead of the clone (in parallel with the rest:
// a build without -race takes a while on a cold cache).
func TestDocBuildSnippet(t *testing.T) {
	t.Parallel()
	var build []snippet
	for _, s := range snippets(t, "../../README.md") {
		if strings.HasPrefix(s.marker, "runs: TestDocBuildSnippet") {
			build = append(build, s)
		}
	}
	if len(build) != 1 || !strings.Contains(build[0].body, "go build -o sluice ") {
		t.Fatalf("%d build snippets, want 1 with go build -o sluice", len(build))
	}
	dir := t.TempDir()
	body := strings.ReplaceAll(build[0].body, "-o sluice", "-o "+filepath.Join(dir, "sluice"))
	body = strings.ReplaceAll(body, "./sluice", filepath.Join(dir, "sluice"))
	out, err := bash(t, "../..", body)
	if err != nil || !strings.HasPrefix(out, "sluice ") {
		t.Fatalf("%s:%d: %v\n%s", build[0].file, build[0].line, err, out)
	}
}

func runKcatSnippets(t *testing.T, kcat []snippet) {
	cluster, err := devkafka.Start(devkafka.Config{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	broker := cluster.ListenAddrs()[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	count := func(topic string) int64 {
		ends, err := adm.ListEndOffsets(context.Background(), topic)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		return n
	}
	dir := t.TempDir()
	const valid = `{"custom_id":"d-1","prompt":"one"}
{"custom_id":"d-2","prompt":"two"}
{"custom_id":"d-3","model":"grok-4","messages":[{"role":"user","content":"three\tand a tab"}]}
`
	if err := os.WriteFile(filepath.Join(dir, "prompts.jsonl"), []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(s snippet) (string, error) {
		return bash(t, dir, strings.ReplaceAll(s.body, "localhost:9092", broker))
	}
	unkeyed, keyed, read := kcat[0], kcat[1], kcat[2]

	if out, err := run(unkeyed); err != nil || count("prompts") != 3 {
		t.Fatalf("%s:%d: %v, %d records on prompts, want 3\n%s", unkeyed.file, unkeyed.line, err, count("prompts"), out)
	}
	if out, err := run(keyed); err != nil || count("prompts") != 6 {
		t.Fatalf("%s:%d: %v, %d records on prompts, want 6\n%s", keyed.file, keyed.line, err, count("prompts"), out)
	}
	keys := readKeys(t, broker, "prompts", 6)
	for _, id := range []string{"d-1", "d-2", "d-3"} {
		if !keys[id] {
			t.Errorf("%s:%d: no record keyed %s (keys %v)", keyed.file, keyed.line, id, keys)
		}
	}
	// The bundled examples have a line that is not JSON: the keyed
	// pipeline must fail, loudly, having produced nothing.
	ex, err := os.ReadFile("../../examples/prompts.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prompts.jsonl"), ex, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(keyed); err == nil || count("prompts") != 6 || out == "" {
		t.Errorf("%s:%d with an invalid line: %v, %d records on prompts (want a failure, with a message, and still 6)\n%s", keyed.file, keyed.line, err, count("prompts"), out)
	}

	// Results to read: one success, one failure.
	results := []string{
		`{"id":"res_1","custom_id":"d-1","response":{"status_code":200,"request_id":"r","body":{}},"error":null,"source":{"topic":"prompts","partition":0,"offset":0},"attempts":1,"latency_ms":5}`,
		`{"id":"res_2","custom_id":"d-2","response":null,"error":{"code":"invalid_input","message":"no messages"},"source":{"topic":"prompts","partition":0,"offset":1},"attempts":0,"latency_ms":0}`,
	}
	for _, r := range results {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "completions", Value: []byte(r)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	out, err := run(read)
	if err != nil {
		t.Fatalf("%s:%d: %v\n%s", read.file, read.line, err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "results.jsonl"))
	if err != nil || strings.Count(string(got), "\n") != 2 {
		t.Errorf("%s:%d: results.jsonl = %q (%v), want the 2 results", read.file, read.line, got, err)
	}
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"custom_id":"d-2"`) {
		t.Errorf("%s:%d: the failures = %q, want d-2's", read.file, read.line, out)
	}
}

// readKeys reads n records of topic from the start and returns their keys.
func readKeys(t *testing.T, broker, topic string, n int) map[string]bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	keys := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for read := 0; read < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", read, n, topic)
		}
		for _, r := range fs.Records() {
			read++
			keys[string(r.Key)] = true
		}
	}
	return keys
}

// bash runs script with bash -e in dir and returns its combined output.
func bash(t *testing.T, dir, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-e", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// syntaxCheck parses a JavaScript or Python snippet with node or python3
// when they are installed: a snippet that is not run must still parse.
func syntaxCheck(t *testing.T, s snippet) {
	t.Helper()
	var args []string
	name := filepath.Join(t.TempDir(), "snippet")
	switch s.lang {
	case "js":
		name += ".js"
		args = []string{"node", "--check", name}
	case "python":
		name += ".py"
		args = []string{"python3", "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", name}
	}
	if _, err := exec.LookPath(args[0]); err != nil {
		t.Logf("%s:%d: %s not installed, syntax not checked", s.file, s.line, args[0])
		return
	}
	if err := os.WriteFile(name, []byte(s.body), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Errorf("%s:%d: %s snippet does not parse: %v\n%s", s.file, s.line, s.lang, err, out)
	}
}

// onlyExports reports whether body is only export lines and comments.
func onlyExports(body string) bool {
	n := 0
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "", strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "export "):
			n++
		default:
			return false
		}
	}
	return n > 0
}

// exports returns the variables of export lines (no quoting, as the docs
// write them), trailing comments dropped.
func exports(body string) map[string]string {
	env := map[string]string{}
	for _, l := range strings.Split(body, "\n") {
		l, _, _ = strings.Cut(l, "#")
		for _, kv := range strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "export")) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
	}
	return env
}

// clearSluiceEnv unsets SLUICE_* and XAI_* for the rest of the test.
func clearSluiceEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SLUICE_") || strings.HasPrefix(k, "XAI_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// TestDevStack runs the README's local stack: `sluice dev` and `sluice
// consume` as processes (on free ports), the bundled prompts submitted and
// collected; then SIGTERM ends both, and both of dev's ports are free again.
func TestDevStack(t *testing.T) {
	t.Parallel()
	dev := exec.Command(os.Args[0], "-test.run=^$")
	dev.Env = append(os.Environ(), "SLUICE_TEST_RUN_MAIN=1", "SLUICE_TEST_ARGS=dev --port 0 --api-addr 127.0.0.1:0 --latency 20ms")
	stdout, err := dev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var devLogs syncBuffer
	dev.Stderr = &devLogs
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Process.Kill(); _ = dev.Wait() })
	sc := bufio.NewScanner(stdout)
	var exports string
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "export "); ok {
			exports = rest
			break
		}
	}
	go io.Copy(io.Discard, stdout) //nolint:errcheck // drain the rest
	env := strings.Fields(exports)
	if len(env) != 3 {
		t.Fatalf("sluice dev printed %q, want an export line of three variables\n%s", exports, devLogs.String())
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}

	consume := exec.Command(os.Args[0], "-test.run=^$")
	consume.Env = append(os.Environ(), "SLUICE_TEST_RUN_MAIN=1", "SLUICE_TEST_ARGS=consume", "SLUICE_HTTP_ADDR=", "SLUICE_COMMIT_INTERVAL=100ms")
	consume.Env = append(consume.Env, env...)
	var consumeLogs syncBuffer
	consume.Stderr = &consumeLogs
	if err := consume.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = consume.Process.Kill(); _ = consume.Wait() })

	state := t.TempDir()
	out, errOut, err := runCLI(t, submit, "", "--brokers", vars["SLUICE_BROKERS"], "--state-dir", state, "../../examples/prompts.jsonl")
	// The bundled examples include invalid lines on purpose: submit
	// rejects them by number and exits 2 (some lines rejected).
	if err != exitCode(2) {
		t.Fatalf("submit: %v, want exit status 2 for the examples' invalid lines\n%s\n%s", err, out, errOut)
	}
	id := strings.SplitN(out, "\n", 2)[0]
	results := filepath.Join(t.TempDir(), "results.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var cout, cerr strings.Builder
	err = collect(ctx, []string{"--brokers", vars["SLUICE_BROKERS"], "--state-dir", state, "--batch", id, "--wait", "--out", results}, stdio{in: strings.NewReader(""), out: &cout, errOut: &cerr})
	if err != nil {
		if _, ok := err.(exitCode); !ok { // 2: some failed, which the simulator's faults may cause
			t.Fatalf("collect: %v\n%s\nconsume logs:\n%s", err, cerr.String(), consumeLogs.String())
		}
	}
	if n := len(readJSONL(t, results)); n == 0 {
		t.Errorf("no results collected")
	}

	for name, c := range map[string]*exec.Cmd{"consume": consume, "dev": dev} {
		if err := c.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := c.Wait(); err != nil {
			t.Errorf("%s after SIGTERM: %v", name, err)
		}
	}
	// Both of dev's ports are free: nothing of it outlived the process.
	for _, addr := range []string{vars["SLUICE_BROKERS"], strings.TrimSuffix(strings.TrimPrefix(vars["SLUICE_API_BASE_URL"], "http://"), "/v1")} {
		ln, err := netListen(addr)
		if err != nil {
			t.Errorf("%s still taken after sluice dev exited: %v", addr, err)
			continue
		}
		ln.Close()
	}
}

func netListen(addr string) (io.Closer, error) { return net.Listen("tcp", addr) }
