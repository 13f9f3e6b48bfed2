package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/internal/config"
	"github.com/sluice-dev/sluice/internal/devkafka"
	"github.com/sluice-dev/sluice/record"
)

// oddAPI answers by prompt text: each text is one kind of odd answer.
type oddAPI struct {
	mu    sync.Mutex
	seen  map[string]int // calls per prompt text
	calls int
}

const okCompletion = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

func (a *oddAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Stream   bool `json:"stream"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	_ = json.Unmarshal(body, &req)
	text := ""
	if len(req.Messages) > 0 {
		text = req.Messages[len(req.Messages)-1].Content
	}
	a.mu.Lock()
	a.seen[text]++
	a.calls++
	attempt := a.seen[text]
	a.mu.Unlock()
	sse := func(events ...string) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range events {
			_, _ = io.WriteString(w, "data: "+e+"\n\n")
		}
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case text == "error-200":
		_, _ = io.WriteString(w, `{"error":{"message":"upstream failed","type":"server_error"}}`)
	case text == "big-400":
		w.WriteHeader(400)
		_, _ = io.WriteString(w, `{"error":{"message":"`+strings.Repeat("e", 1_200_000)+`","type":"invalid_request_error","code":"bad"}}`)
	case text == "retry-3600" && attempt == 1:
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(429)
		_, _ = io.WriteString(w, `{"error":{"message":"slow down","code":"rate_limit_exceeded"}}`)
	case text == "model-403":
		w.WriteHeader(403)
		_, _ = io.WriteString(w, `{"error":{"message":"The model grok-secret does not exist or your team does not have access to it","type":"invalid_request_error","code":"model_not_found"}}`)
	case text == "tools-bad":
		sse(`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{\"city\":"}}]},"finish_reason":"tool_calls"}]}`, "[DONE]")
	case text == "stream-429" && attempt == 1:
		sse(`{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}`)
	case req.Stream:
		sse(`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`,
			`{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`, "[DONE]")
	default:
		_, _ = io.WriteString(w, okCompletion)
	}
}

// TestOneRecordNeverStopsTheMember runs, in both delivery modes, one
// partition holding one record of each kind of odd record or answer among
// normal ones. Each gets exactly one result (and a dead letter when it
// fails), the committed offset reaches the end of the partition, the
// records of an aborted transaction never reach the API, and the member is
// still running at the end (it consumes a marker produced last, and stops
// cleanly).
func TestOneRecordNeverStopsTheMember(t *testing.T) {
	for _, mode := range []string{config.AtLeastOnce, config.ExactlyOnce} {
		t.Run(mode, func(t *testing.T) { oneRecordKinds(t, mode) })
	}
}

func oneRecordKinds(t *testing.T, mode string) {
	const brokerMax = 1 << 20 // message.max.bytes of every topic: 1 MiB
	c, err := devkafka.Start(devkafka.Config{Partitions: 1,
		Opts: []kfake.Opt{kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(brokerMax)})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	odd := &oddAPI{seen: map[string]int{}}
	srv := httptest.NewServer(odd)
	t.Cleanup(srv.Close)
	s := &testStack{cluster: c, cfg: config.Consume{
		Kafka: config.Kafka{Brokers: c.ListenAddrs(), Group: "sluice", InputTopic: "prompts", OutputTopic: "completions", DLQTopic: "prompts.dlq"},
		API: config.API{BaseURL: srv.URL + "/v1", Keyless: true, Model: "grok-4", RequestTimeout: 5 * time.Second,
			MaxAttempts: 3, RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond, StreamIdleTimeout: 5 * time.Second},
		Limits:         config.Limits{MaxInFlight: 16, MaxBufferedBytes: 64 << 20, QuotaProbeInterval: 50 * time.Millisecond, TPM: 2_000_000},
		Delivery:       config.Delivery{Mode: mode, Ordering: "unordered"},
		CommitInterval: 50 * time.Millisecond,
		DrainTimeout:   5 * time.Second,
		RevokeTimeout:  5 * time.Second,
		LogLevel:       "warn",
	}}
	if err := s.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	chat := func(id, text, extra string) *kgo.Record {
		return &kgo.Record{Key: []byte(id), Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t-" + id)}},
			Value: fmt.Appendf(nil, `{"custom_id":%q,"messages":[{"role":"user","content":%q}]%s}`, id, text, extra)}
	}
	type kind struct {
		rec      *kgo.Record
		code     string // "" = success
		attempts int
		// valueOmitted: the dead letter leaves out the value (its size);
		// -1: kept or left out, as the topic's limit allows.
		valueOmitted int
		bodyOmitted  bool
	}
	kinds := map[string]kind{
		"value-999900":  {rec: &kgo.Record{Key: []byte("value-999900"), Value: bytes.Repeat([]byte("x"), 999_900)}, code: record.CodeInvalidInput, valueOmitted: -1},
		"value-1100000": {rec: &kgo.Record{Key: []byte("value-1100000"), Value: bytes.Repeat([]byte("x"), 1_100_000)}, code: record.CodeInvalidInput, valueOmitted: 1_100_000},
		"big-400":       {rec: chat("big-400", "big-400", ""), code: record.CodeAPIError, attempts: 1, bodyOmitted: true},
		"error-200":     {rec: chat("error-200", "error-200", ""), code: record.CodeRetriesExhausted, attempts: 3},
		"retry-3600":    {rec: chat("retry-3600", "retry-3600", ""), attempts: 2},
		"tpm":           {rec: chat("tpm", "tpm", `,"n":128,"max_tokens":1000000`), code: record.CodeExceedsTPM},
		"model-403":     {rec: chat("model-403", "model-403", `,"model":"grok-secret"`), code: record.CodeAPIError, attempts: 1},
		"tools-bad":     {rec: chat("tools-bad", "tools-bad", `,"stream":true`), code: record.CodeRetriesExhausted, attempts: 3},
		"stream-429":    {rec: chat("stream-429", "stream-429", `,"stream":true`), attempts: 2},
	}
	for i := range 5 {
		id := fmt.Sprintf("ok-%d", i)
		kinds[id] = kind{rec: chat(id, id, ""), attempts: 1}
	}
	// Compressed, the 1.1 MB input fits the brokers' limit; sluice's
	// outputs are sized uncompressed, so its dead letter cannot.
	big := s.client(t, kgo.ProducerBatchMaxBytes(4<<20))
	ctx := context.Background()
	for _, id := range []string{"value-999900", "value-1100000", "big-400", "error-200", "retry-3600", "tpm", "model-403", "tools-bad", "stream-429", "ok-0", "ok-1"} {
		k := kinds[id]
		k.rec.Topic = "prompts"
		if err := big.ProduceSync(ctx, k.rec).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", id, err)
		}
	}
	// A transaction that aborts: its record must never be processed.
	txn := s.client(t, kgo.TransactionalID("aborter"))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	aborted := chat("aborted", "aborted", "")
	aborted.Topic = "prompts"
	if err := txn.ProduceSync(ctx, aborted).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	stop := s.member(t)
	var last []*kgo.Record
	for _, id := range []string{"ok-2", "ok-3", "ok-4"} {
		r := kinds[id].rec
		r.Topic = "prompts"
		last = append(last, r)
	}
	s.produce(t, last...) // after the member is up: it is still consuming

	results := decodeResults(t, s.collectWith(t, "completions", len(kinds), kgo.FetchIsolationLevel(kgo.ReadCommitted())))
	failed := 0
	for id, k := range kinds {
		if k.code != "" {
			failed++
		}
		r, ok := results[id]
		if id == "value-999900" || id == "value-1100000" {
			r, ok = results[fmt.Sprintf("prompts-0-%d", k.rec.Offset)]
		}
		switch {
		case !ok:
			t.Errorf("%s: no result", id)
		case k.code == "" && r.Error != nil:
			t.Errorf("%s: error %+v, want success", id, r.Error)
		case k.code != "" && (r.Error == nil || r.Error.Code != k.code):
			t.Errorf("%s: error %+v, want code %s", id, r.Error, k.code)
		case r.Attempts != k.attempts:
			t.Errorf("%s: %d attempts, want %d", id, r.Attempts, k.attempts)
		case k.bodyOmitted && (r.Response == nil || r.Response.BodyOmitted == 0 || r.Response.StatusCode != 400):
			t.Errorf("%s: response %+v, want status 400 with its body left out", id, r.Response)
		}
	}
	dlq := s.collectWith(t, "prompts.dlq", failed, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	byKey := map[string]*kgo.Record{}
	for _, d := range dlq {
		byKey[string(d.Key)] = d
	}
	for id, k := range kinds {
		if k.code == "" {
			continue
		}
		d := byKey[id]
		if d == nil {
			t.Errorf("%s: no dead letter", id)
			continue
		}
		h := headerMap(d.Headers)
		if h[record.HeaderErrorCode] != k.code || h[record.HeaderSourceTopic] != "prompts" || h[record.HeaderSourcePartition] != "0" ||
			h[record.HeaderSourceOffset] != strconv.FormatInt(k.rec.Offset, 10) {
			t.Errorf("%s: dead letter headers %v, want code %s and the source coordinates", id, h, k.code)
		}
		for _, ih := range k.rec.Headers {
			if h[ih.Key] != string(ih.Value) {
				t.Errorf("%s: dead letter lost the input header %s", id, ih.Key)
			}
		}
		omitted, hasOmitted := h[record.HeaderValueOmitted]
		switch {
		case k.valueOmitted > 0 && (len(d.Value) != 0 || omitted != strconv.Itoa(k.valueOmitted)):
			t.Errorf("%s: dead letter value %d bytes, %s=%q; want it left out (%d)", id, len(d.Value), record.HeaderValueOmitted, omitted, k.valueOmitted)
		case k.valueOmitted == 0 && !bytes.Equal(d.Value, k.rec.Value):
			t.Errorf("%s: dead letter value is not the input's", id)
		case k.valueOmitted < 0 && !bytes.Equal(d.Value, k.rec.Value) && omitted != strconv.Itoa(len(k.rec.Value)):
			t.Errorf("%s: dead letter value %d bytes, %s=%q (present %v); want the input's or its size", id, len(d.Value), record.HeaderValueOmitted, omitted, hasOmitted)
		}
	}
	odd.mu.Lock()
	if n := odd.seen["aborted"]; n != 0 {
		t.Errorf("the aborted transaction's record reached the API %d times", n)
	}
	if n := odd.seen["tpm"]; n != 0 {
		t.Errorf("the request over the TPM budget reached the API %d times", n)
	}
	odd.mu.Unlock()
	end := last[len(last)-1].Offset + 1
	waitFor(t, 20*time.Second, "the committed offset reaches the end", func() bool { return s.committed(t)[0] == end })
	if err := stop(); err != nil {
		t.Fatalf("member: %v, want a clean stop (it must still be running)", err)
	}
}

func headerMap(hs []kgo.RecordHeader) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}
