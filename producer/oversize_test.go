package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/producer"
	"github.com/sluice-dev/sluice/record"
)

const mib = 1 << 20

// newLimitedCluster is newCluster whose topics take at most limit bytes
// per batch (max.message.bytes).
func newLimitedCluster(t *testing.T, limit int) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, outTopic, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	v := strconv.Itoa(limit)
	adm := kadm.NewClient(newClient(t, c.ListenAddrs()))
	rs, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &v}}, outTopic, dlqTopic)
	if err == nil {
		for _, r := range rs {
			if r.Err != nil {
				err = r.Err
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return c.ListenAddrs()
}

// incompressible returns n bytes that compression does not shrink, so the
// brokers see them at their size.
func incompressible(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

func headerMap(hs []kgo.RecordHeader) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}

// No output of one record can fail with MESSAGE_TOO_LARGE: each is shrunk
// to fit, leaving a marker, with the source still pointing at the original.
func TestPublishOversizeOutputs(t *testing.T) {
	t.Parallel()
	src := record.Source{Topic: "prompts", Partition: 3, Offset: 1234}
	bigBody := json.RawMessage(`{"error":{"message":"` + strings.Repeat("e", 1_200_000) + `","type":"invalid_request_error","code":"bad"}}`)
	tests := []struct {
		name string
		// known: the Publisher and the client are told the topics' limit
		// (1 MiB); otherwise both assume franz-go's default batch cap
		// (1,000,012 bytes) and the brokers take only 512 KiB.
		known     bool
		in        *kgo.Record
		res       *record.Result
		code      string
		bodyOmit  int
		valueOmit int // the dead letter's sluice.value.omitted; 0 = value kept
		hdrsOmit  bool
	}{
		{
			name: "999,900-byte value that is not JSON, limit 1,000,012",
			in:   &kgo.Record{Key: []byte("k"), Value: bytes.Repeat([]byte("x"), 999_900), Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t-1")}}},
			res:  &record.Result{ID: "res_a", CustomID: "prompts-3-1234", Error: &record.Error{Code: record.CodeInvalidInput, Message: "invalid input: not JSON"}},
			code: record.CodeInvalidInput, valueOmit: 999_900,
		},
		{
			name: "400 with a 1.2 MB error body", known: true,
			in: input(),
			res: &record.Result{ID: "res_b", CustomID: "r-1", Attempts: 1,
				Response: &record.Response{StatusCode: 400, RequestID: requestID("req-400"), Body: bigBody},
				Error:    &record.Error{Code: record.CodeAPIError, Message: "api: status 400 (bad): eeee"}},
			code: record.CodeAPIError, bodyOmit: len(bigBody),
		},
		{
			name: "1.2 MB success", known: true,
			in: input(),
			res: &record.Result{ID: "res_c", CustomID: "r-1", Attempts: 1,
				Response: &record.Response{StatusCode: 200, Body: json.RawMessage(`{"choices":[{"message":{"content":"` + strings.Repeat("a", 1_200_000) + `"}}]}`)}},
			code: record.CodeResultTooLarge, bodyOmit: len(`{"choices":[{"message":{"content":""}}]}`) + 1_200_000,
		},
		{
			name: "limit lower than known: the brokers' MESSAGE_TOO_LARGE shrinks the dead letter",
			in:   &kgo.Record{Key: []byte("k"), Value: incompressible(900_000)},
			res:  &record.Result{ID: "res_d", CustomID: "c", Error: &record.Error{Code: record.CodeInvalidInput, Message: "bad"}},
			code: record.CodeInvalidInput, valueOmit: 900_000,
		},
		{
			name: "headers alone too large", known: true,
			in:   &kgo.Record{Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "h", Value: bytes.Repeat([]byte("h"), 1_100_000)}}},
			res:  &record.Result{ID: "res_e", CustomID: "c", Error: &record.Error{Code: record.CodeInvalidInput, Message: "bad"}},
			code: record.CodeInvalidInput, valueOmit: 1, hdrsOmit: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			limit := mib
			var opts []kgo.Opt
			if tc.known {
				opts = append(opts, kgo.ProducerBatchMaxBytes(int32(limit)))
			} else if tc.valueOmit == 900_000 {
				limit = 512 << 10 // the brokers take less than anyone thinks
			}
			addrs := newLimitedCluster(t, limit)
			cl := newClient(t, addrs, opts...)
			pub := producer.NewPublisher(cl, outTopic, dlqTopic)
			if tc.known {
				pub.MaxMessageBytes = func(string) int { return limit }
			}
			tc.in.Topic, tc.in.Partition, tc.in.Offset = src.Topic, src.Partition, src.Offset
			tc.res.Source = src
			probe := newDoneProbe(t, addrs)
			pub.Publish(context.Background(), tc.in, tc.res, probe.done)
			if err := probe.wait(cl); err != nil {
				t.Fatalf("done(%v), want nil: the member would stop", err)
			}
			out := readBack(t, addrs, outTopic, 1)[0]
			got := decode(t, out)
			if got.Error == nil || got.Error.Code != tc.code || got.Source != src || got.CustomID != tc.res.CustomID {
				t.Fatalf("result = %+v (error %+v), want code %s, source %+v", got, got.Error, tc.code, src)
			}
			if tc.bodyOmit > 0 && (got.Response == nil || got.Response.BodyOmitted != tc.bodyOmit || string(got.Response.Body) != "null" ||
				got.Response.StatusCode != tc.res.Response.StatusCode || !strings.Contains(got.Error.Message, "not fit")) {
				t.Errorf("response = %+v, message %q; want the body left out (%d bytes) with its status kept", got.Response, got.Error.Message, tc.bodyOmit)
			}
			dl := readBack(t, addrs, dlqTopic, 1)[0]
			h := headerMap(dl.Headers)
			if h[record.HeaderSourceTopic] != src.Topic || h[record.HeaderSourcePartition] != "3" || h[record.HeaderSourceOffset] != "1234" || h[record.HeaderErrorCode] != tc.code {
				t.Errorf("dead letter headers %v, want the source coordinates and code %s", h, tc.code)
			}
			if tc.valueOmit > 0 {
				if len(dl.Value) != 0 || h[record.HeaderValueOmitted] != strconv.Itoa(tc.valueOmit) {
					t.Errorf("dead letter value %d bytes, %s=%q; want it left out with its size %d", len(dl.Value), record.HeaderValueOmitted, h[record.HeaderValueOmitted], tc.valueOmit)
				}
			} else if !bytes.Equal(dl.Value, tc.in.Value) {
				t.Errorf("dead letter value is not the input's")
			}
			if !tc.hdrsOmit {
				for _, ih := range tc.in.Headers {
					if h[ih.Key] != string(ih.Value) {
						t.Errorf("dead letter lost input header %s", ih.Key)
					}
				}
			} else if h[record.HeaderHeadersOmitted] != "1" {
				t.Errorf("dead letter headers %v, want %s=1", h, record.HeaderHeadersOmitted)
			}
			if string(dl.Key) != string(tc.in.Key) {
				t.Errorf("dead letter key %q, want %q", dl.Key, tc.in.Key)
			}
		})
	}
}

// Cancelling one input partition's context after its outputs were
// buffered must not fail another partition's outputs in the same batch.
func TestPublishCancelledPartitionKeepsOthers(t *testing.T) {
	t.Parallel()
	addrs := newCluster(t)
	cl := newClient(t, addrs, kgo.ManualFlushing())
	pub := producer.NewPublisher(cl, outTopic, dlqTopic)
	ctxA, cancelA := context.WithCancel(context.Background())
	res := func(id string) *record.Result {
		return &record.Result{ID: id, CustomID: id, Response: &record.Response{StatusCode: 200, Body: json.RawMessage(`{}`)}}
	}
	probeA, probeB := newDoneProbe(t, addrs), newDoneProbe(t, addrs)
	pub.Publish(ctxA, input(), res("a"), probeA.done) // partition A, revoked below
	pub.Publish(context.Background(), input(), res("b"), probeB.done)
	cancelA()
	if err := cl.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := probeB.wait(cl); err != nil {
		t.Fatalf("partition B's outputs: done(%v), want nil", err)
	}
	if err := probeA.wait(cl); err != nil {
		t.Errorf("partition A's buffered outputs: done(%v), want nil (they are written)", err)
	}
}
