// Command sluice turns an OpenAI-compatible chat-completions API into a
// Kafka-native batch engine. Run `sluice help` for the subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-dev/sluice/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"consume", "run a consumer-group member: prompts topic -> API -> results topic", runConsume},
		{"submit", "validate a JSONL file of prompts and produce it to the prompts topic", runSubmit},
		{"collect", "write the results of a submitted batch as JSONL, or tail the results topic", runCollect},
		{"demo", "run the whole pipeline in one process: embedded Kafka + simulated API", runDemo},
		{"mockapi", "serve a simulated OpenAI-compatible chat-completions API", runMockAPI},
		{"devkafka", "serve an in-process Kafka (kfake) for development", runDevKafka},
		{"version", "print the version", func(context.Context, []string) error {
			fmt.Println("sluice", version)
			return nil
		}},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	default:
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

// exitCode is an error that only sets the process's exit status (its
// command already said why).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		usage(os.Stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:])
		}
	}
	usage(os.Stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: sluice <command> [flags]   (sluice <command> --help for its flags and environment)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nsluice consume is configured by environment:")
	_ = config.Usage(w, &config.Consume{})
}
