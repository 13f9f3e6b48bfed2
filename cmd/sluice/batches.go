package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/batchapi"
	"github.com/sluice-dev/sluice/internal/batchjob"
	"github.com/sluice-dev/sluice/internal/config"
)

// runBatches lists the batch tier's jobs, or cancels one.
func runBatches(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("batches", flag.ContinueOnError)
	noProvider := fs.Bool("no-provider", false, "list from the jobs topic only, without asking the provider for each batch's state")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: sluice batches [--no-provider]\n       sluice batches cancel ID\n\nLists the batch tier's jobs (SLUICE_BATCH_JOBS_TOPIC) with their state, counts and age,\nthe provider's state read for each; cancel asks the job's owner to cancel its provider\nbatch (ID: the job's id or the provider's batch id). Configured by the environment\nof sluice consume.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, os.Stdout); err != nil {
		return err
	}
	rest := fs.Args()
	cancelID := ""
	switch {
	case len(rest) == 0:
	case rest[0] == "cancel" && len(rest) == 2:
		cancelID = rest[1]
	case rest[0] == "cancel":
		return usagef("batches", "cancel takes one ID")
	default:
		return usagef("batches", "unexpected argument %q", rest[0])
	}
	cfg, err := config.LoadConsume()
	if err != nil {
		return err
	}
	cfg.Batch = cfg.Batch.WithDefaults()
	log := newLogger(cfg.LogLevel)
	kopts, err := kafkaOpts(cfg.Kafka, log)
	if err != nil {
		return err
	}
	topic := cfg.JobsTopic(cfg.InputTopic)
	cl, err := kgo.NewClient(append(kopts, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	jobs, err := batchjob.ReadJobs(rctx, cl, topic)
	if err != nil {
		return err
	}
	if cancelID != "" {
		for _, j := range jobs {
			if j.ID == cancelID || (j.Job.BatchID != "" && j.Job.BatchID == cancelID) {
				if err := batchjob.RequestCancel(rctx, cl, topic, j.Partition, j.ID); err != nil {
					return err
				}
				fmt.Printf("cancel of job %s requested: its owner cancels the provider batch at its next poll (SLUICE_BATCH_POLL_INTERVAL); its pending records get code cancelled\n", j.ID)
				return nil
			}
		}
		return fmt.Errorf("batches cancel: no live job or batch %q in %s", cancelID, topic)
	}
	var state func(ctx context.Context, j batchjob.JobInfo) string
	if !*noProvider {
		state, err = providerState(cfg, log)
		if err != nil {
			return err
		}
	}
	return printJobs(rctx, os.Stdout, jobs, state, time.Now())
}

// providerState returns a reader of a job's provider batch state.
func providerState(cfg config.Consume, log zerolog.Logger) (func(ctx context.Context, j batchjob.JobInfo) string, error) {
	key, err := apiKey(cfg.API, log)
	if err != nil {
		return nil, err
	}
	c, err := api.New(api.Config{BaseURL: cfg.BaseURL, Key: key, UserAgent: "sluice/" + buildVersion()})
	if err != nil {
		return nil, err
	}
	x, o := batchapi.NewXAI(c), batchapi.NewOpenAI(c)
	return func(ctx context.Context, j batchjob.JobInfo) string {
		if j.Job.BatchID == "" {
			return "-"
		}
		get := x.Get
		if j.API == config.BatchAPIOpenAI {
			get = o.Get
		}
		b, err := get(ctx, j.Job.BatchID)
		if err != nil {
			return "error: " + api.Truncate(err.Error(), 60)
		}
		return fmt.Sprintf("%s (%d pending, %d ok, %d failed, %d cancelled)", b.State, b.Pending, b.Succeeded, b.Failed, b.Cancelled)
	}, nil
}

// printJobs writes the jobs as a table.
func printJobs(ctx context.Context, w io.Writer, jobs []batchjob.JobInfo, state func(context.Context, batchjob.JobInfo) string, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tAPI\tENDPOINT\tMODEL\tREQUESTS\tSTEP\tBATCH\tSTATE\tAGE")
	for _, j := range jobs {
		step := string(j.Job.Step)
		switch {
		case !j.HasJob && j.Sealed:
			step = string(batchjob.StepSealed)
		case !j.HasJob:
			step = string(batchjob.StepGathering)
		}
		if j.Cancel {
			step += " (cancel requested)"
		}
		st := j.Job.ProviderState
		if state != nil {
			st = state(ctx, j)
		}
		age := "-"
		if !j.Gathered.IsZero() {
			age = now.Sub(j.Gathered).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", j.ID, j.API, j.Endpoint, j.Model, j.Requests, step, cmp.Or(j.Job.BatchID, "-"), cmp.Or(st, "-"), age)
	}
	return tw.Flush()
}
