package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/internal/mockapi"
)

// runDev serves an in-process Kafka and the API simulator in one process,
// so one Ctrl-C (or SIGTERM) stops both and frees both ports: the local
// stack of the README without a background process to forget.
func runDev(ctx context.Context, args []string) error {
	var mcfg mockapi.Config
	envErr := envconfig.Process(mockapi.EnvPrefix, &mcfg)

	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	port := fs.Int("port", 9092, "Kafka port on 127.0.0.1 (0 = any free port)")
	partitions := fs.Int("partitions", 8, "partitions of each topic")
	topics := fs.String("topics", strings.Join(devkafka.DefaultTopics, ","), "topics to create, comma-separated")
	apiAddr := fs.String("api-addr", mockAPIDefaultAddr, "listen address of the API simulator")
	fs.DurationVar(&mcfg.Latency, "latency", mcfg.Latency, "fixed answer latency of the simulator (env "+mockapi.EnvPrefix+"_LATENCY)")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintln(out, `Usage: sluice dev [flags]

Serves an in-process Kafka (as sluice devkafka) and the API simulator (as
sluice mockapi, configured by the same SLUICE_MOCK_* variables) until
interrupted; Ctrl-C or SIGTERM stops both. Prints on stdout the variables
that point sluice consume, submit and collect at them.

Flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, os.Stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := atLeast(fs, "partitions", *partitions, 1); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 {
		return usagef("dev", "--port must be between 0 and 65535, got %d", *port)
	}
	if envErr != nil {
		return fmt.Errorf("dev: %w", config.EnvError(envErr))
	}
	if err := mcfg.Validate(); err != nil {
		return fmt.Errorf("dev: %w", err)
	}

	ln, err := net.Listen("tcp", *apiAddr)
	if err != nil {
		return fmt.Errorf("dev: API simulator: listen: %w", err)
	}
	cluster, err := devkafka.Start(devkafka.Config{Port: *port, Partitions: int32(*partitions), Topics: strings.Split(*topics, ",")})
	if err != nil {
		ln.Close()
		return fmt.Errorf("dev: %w", err)
	}
	defer cluster.Close()

	brokers := strings.Join(cluster.ListenAddrs(), ",")
	baseURL := "http://" + ln.Addr().String() + "/v1"
	fmt.Fprintf(os.Stdout, "sluice dev: Kafka on %s (topics %s, %d partitions), API simulator on %s; Ctrl-C stops both\n", brokers, *topics, *partitions, baseURL)
	fmt.Fprintf(os.Stdout, "export SLUICE_BROKERS=%s SLUICE_API_BASE_URL=%s SLUICE_API_KEYLESS=true\n", brokers, baseURL)

	log := newLogger("info")
	err = serveMockAPI(ctx, ln, mcfg, log)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info().Msg("dev: Kafka and the API simulator stopped")
	return err
}
