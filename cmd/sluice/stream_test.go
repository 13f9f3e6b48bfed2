package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/internal/mockapi"
	"github.com/sluice-dev/sluice/producer"
)

const streamTopic = "completions.stream"

// streamAnswer is what must not differ between a streamed and a plain
// answer: everything but the per-call id and created time.
type streamAnswer struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role             string `json:"role"`
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage map[string]any `json:"usage"`
}

func decodeAnswer(t testing.TB, body []byte) streamAnswer {
	t.Helper()
	var a streamAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.Object != "chat.completion" || len(a.Choices) == 0 || a.Usage == nil {
		t.Fatalf("answer %s is not a chat.completion with choices and usage (%v)", body, err)
	}
	return a
}

// readDeltas reads the stream topic from the start until every id in want
// has a done record without error (the signal that its answer is whole),
// and returns each id's records in the order read.
func (s *testStack) readDeltas(t testing.TB, want []string) map[string][]producer.DeltaRecord {
	t.Helper()
	cl := s.client(t, kgo.ConsumeTopics(streamTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	out := map[string][]producer.DeltaRecord{}
	done := map[string]bool{}
	for missing := len(want); missing > 0; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("stream topic: %d of %d custom_ids have no final done record; got %v", missing, len(want), done)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var d producer.DeltaRecord
			if err := json.Unmarshal(r.Value, &d); err != nil {
				t.Fatalf("delta %q is not JSON: %v", r.Value, err)
			}
			// Keyed by custom_id, with the input's headers (as results).
			if string(r.Key) != d.CustomID || len(r.Headers) != 1 || string(r.Headers[0].Value) != "t-"+d.CustomID {
				t.Errorf("delta of %s: key %q, headers %v", d.CustomID, r.Key, r.Headers)
			}
			out[d.CustomID] = append(out[d.CustomID], d)
			if d.Done && d.Error == "" && !done[d.CustomID] {
				done[d.CustomID] = true
				missing--
			}
		})
	}
	return out
}

// assembleDeltas is a stream-topic reader: it keeps the deltas of the
// latest attempt (a higher attempt voids the earlier one's), checks that
// they are numbered without gap and end with done, and returns each
// choice's content and reasoning, the attempts seen and the final record.
func assembleDeltas(t testing.TB, id string, recs []producer.DeltaRecord) (content, reasoning map[int]string, attempts []int, last producer.DeltaRecord) {
	t.Helper()
	attempt, next := 0, 0
	for i, d := range recs {
		switch {
		case d.Attempt > attempt:
			attempt, next = d.Attempt, 0
			attempts = append(attempts, d.Attempt)
			content, reasoning = map[int]string{}, map[int]string{}
		case d.Attempt < attempt:
			t.Fatalf("%s: record %d of attempt %d after attempt %d", id, i, d.Attempt, attempt)
		}
		if d.Seq != next {
			t.Fatalf("%s: record %d of %d is attempt %d seq %d, want seq %d", id, i, len(recs), d.Attempt, d.Seq, next)
		}
		next++
		if i > 0 && recs[i-1].Attempt == d.Attempt && recs[i-1].Done {
			t.Fatalf("%s: record after the done record of attempt %d", id, d.Attempt)
		}
		if d.Done {
			continue
		}
		var delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		}
		if err := json.Unmarshal(d.Delta, &delta); err != nil {
			t.Fatalf("%s: delta %s: %v", id, d.Delta, err)
		}
		content[d.Index] += delta.Content
		reasoning[d.Index] += delta.ReasoningContent
	}
	if len(recs) == 0 || !recs[len(recs)-1].Done {
		t.Fatalf("%s: its %d deltas do not end with done:true", id, len(recs))
	}
	return content, reasoning, attempts, recs[len(recs)-1]
}

