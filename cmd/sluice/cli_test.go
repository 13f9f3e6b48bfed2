package main

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runMain runs the real main in a child process with args and env (on top
// of an environment without SLUICE_* or XAI_* variables) and returns its
// exit status, stdout and stderr.
func runMain(t *testing.T, args string, env ...string) (status int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") && !strings.HasPrefix(kv, "XAI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "SLUICE_TEST_RUN_MAIN=1", "SLUICE_TEST_ARGS="+args)
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		status = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return status, out.String(), errOut.String()
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// TestCLI: each command-line case of issue #16, by exit status and the
// first line of output. Usage errors are two lines on stderr (the error,
// then where help is) and exit 2; configuration errors are one line and
// exit 1; asked-for output goes to stdout and exits 0.
func TestCLI(t *testing.T) {
	t.Parallel()
	const dur = `sluice: invalid configuration: SLUICE_DRAIN_TIMEOUT: "25" is not a duration; give a number with a unit, e.g. 25s, 500ms or 2m`
	for _, tc := range []struct {
		name    string
		args    string
		env     []string
		status  int
		stdout  bool   // the first line is on stdout, else on stderr
		first   string // prefix of the first line
		nLines  int    // lines on stderr, 0 = not checked
		contain []string
	}{
		{name: "--version", args: "--version", stdout: true, first: "sluice "},
		{name: "version", args: "version", stdout: true, first: "sluice "},
		{name: "no arguments", args: "", status: 2, first: "sluice: no command given", nLines: 2},
		{name: "unknown command", args: "frobnicate", status: 2, first: `sluice: unknown command "frobnicate"`, nLines: 2,
			contain: []string{"Run 'sluice --help' for usage."}},
		{name: "unknown top-level flag", args: "--frobnicate", status: 2, first: "sluice: unknown flag --frobnicate", nLines: 2},
		{name: "unknown flag", args: "demo --nope", status: 2, first: "sluice demo: flag provided but not defined: -nope", nLines: 2,
			contain: []string{"Run 'sluice demo --help' for usage."}},
		{name: "bad flag value", args: "demo --partitions=many", status: 2, first: `sluice demo: invalid value "many" for flag -partitions`, nLines: 2},
		{name: "negative partitions", args: "demo --partitions -3", status: 2, first: "sluice demo: --partitions must be at least 1, got -3", nLines: 2},
		{name: "demo extra argument", args: "demo now", status: 2, first: `sluice demo: unexpected argument "now"`, nLines: 2},
		{name: "consume extra argument", args: "consume extra-arg", status: 2, first: `sluice consume: unexpected argument "extra-arg"`, nLines: 2},
		{name: "devkafka partitions", args: "devkafka --partitions 0", status: 2, first: "sluice devkafka: --partitions must be at least 1, got 0", nLines: 2},
		{name: "dev partitions", args: "dev --partitions -1", status: 2, first: "sluice dev: --partitions must be at least 1, got -1", nLines: 2},
		{name: "mockapi extra argument", args: "mockapi x", status: 2, first: `sluice mockapi: unexpected argument "x"`, nLines: 2},
		{name: "submit without a file", args: "submit", status: 2, first: "sluice submit: want exactly one FILE", nLines: 2},
		{name: "collect without a mode", args: "collect", status: 2, first: "sluice collect: give exactly one of --batch, --ids or --follow", nLines: 2},
		{name: "duration without unit", args: "consume", env: []string{"SLUICE_API_KEY=sk-1", "SLUICE_DRAIN_TIMEOUT=25"}, status: 1, first: dur, nLines: 1},
		{name: "mock duration without unit", args: "mockapi", env: []string{"SLUICE_MOCK_LATENCY=200"}, status: 1,
			first: `sluice: mockapi: invalid configuration: SLUICE_MOCK_LATENCY: "200" is not a duration`, nLines: 1},
		{name: "no API key", args: "consume", status: 1, nLines: 1,
			first:   "sluice: invalid configuration: SLUICE_API_KEY: not set",
			contain: []string{"SLUICE_API_KEY_FILE", "XAI_API_KEY", "SLUICE_API_KEYLESS=true"}},
		{name: "keyless with a key", args: "consume", env: []string{"SLUICE_API_KEYLESS=true", "SLUICE_API_KEY=sk-1"}, status: 1, nLines: 1,
			first: "sluice: invalid configuration: SLUICE_API_KEYLESS: is true, yet SLUICE_API_KEY or SLUICE_API_KEY_FILE is set"},
		{name: "bad compression", args: "consume", env: []string{"SLUICE_API_KEY=sk-1", "SLUICE_COMPRESSION=brotli"}, status: 1, nLines: 1,
			first: `sluice: invalid configuration: SLUICE_COMPRESSION: must be none, gzip, snappy, lz4 or zstd, got "brotli"`},
		{name: "--help", args: "--help", stdout: true, first: "Usage: sluice <command> [flags]", contain: []string{"dev ", "SLUICE_COMPRESSION", "SLUICE_API_KEYLESS"}},
		{name: "demo --help", args: "demo --help", stdout: true, first: "Usage: sluice demo [flags]",
			contain: []string{"SLUICE_API_KEY,", "SLUICE_API_KEY_FILE", "XAI_API_KEY", "SLUICE_API_KEYLESS", "SLUICE_API_BASE_URL"}},
		{name: "consume --help", args: "consume --help", stdout: true, first: "Usage: sluice consume"},
		{name: "dev --help", args: "dev --help", stdout: true, first: "Usage: sluice dev [flags]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, stdout, stderr := runMain(t, tc.args, tc.env...)
			out := stderr
			if tc.stdout {
				out = stdout
			}
			ls := lines(out)
			if status != tc.status || len(ls) == 0 || !strings.HasPrefix(ls[0], tc.first) {
				t.Fatalf("sluice %s: exit %d, first line %q; want exit %d, first line %q...\nstdout:\n%s\nstderr:\n%s",
					tc.args, status, strings.Join(ls[:min(1, len(ls))], ""), tc.status, tc.first, stdout, stderr)
			}
			if n := len(lines(stderr)); tc.nLines > 0 && n != tc.nLines {
				t.Errorf("sluice %s: %d lines on stderr, want %d:\n%s", tc.args, n, tc.nLines, stderr)
			}
			for _, s := range tc.contain {
				if !strings.Contains(out, s) {
					t.Errorf("sluice %s: output lacks %q:\n%s", tc.args, s, out)
				}
			}
		})
	}
}

// TestLogDurationsCarryUnits: zerolog's Dur writes a bare number
// ("drain_timeout":25000) whose unit a reader must guess. Log durations
// as strings with their unit (Stringer: "25s") or as numbers with the unit
// in the field name. This checks every non-test file of the module.
func TestLogDurationsCarryUnits(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Dur" || sel.Sel.Name == "Durs") {
				t.Errorf("%s: zerolog %s logs a duration without its unit; use Stringer(name, d) or a name ending in its unit", fset.Position(sel.Sel.Pos()), sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
