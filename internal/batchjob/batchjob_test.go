package batchjob

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-dev/sluice/record"
)

func TestTier(t *testing.T) {
	t.Parallel()
	rec := func(hs ...string) *kgo.Record {
		r := &kgo.Record{}
		for i := 0; i+1 < len(hs); i += 2 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: hs[i], Value: []byte(hs[i+1])})
		}
		return r
	}
	for _, tc := range []struct {
		name, def, want string
		rec             *kgo.Record
		bad             bool
	}{
		{"no header, default realtime", "realtime", "realtime", rec(), false},
		{"no header, default batch", "batch", "batch", rec("other", "x"), false},
		{"header wins", "realtime", "batch", rec(record.HeaderTier, "batch"), false},
		{"header realtime", "batch", "realtime", rec(record.HeaderTier, "realtime"), false},
		{"unknown", "realtime", "", rec(record.HeaderTier, "Batch"), true},
		{"empty", "batch", "", rec(record.HeaderTier, ""), true},
	} {
		got, err := Tier(tc.rec, tc.def)
		if tc.bad {
			if !errors.Is(err, ErrUnknownTier) || !errors.Is(err, record.ErrInvalidInput) {
				t.Errorf("%s: err %v", tc.name, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// A long header value is cut in the message.
	_, err := Tier(rec(record.HeaderTier, strings.Repeat("x", 10000)), "realtime")
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("long header: %v", err)
	}
}

func TestKeysAndPartition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key  string
		kind Kind
		seq  int
	}{{JobKey("j-1"), KindJob, 0}, {ChunkKey("j-1", 12), KindChunk, 12}, {SealKey("j-1"), KindSeal, 0}, {CancelKey("j-1"), KindCancel, 0}} {
		if id, kind, seq, ok := ParseKey([]byte(tc.key)); !ok || id != "j-1" || kind != tc.kind || seq != tc.seq {
			t.Fatalf("%s: %q %d %d %v", tc.key, id, kind, seq, ok)
		}
	}
	for _, k := range []string{"", "job/", "other/j", "job/a/b", "job/j/chunk/", "job/j/chunk/-1", "job/j/chunk/01", "job//chunk/1", "job//seal", "job/a/b/seal"} {
		if _, _, _, ok := ParseKey([]byte(k)); ok {
			t.Errorf("ParseKey(%q) ok", k)
		}
	}
	if RequestID("prompts.v2-x", 3, 42) != "prompts.v2-x-3-42" {
		t.Fatal(RequestID("prompts.v2-x", 3, 42))
	}
	for p, want := range map[int32]int32{0: 0, 3: 3, 4: 0, 9: 1} {
		if got := JobsPartition(p, 4); got != want {
			t.Fatalf("JobsPartition(%d, 4) = %d, want %d", p, got, want)
		}
	}
	if JobsPartition(3, 0) != 0 {
		t.Fatal("no partitions")
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	in := &kgo.Record{Topic: "prompts", Partition: 2, Offset: 9, Key: []byte{0, 1}, Value: []byte(`{"prompt":"hi"}`),
		Headers: []kgo.RecordHeader{{Key: "sluice.tier", Value: []byte("batch")}, {Key: "bin", Value: []byte{0xff}}}}
	c := Chunk{Job: "j-1", Seq: 3, API: "xai", Endpoint: "/v1/chat/completions", Model: "grok-4", Requests: []Request{RequestOf(in, "r-1", now)}}
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeChunk(b)
	if err != nil {
		t.Fatal(err)
	}
	c.V = Version
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("chunk round trip:\n got %+v\nwant %+v", got, c)
	}
	if back := got.Requests[0].Input(); !reflect.DeepEqual(back.Headers, in.Headers) || string(back.Value) != string(in.Value) || back.Offset != 9 {
		t.Fatalf("input %+v", back)
	}

	adding := 1
	j := Job{ID: "j-1", API: "xai", Endpoint: "/v1/chat/completions", Model: "grok-4", Step: StepSubmitted, Chunks: 2,
		Requests: 7, BatchID: "b-1", Added: []int{0}, Adding: &adding, TotalBefore: 4, Created: now, Updated: now}
	b, err = Encode(j)
	if err != nil {
		t.Fatal(err)
	}
	gj, err := DecodeJob(b)
	if err != nil {
		t.Fatal(err)
	}
	j.V = Version
	if !reflect.DeepEqual(gj, j) {
		t.Fatalf("job round trip:\n got %+v\nwant %+v", gj, j)
	}
}

func TestDecodeRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		value string
		want  error
		chunk bool
	}{
		{"not json", `{`, ErrRecord, false},
		{"trailing", `{"v":1,"job":"j","step":"sealed"} {}`, ErrRecord, false},
		{"newer version", `{"v":2,"job":"j","step":"sealed"}`, ErrVersion, false},
		{"no id", `{"v":1,"step":"sealed"}`, ErrRecord, false},
		{"slash in id", `{"v":1,"job":"a/b","step":"sealed"}`, ErrRecord, false},
		{"unknown step", `{"v":1,"job":"j","step":"later"}`, ErrRecord, false},
		{"adding past the chunks", `{"v":1,"job":"j","step":"submitted","chunks":1,"adding":1}`, ErrRecord, false},
		{"empty chunk", `{"v":1,"job":"j","seq":0,"requests":[]}`, ErrRecord, true},
		{"id not of its coordinates", `{"v":1,"job":"j","seq":0,"requests":[{"id":"t-0-1","topic":"t","partition":0,"offset":2}]}`, ErrRecord, true},
		{"negative seq", `{"v":1,"job":"j","seq":-1,"requests":[{"id":"t-0-1","topic":"t","partition":0,"offset":1}]}`, ErrRecord, true},
	} {
		var err error
		if tc.chunk {
			_, err = DecodeChunk([]byte(tc.value))
		} else {
			_, err = DecodeJob([]byte(tc.value))
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
