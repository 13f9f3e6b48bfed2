package batchjob

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Version is the version of the jobs topic's records this build writes
// and reads ("v"). A record of another version is ErrVersion: an older
// build leaves a newer build's jobs alone rather than misread them.
const Version = 1

// Bounds of what decoding a jobs record accepts.
const (
	// MaxChunkRequests bounds the requests of one Chunk.
	MaxChunkRequests = 100_000
	// MaxIDBytes bounds an id (job, batch, file, request, custom_id).
	MaxIDBytes = 512
)

// Errors of decoding a jobs record.
var (
	// ErrRecord: the bytes are not a jobs record of this version's shape.
	ErrRecord = errors.New("batchjob: malformed jobs record")
	// ErrVersion: a jobs record of another version.
	ErrVersion = errors.New("batchjob: jobs record of an unknown version")
)

// Key names of the jobs topic.
const (
	keyPrefix   = "job/"
	chunkInfix  = "/chunk/"
	sealSuffix  = "/seal"
	cancelSufix = "/cancel"
)

// Kind is what a jobs topic record is, by its key. Each kind has one
// writer, so no update is lost to another's: the gatherer writes chunks
// and seals, the job's owner its Job, sluice batches cancel a Cancel.
type Kind int

// The kinds of jobs records.
const (
	KindJob    Kind = iota + 1 // "job/<id>": the Job (the owner's progress)
	KindChunk                  // "job/<id>/chunk/<seq>": a Chunk
	KindSeal                   // "job/<id>/seal": the Seal
	KindCancel                 // "job/<id>/cancel": a cancel request
)

// JobKey is the key of job id's Job record.
func JobKey(id string) string { return keyPrefix + id }

// ChunkKey is the key of job id's chunk seq.
func ChunkKey(id string, seq int) string { return keyPrefix + id + chunkInfix + strconv.Itoa(seq) }

// SealKey is the key of job id's Seal.
func SealKey(id string) string { return keyPrefix + id + sealSuffix }

// CancelKey is the key of job id's cancel request.
func CancelKey(id string) string { return keyPrefix + id + cancelSufix }

