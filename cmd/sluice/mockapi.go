package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/rs/zerolog"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/mockapi"
)

// mockAPIDefaultAddr is the listen address when neither --addr nor
// SLUICE_MOCK_ADDR is given.
const mockAPIDefaultAddr = "127.0.0.1:8000"

// mockAPIShutdownTimeout bounds the graceful shutdown of the mock server.
const mockAPIShutdownTimeout = 5 * time.Second

// mockAPIEnvUsageFormat lists the envconfig variables as table rows.
const mockAPIEnvUsageFormat = `{{range .}}{{usage_key .}}	{{usage_type .}}	{{usage_default .}}	{{usage_description .}}
{{end}}`

// runMockAPI serves the OpenAI-compatible simulator until ctx is done.
// Configuration comes from SLUICE_MOCK_* variables; flags override a few.
func runMockAPI(ctx context.Context, args []string) error {
	var cfg mockapi.Config
	envErr := envconfig.Process(mockapi.EnvPrefix, &cfg)

	addr := os.Getenv(mockapi.EnvPrefix + "_ADDR")
	if addr == "" {
		addr = mockAPIDefaultAddr
	}
	fs := flag.NewFlagSet("mockapi", flag.ContinueOnError)
	fs.StringVar(&addr, "addr", addr, "listen address (env "+mockapi.EnvPrefix+"_ADDR)")
	fs.DurationVar(&cfg.Latency, "latency", cfg.Latency, "fixed answer latency (env "+mockapi.EnvPrefix+"_LATENCY)")
	fs.IntVar(&cfg.RPM, "rpm", cfg.RPM, "requests per minute limit, 0 = off (env "+mockapi.EnvPrefix+"_RPM)")
	fs.IntVar(&cfg.TPM, "tpm", cfg.TPM, "tokens per minute limit, 0 = off (env "+mockapi.EnvPrefix+"_TPM)")
	fs.DurationVar(&cfg.BatchDelay, "batch-delay", cfg.BatchDelay, "time from a batch request's arrival to its result (env "+mockapi.EnvPrefix+"_BATCH_DELAY)")
	fs.Float64Var(&cfg.BatchFail, "batch-fail", cfg.BatchFail, "probability that a batch request fails (env "+mockapi.EnvPrefix+"_BATCH_FAIL)")
	fs.Float64Var(&cfg.BatchExpire, "batch-expire", cfg.BatchExpire, "probability that a batch request expires (env "+mockapi.EnvPrefix+"_BATCH_EXPIRE)")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: sluice mockapi [flags]\n\n")
		fmt.Fprintf(out, "Serves an OpenAI-compatible chat-completions simulator (POST /v1/chat/completions,\n")
		fmt.Fprintf(out, "GET /v1/models, GET /stats, GET /healthz) and both Batch APIs (xAI's native\n")
		fmt.Fprintf(out, "/v1/batches and OpenAI's /v1/files + /v1/batches) until interrupted.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(out, "\nEnvironment (flags win over it):\n")
		tw := tabwriter.NewWriter(out, 1, 0, 3, ' ', 0)
		fmt.Fprintf(tw, "KEY\tTYPE\tDEFAULT\tDESCRIPTION\n")
		fmt.Fprintf(tw, "%s_ADDR\tString\t%s\tlisten address\n", mockapi.EnvPrefix, mockAPIDefaultAddr)
		var spec mockapi.Config
		if err := envconfig.Usagef(mockapi.EnvPrefix, &spec, tw, mockAPIEnvUsageFormat); err != nil {
			fmt.Fprintf(out, "(environment usage unavailable: %v)\n", err)
		}
		_ = tw.Flush()
	}
	if err := parseFlags(fs, args, os.Stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if envErr != nil {
		return fmt.Errorf("mockapi: %w", config.EnvError(envErr))
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("mockapi: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("mockapi: listen: %w", err)
	}
	log := zerolog.Ctx(ctx)
	if log.GetLevel() == zerolog.Disabled {
		l := zerolog.New(os.Stderr).With().Timestamp().Logger()
		log = &l
	}
	return serveMockAPI(ctx, ln, cfg, *log)
}

// serveMockAPI serves the simulator with cfg on ln until ctx is done, then
// shuts it down.
func serveMockAPI(ctx context.Context, ln net.Listener, cfg mockapi.Config, log zerolog.Logger) error {
	mock := mockapi.New(cfg)
	defer mock.Close()
	srv := &http.Server{Handler: mock, ReadHeaderTimeout: 10 * time.Second}

	log.Info().Str("addr", ln.Addr().String()).Str("url", "http://"+ln.Addr().String()+"/v1").
		Stringer("latency", cfg.Latency).Int("rpm", cfg.RPM).Int("tpm", cfg.TPM).
		Strs("models", cfg.Models).Msg("mock chat-completions API listening")

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("mockapi: serve: %w", err)
	case <-ctx.Done():
	}

	mock.Close() // release hanging and stalled requests so Shutdown can finish
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mockAPIShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("mockapi: shutdown: %w", err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("mockapi: serve: %w", err)
	}
	return nil
}
