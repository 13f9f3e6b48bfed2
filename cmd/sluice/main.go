// Command sluice turns an OpenAI-compatible chat-completions API into a
// Kafka-native batch engine. Run `sluice help` for the subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/sluice-dev/sluice/internal/config"
)

// version is set at build time with -ldflags "-X main.version=..."; else
// it is the module version `go install ...@v1.2.3` recorded, else "dev".
var version = ""

// buildVersion returns version, or the one Go recorded in the binary.
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func runVersion(_ context.Context, args []string) error {
	if len(args) > 0 {
		return usagef("version", "unexpected argument %q", args[0])
	}
	fmt.Println("sluice", buildVersion())
	return nil
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"consume", "run a consumer-group member: prompts topic -> API -> results topic", runConsume},
		{"submit", "validate a JSONL file of prompts and produce it to the prompts topic", runSubmit},
		{"collect", "write the results of a submitted batch as JSONL, or tail the results topic", runCollect},
		{"batches", "list the batch tier's jobs and their provider batches, or cancel one", runBatches},
		{"demo", "run the whole pipeline in one process: embedded Kafka + simulated API", runDemo},
		{"mockapi", "serve a simulated OpenAI-compatible chat-completions API", runMockAPI},
		{"devkafka", "serve an in-process Kafka (kfake) for development", runDevKafka},
		{"dev", "run devkafka and mockapi together for a local stack; Ctrl-C stops both", runDev},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	exit(err)
}

// exitCode is an error that only sets the process's exit status (its
// command already said why).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{err: errors.New("no command given")}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(os.Stdout)
		return nil
	case "-version", "--version":
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:])
		}
	}
	if len(args[0]) > 1 && args[0][0] == '-' {
		return usageError{err: fmt.Errorf("unknown flag %s (flags go after the command)", args[0])}
	}
	return usageError{err: fmt.Errorf("unknown command %q", args[0])}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: sluice <command> [flags]   (sluice <command> --help for its flags and environment)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nsluice --version prints the version. sluice consume is configured by environment:")
	_ = config.Usage(w, &config.Consume{})
}