// ParseKey reads a jobs topic key: the job's id, the record's kind and,
// for a chunk, its sequence number. ok is false for any other key.
func ParseKey(key []byte) (id string, kind Kind, seq int, ok bool) {
	rest, found := strings.CutPrefix(string(key), keyPrefix)
	if !found || rest == "" {
		return "", 0, 0, false
	}
	if id, ok := strings.CutSuffix(rest, sealSuffix); ok {
		return id, KindSeal, 0, validID(id)
	}
	if id, ok := strings.CutSuffix(rest, cancelSufix); ok {
		return id, KindCancel, 0, validID(id)
	}
	id, s, isChunk := strings.Cut(rest, chunkInfix)
	if !isChunk {
		return rest, KindJob, 0, validID(rest)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || !validID(id) || strconv.Itoa(n) != s {
		return "", 0, 0, false
	}
	return id, KindChunk, n, true
}

// Seal is the value of a job's seal: no chunk comes after it.
type Seal struct {
	V   int    `json:"v"`
	Job string `json:"job"`
	// Chunks is how many chunks were begun; Written lists those the
	// brokers acknowledged (a chunk that failed was not, and its records
	// were processed again), Requests counts their requests.
	Chunks   int       `json:"chunks"`
	Written  []int     `json:"written"`
	Requests int       `json:"requests"`
	Sealed   time.Time `json:"sealed"`
}

// DecodeSeal decodes a Seal record value.
func DecodeSeal(b []byte) (Seal, error) {
	var s Seal
	if err := decode(b, &s); err != nil {
		return Seal{}, err
	}
	switch {
	case s.V != Version:
		return Seal{}, fmt.Errorf("%w: %d", ErrVersion, s.V)
	case !validID(s.Job) || s.Chunks < 0 || s.Requests < 0 || len(s.Written) > s.Chunks:
		return Seal{}, fmt.Errorf("%w: bad seal", ErrRecord)
	}
	for _, seq := range s.Written {
		if seq < 0 || seq >= s.Chunks {
			return Seal{}, fmt.Errorf("%w: seal lists chunk %d of %d", ErrRecord, seq, s.Chunks)
		}
	}
	return s, nil
}

// Step is how far a job got.
type Step string

// The steps of a job, in order. A job goes from Gathering to Done; it may
// be Cancelled (sluice batches cancel) from any step before Done.
const (
	// Gathering: chunks are being written; nothing sent yet.
	StepGathering Step = "gathering"
	// Sealed: no more chunks come (Job.Chunks is their count).
	StepSealed Step = "sealed"
	// Submitted: every chunk is in the provider batch; it is polled.
	StepSubmitted Step = "submitted"
	// Publishing: the provider batch ended; results are being published.
	StepPublishing Step = "publishing"
	// Done: every result is acknowledged (the records are then
	// tombstoned).
	StepDone Step = "done"
)

// Job is the value of a job's record ("job/<id>").
type Job struct {
	V        int    `json:"v"`
	ID       string `json:"job"`
	API      string `json:"api"` // "xai" or "openai"
	Endpoint string `json:"endpoint"`
	Model    string `json:"model"`
	Step     Step   `json:"step"`
	// Chunks is how many chunks the job holds (final once Sealed).
	Chunks int `json:"chunks"`
	// Requests is how many input records its chunks hold.
	Requests int `json:"requests"`
	// BatchID is the provider batch, "" until created.
	BatchID string `json:"batch_id,omitempty"`
	// FileID is OpenAI's input file, "" until uploaded.
	FileID string `json:"file_id,omitempty"`
	// Creating is set while the provider batch is being created: a new
	// owner finding it with no BatchID looks for the batch before
	// creating one (OpenAI: by the job id in its metadata).
	Creating bool `json:"creating,omitempty"`
	// Added are the chunks known to be in the provider batch (xAI);
	// Refused those the provider refused (their records get error
	// results).
	Added   []int     `json:"added,omitempty"`
	Refused []Refusal `json:"refused,omitempty"`
	// Adding is the chunk being added, nil for none; TotalBefore is the
	// batch's request count before that add, to tell after a crash
	// whether it happened.
	Adding      *int `json:"adding,omitempty"`
	TotalBefore int  `json:"total_before,omitempty"`
	// ProviderState and the counts are the provider batch's, as last
	// read.
	ProviderState string `json:"provider_state,omitempty"`
	Pending       int    `json:"pending"`
	Succeeded     int    `json:"succeeded"`
	Failed        int    `json:"failed"`
	Cancelled     int    `json:"cancelled"`
	CostUSDTicks  int64  `json:"cost_usd_ticks,omitempty"`
	// Cancel is set by sluice batches cancel: the owner cancels the
	// provider batch.
	Cancel bool `json:"cancel,omitempty"`
	// Created is when the job's first chunk was gathered; Updated when
	// this record was written.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Refusal is a chunk the provider refused, with its message.
type Refusal struct {
	Chunk   int    `json:"chunk"`
	Message string `json:"message"`
}

// Chunk is the value of one chunk of a job ("job/<id>/chunk/<seq>"). It
// repeats the job's API, endpoint and model: the chunks and the seal are
// all a new owner needs to take a job up.
type Chunk struct {
	V        int       `json:"v"`
	Job      string    `json:"job"`
	Seq      int       `json:"seq"`
	API      string    `json:"api"`
	Endpoint string    `json:"endpoint"`
	Model    string    `json:"model"`
	Requests []Request `json:"requests"`
}

// Request is one input record of a chunk: what is needed to send it
// again and to publish its result and dead letter.
type Request struct {
	// ID is RequestID of the coordinates.
	ID        string `json:"id"`
	CustomID  string `json:"custom_id"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Key, Headers and Value are the input record's, byte for byte
	// (base64 in JSON).
	Key     []byte   `json:"key"`
	Headers []Header `json:"headers,omitempty"`
	Value   []byte   `json:"value"`
	// Gathered is when the record was gathered (the age of the oldest
	// pending request).
	Gathered time.Time `json:"gathered"`
}

// Header is an input record's header.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// RequestOf is the chunk entry of the input record rec, whose
// custom_id is customID.
func RequestOf(rec *kgo.Record, customID string, now time.Time) Request {
	r := Request{
		ID: RequestID(rec.Topic, rec.Partition, rec.Offset), CustomID: customID,
		Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		Key: rec.Key, Value: rec.Value, Gathered: now,
	}
	for _, h := range rec.Headers {
		r.Headers = append(r.Headers, Header{Key: h.Key, Value: h.Value})
	}
	return r
}

// Input is the input record r came from, as the publisher takes it:
// coordinates, key, headers and value.
func (r Request) Input() *kgo.Record {
	rec := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return rec
}

// Encode returns the record value of v (a Job or a Chunk) with the
// current Version.
func Encode(v any) ([]byte, error) {
	switch v := v.(type) {
	case Job:
		v.V = Version
		return json.Marshal(v)
	case Chunk:
		v.V = Version
		return json.Marshal(v)
	case Seal:
		v.V = Version
		return json.Marshal(v)
	}
	return nil, fmt.Errorf("batchjob: cannot encode %T", v)
}

// DecodeJob decodes a Job record value.
func DecodeJob(b []byte) (Job, error) {
	var j Job
	if err := decode(b, &j); err != nil {
		return Job{}, err
	}
	switch {
	case j.V != Version:
		return Job{}, fmt.Errorf("%w: %d", ErrVersion, j.V)
	case !validID(j.ID) || len(j.BatchID) > MaxIDBytes || len(j.FileID) > MaxIDBytes:
		return Job{}, fmt.Errorf("%w: bad job, batch or file id", ErrRecord)
	case j.Chunks < 0 || j.Requests < 0 || j.TotalBefore < 0 || (j.Adding != nil && (*j.Adding < 0 || *j.Adding >= j.Chunks)):
		return Job{}, fmt.Errorf("%w: bad counts", ErrRecord)
	}
	switch j.Step {
	case StepGathering, StepSealed, StepSubmitted, StepPublishing, StepDone:
	default:
		return Job{}, fmt.Errorf("%w: unknown step %q", ErrRecord, j.Step)
	}
	return j, nil
}

// DecodeChunk decodes a Chunk record value.
func DecodeChunk(b []byte) (Chunk, error) {
	var c Chunk
	if err := decode(b, &c); err != nil {
		return Chunk{}, err
	}
	switch {
	case c.V != Version:
		return Chunk{}, fmt.Errorf("%w: %d", ErrVersion, c.V)
	case !validID(c.Job) || c.Seq < 0:
		return Chunk{}, fmt.Errorf("%w: bad job id or sequence", ErrRecord)
	case len(c.Requests) == 0 || len(c.Requests) > MaxChunkRequests:
		return Chunk{}, fmt.Errorf("%w: %d requests in a chunk", ErrRecord, len(c.Requests))
	}
	for i, r := range c.Requests {
		if !validID(r.ID) || len(r.CustomID) > MaxIDBytes || r.ID != RequestID(r.Topic, r.Partition, r.Offset) {
			return Chunk{}, fmt.Errorf("%w: request %d: its id does not match its coordinates", ErrRecord, i)
		}
	}
	return c, nil
}

func decode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data", ErrRecord)
	}
	return nil
}

func validID(id string) bool {
	return id != "" && len(id) <= MaxIDBytes && !strings.Contains(id, "/")
}