// TestStreamEndToEnd runs a member with SLUICE_STREAM_TOPIC against the
// simulator: streamed results equal the plain answers to the same
// requests, the stream topic has every streamed custom_id's deltas in
// order ending with done:true (a stalled first attempt is voided by the
// second), and /metrics has a time to first token for every streamed call.
func TestStreamEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name      string
		streamAll bool   // SLUICE_STREAM; else records ask with "stream": true
		delivery  string // SLUICE_DELIVERY
	}{
		{"stream true in body", false, config.AtLeastOnce},
		{"SLUICE_STREAM", true, config.AtLeastOnce},
		// Deltas bypass the transactions: a read_committed reader has
		// them all, none lost.
		{"exactly-once", false, config.ExactlyOnce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const ttft = 30 * time.Millisecond
			healthy := mockapi.New(mockapi.Config{TTFT: ttft, TokensPerSecond: 500})
			stalling := mockapi.New(mockapi.Config{TTFT: ttft, StreamStallProb: 1})
			var stalled atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// The first call whose prompt says so stalls mid-stream.
				b, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(b))
				if bytes.Contains(b, []byte("stall me")) && stalled.CompareAndSwap(false, true) {
					stalling.ServeHTTP(w, r)
					return
				}
				healthy.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			t.Cleanup(healthy.Close) // LIFO: releases streams before srv.Close
			t.Cleanup(stalling.Close)

			s := newTestStack(t, 4)
			s.cfg.BaseURL = srv.URL + "/v1"
			s.cfg.HTTPAddr = freeAddr(t)
			s.cfg.StreamTopic = streamTopic
			s.cfg.Stream = tc.streamAll
			s.cfg.StreamIdleTimeout = time.Second
			s.cfg.Mode = tc.delivery
			if err := s.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if _, err := kadm.NewClient(s.client(t)).CreateTopic(context.Background(), 4, 1, nil, streamTopic); err != nil {
				t.Fatal(err)
			}

			type req struct{ id, model, text string }
			var reqs []req
			for i := range 8 {
				model := "grok-4"
				if i%2 == 1 {
					model = "grok-3-mini"
				}
				reqs = append(reqs, req{fmt.Sprintf("s-%d", i), model, fmt.Sprintf("streamed prompt %d", i)})
			}
			reqs = append(reqs, req{"s-stall", "grok-4", "stall me once"})
			flag := `"stream":true,`
			if tc.streamAll {
				flag = ""
			}
			var recs []*kgo.Record
			for _, r := range reqs {
				recs = append(recs, &kgo.Record{
					Key:     []byte(r.id),
					Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t-" + r.id)}},
					Value:   fmt.Appendf(nil, `{"custom_id":%q,"model":%q,%s"messages":[{"role":"user","content":%q}]}`, r.id, r.model, flag, r.text),
				})
			}
			if !tc.streamAll { // a plain record beside them writes no delta
				recs = append(recs, &kgo.Record{Value: []byte(`{"custom_id":"plain","model":"grok-4","messages":[{"role":"user","content":"plain"}]}`)})
			}
			s.produce(t, recs...)
			s.member(t)

			results := decodeResults(t, s.collect(t, "completions", len(recs)))
			ids := make([]string, 0, len(reqs))
			for _, r := range reqs {
				ids = append(ids, r.id)
			}
			deltas := s.readDeltas(t, ids)
			if _, ok := deltas["plain"]; ok {
				t.Errorf("the plain record wrote deltas: %+v", deltas["plain"])
			}

			// The plain answers, asked of the same simulator directly.
			plainAPI, err := api.New(api.Config{BaseURL: srv.URL + "/v1"})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range reqs {
				res, ok := results[r.id]
				if !ok || res.Error != nil || res.Response == nil || res.Response.StatusCode != 200 {
					t.Fatalf("%s: result %+v, want a 200", r.id, res)
				}
				resp, err := plainAPI.Do(context.Background(), api.Request{Path: endpoint.Chat{}.Path(), Check: endpoint.Chat{}.Check,
					Body: fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"user","content":%q}]}`, r.model, r.text)})
				if err != nil {
					t.Fatal(err)
				}
				want, got := decodeAnswer(t, resp.Body), decodeAnswer(t, res.Response.Body)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: streamed result differs from the plain answer:\n got %+v\nwant %+v", r.id, got, want)
				}
				content, reasoning, attempts, last := assembleDeltas(t, r.id, deltas[r.id])
				wantAttempts := []int{1}
				if r.id == "s-stall" {
					wantAttempts = []int{1, 2}
				}
				if !reflect.DeepEqual(attempts, wantAttempts) || res.Attempts != len(wantAttempts) {
					t.Errorf("%s: delta attempts %v, result attempts %d, want %v", r.id, attempts, res.Attempts, wantAttempts)
				}
				if last.Error != "" || last.FinishReason != want.Choices[0].FinishReason {
					t.Errorf("%s: done record %+v, want finish_reason %q", r.id, last, want.Choices[0].FinishReason)
				}
				m := want.Choices[0].Message
				if content[0] != m.Content || reasoning[0] != m.ReasoningContent {
					t.Errorf("%s: deltas add up to %q/%q, want %q/%q", r.id, reasoning[0], content[0], m.ReasoningContent, m.Content)
				}
				if (r.model == "grok-4") != (m.ReasoningContent != "") {
					t.Errorf("%s: reasoning_content %q for %s", r.id, m.ReasoningContent, r.model)
				}
			}
			// The voided attempt ended with the idle timeout.
			if first := deltas["s-stall"]; !strings.Contains(firstDone(first).Error, "stream idle") {
				t.Errorf("s-stall attempt 1 done record = %+v, want the idle timeout", firstDone(first))
			}
			// Observer.Stream runs before the result is published: the
			// counts are final once the results are read.
			m := scrape(t, s.cfg.HTTPAddr)
			// grok-4: five records, s-stall called twice; its stalled
			// call had a first token (reasoning) but no speed.
			for model, n := range map[string]struct{ ttft, rate float64 }{"grok-4": {6, 5}, "grok-3-mini": {4, 4}} {
				count := m[fmt.Sprintf(`sluice_api_time_to_first_token_seconds_count{model=%q}`, model)]
				sum := m[fmt.Sprintf(`sluice_api_time_to_first_token_seconds_sum{model=%q}`, model)]
				if count != n.ttft {
					t.Errorf("%s: %v time-to-first-token observations, want %v", model, count, n.ttft)
				}
				if count > 0 && sum/count < ttft.Seconds() {
					t.Errorf("%s: mean ttft %.3fs, below the simulator's %s", model, sum/count, ttft)
				}
				rate := m[fmt.Sprintf(`sluice_api_stream_tokens_per_second_count{model=%q}`, model)]
				if rate != n.rate {
					t.Errorf("%s: %v tokens/s observations, want %v (successful streams)", model, rate, n.rate)
				}
				t.Logf("%s: mean ttft %.1fms over %v calls (simulator %s)", model, 1000*sum/count, count, ttft)
			}
			if lost := m["sluice_stream_deltas_lost_total"]; lost != 0 {
				t.Errorf("sluice_stream_deltas_lost_total = %v", lost)
			}
		})
	}
}

// firstDone returns the first done record of recs.
func firstDone(recs []producer.DeltaRecord) producer.DeltaRecord {
	for _, d := range recs {
		if d.Done {
			return d
		}
	}
	return producer.DeltaRecord{}
}

// TestStreamTopicMustExist: a missing stream topic stops the member at
// start, naming the variable.
func TestStreamTopicMustExist(t *testing.T) {
	s := newTestStack(t, 1)
	s.cfg.StreamTopic = "no.such.topic"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := serve(ctx, s.cfg, zerolog.Nop(), pipelineOptions{})
	if err == nil || !strings.Contains(err.Error(), "SLUICE_STREAM_TOPIC") {
		t.Fatalf("member with a missing stream topic: %v, want an error naming SLUICE_STREAM_TOPIC", err)
	}
}
