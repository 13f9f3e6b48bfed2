package main

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/internal/mockapi"
	"github.com/sluice-dev/sluice/record"
)

// End to end through serve, for each Batch API: batch-tier records (by
// header, and by SLUICE_TIER) go to the simulator's Batch API once each
// and come back with tier batch and their batch id; realtime records
// (by header) go to the realtime endpoint; an unknown tier and an
// endpoint the batch API does not take are refused with a dead letter.
// A member stopped while the batch runs and a new one finish it. In a
// share group too: a batch-tier record is accepted once its chunk is
// durable.
func TestBatchTierEndToEnd(t *testing.T) {
	for _, tc := range []struct{ batchAPI, protocol string }{
		{"xai", config.ProtocolConsumer}, {"openai", config.ProtocolConsumer}, {"xai", config.ProtocolShare},
	} {
		batchAPI := tc.batchAPI
		t.Run(batchAPI+"/"+tc.protocol, func(t *testing.T) {
			s := newTestStackTopics(t, 2, devkafka.DefaultTopics...)
			s.cfg.GroupProtocol = tc.protocol
			mock := mockapi.New(mockapi.Config{BatchDelay: 300 * time.Millisecond, Seed: 3})
			srv := httptest.NewServer(mock)
			t.Cleanup(func() { mock.Close(); srv.Close() })
			s.cfg.API.BaseURL = srv.URL + "/v1"
			s.cfg.Batch.Tier, s.cfg.Batch.BatchAPI = "batch", batchAPI
			s.cfg.Batch.BatchMaxWait, s.cfg.Batch.BatchPollInterval = 200*time.Millisecond, 50*time.Millisecond
			if err := s.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			tier := func(v string) []kgo.RecordHeader {
				return []kgo.RecordHeader{{Key: record.HeaderTier, Value: []byte(v)}}
			}
			var recs []*kgo.Record
			for i := range 30 { // batch by SLUICE_TIER, and by header
				r := &kgo.Record{Value: []byte(fmt.Sprintf(`{"custom_id":"b-%d","prompt":"batch %d"}`, i, i))}
				if i%2 == 0 {
					r.Headers = tier("batch")
				}
				recs = append(recs, r)
			}
			for i := range 5 {
				recs = append(recs, &kgo.Record{Value: []byte(fmt.Sprintf(`{"custom_id":"rt-%d","prompt":"realtime %d"}`, i, i)), Headers: tier("realtime")})
			}
			recs = append(recs,
				&kgo.Record{Value: []byte(`{"custom_id":"bad-tier","prompt":"x"}`), Headers: tier("someday")},
				&kgo.Record{Value: []byte(`{"custom_id":"images","url":"/v1/images/generations","body":{"model":"m","prompt":"x"}}`)},
			)
			s.produce(t, recs...)
			first := s.member(t)
			waitFor(t, watchdog, "the first batch-tier requests sent", func() bool { return mock.Stats().Batch.RequestsAdded >= 10 })
			if err := first(); err != nil {
				t.Fatal(err)
			}
			s.member(t)
			results := decodeResults(t, s.collect(t, "completions", len(recs)))
			for id, r := range results {
				switch id[:2] {
				case "b-":
					if r.Tier != "batch" || r.BatchID == "" || r.Error != nil || r.Response == nil || r.Response.StatusCode != 200 {
						t.Errorf("%s: %+v", id, r)
					}
				case "rt":
					if r.Tier != "" || r.Error != nil {
						t.Errorf("%s: %+v", id, r)
					}
				}
			}
			if r := results["bad-tier"]; r.Error == nil || r.Error.Code != record.CodeInvalidInput {
				t.Errorf("bad tier: %+v", r)
			}
			if r := results["images"]; r.Error == nil || r.Error.Code != record.CodeUnsupportedURL {
				t.Errorf("images: %+v", r)
			}
			if st := mock.Stats().Batch; st.RequestsAdded != 30 || st.Duplicates != 0 {
				t.Errorf("the Batch API saw %+v, want 30 requests once each", st)
			}
			if dl := s.collect(t, "prompts.dlq", 2); len(dl) != 2 {
				t.Errorf("%d dead letters", len(dl))
			}
		})
	}
}
