package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sluice-dev/sluice/internal/devkafka"
)

func runDevKafka(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devkafka", flag.ContinueOnError)
	port := fs.Int("port", 9092, "port to listen on (127.0.0.1)")
	partitions := fs.Int("partitions", 8, "partitions of each topic")
	topics := fs.String("topics", strings.Join(devkafka.DefaultTopics, ","), "topics to create, comma-separated")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: sluice devkafka [flags]\n\nServes an in-process Kafka (franz-go's kfake) until interrupted; data lives in memory.")
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
		return usagef("devkafka", "--port must be between 0 and 65535, got %d", *port)
	}
	c, err := devkafka.Start(devkafka.Config{Port: *port, Partitions: int32(*partitions), Topics: strings.Split(*topics, ",")})
	if err != nil {
		return err
	}
	defer c.Close()
	log := newLogger("info")
	log.Info().Strs("brokers", c.ListenAddrs()).Str("topics", *topics).Int("partitions", *partitions).Msg("devkafka serving")
	<-ctx.Done()
	return nil
}
