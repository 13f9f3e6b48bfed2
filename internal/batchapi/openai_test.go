package batchapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/internal/api"
)

func TestOpenAIUploadCreateShapes(t *testing.T) {
	s, c := newStub(t)
	var purpose, filename string
	var lines []map[string]json.RawMessage
	s.handle("POST /v1/files", func(w http.ResponseWriter, r *http.Request, body []byte) {
		_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil {
			t.Errorf("content type: %v", err)
			return
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(p)
			switch p.FormName() {
			case "purpose":
				purpose = string(b)
			case "file":
				filename = p.FileName()
				sc := bufio.NewScanner(bytes.NewReader(b))
				for sc.Scan() {
					var l map[string]json.RawMessage
					if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
						t.Errorf("line %q: %v", sc.Text(), err)
					}
					lines = append(lines, l)
				}
			}
		}
		_, _ = io.WriteString(w, `{"id":"file-1","object":"file","purpose":"batch"}`)
	})
	var created map[string]any
	s.handle("POST /v1/batches", func(w http.ResponseWriter, _ *http.Request, body []byte) {
		_ = json.Unmarshal(body, &created)
		_, _ = io.WriteString(w, `{"id":"batch_1","object":"batch","status":"validating","input_file_id":"file-1","created_at":1767225600,"expires_at":1767312000,"request_counts":{"total":0,"completed":0,"failed":0},"metadata":{"sluice_job":"j-1"}}`)
	})
	o := NewOpenAI(c)
	body := json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	id, err := o.Upload(context.Background(), "j-1.jsonl", Slice([]Request{
		{ID: "prompts-0-1", URL: "/v1/chat/completions", Body: body},
		{ID: "prompts-0-2", URL: "/v1/chat/completions", Body: body},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if id != "file-1" || purpose != "batch" || filename != "j-1.jsonl" || len(lines) != 2 {
		t.Fatalf("upload: id %q purpose %q filename %q, %d lines", id, purpose, filename, len(lines))
	}
	if string(lines[1]["custom_id"]) != `"prompts-0-2"` || string(lines[1]["method"]) != `"POST"` ||
		string(lines[1]["url"]) != `"/v1/chat/completions"` || string(lines[1]["body"]) != string(body) {
		t.Fatalf("line %v", lines[1])
	}
	b, err := o.Create(context.Background(), id, "/v1/chat/completions", map[string]string{"sluice_job": "j-1"})
	if err != nil {
		t.Fatal(err)
	}
	if created["input_file_id"] != "file-1" || created["endpoint"] != "/v1/chat/completions" || created["completion_window"] != "24h" {
		t.Fatalf("create body %v", created)
	}
	if b.ID != "batch_1" || b.State != StateValidating || b.Metadata["sluice_job"] != "j-1" || b.ExpiresAt.Unix() != 1767312000 {
		t.Fatalf("batch %+v", b)
	}

	// Refused before any call: two endpoints in one file, an endpoint
	// the Batch API does not take, too many requests.
	n := len(s.requests())
	for name, reqs := range map[string][]Request{
		"mixed":       {{ID: "a", URL: "/v1/chat/completions", Body: body}, {ID: "b", URL: "/v1/embeddings", Body: body}},
		"unsupported": {{ID: "a", URL: "/v1/images/generations", Body: body}},
	} {
		if _, err := o.Upload(context.Background(), "x", Slice(reqs)); !errors.Is(err, ErrUnsupportedURL) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	many := make([]Request, OpenAIMaxRequests+1)
	for i := range many {
		many[i] = Request{ID: fmt.Sprint("r-", i), URL: "/v1/chat/completions", Body: body}
	}
	if _, err := o.Upload(context.Background(), "x", Slice(many)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too many: %v", err)
	}
	if len(s.requests()) != n {
		t.Fatal("a refused upload made a call")
	}
}

func TestOpenAIGetCancelList(t *testing.T) {
	s, c := newStub(t)
	s.handle("GET /v1/batches/batch_1", answer(`{"id":"batch_1","status":"in_progress","request_counts":{"total":10,"completed":6,"failed":1}}`))
	s.handle("POST /v1/batches/batch_1/cancel", answer(`{"id":"batch_1","status":"cancelling","request_counts":{"total":10,"completed":6,"failed":1}}`))
	s.handle("GET /v1/batches", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.URL.Query().Get("after") == "" {
			_, _ = io.WriteString(w, `{"data":[{"id":"b3","status":"completed"},{"id":"b2","status":"failed","errors":{"data":[{"code":"invalid_json_line","message":"line 2"}]}}],"last_id":"b2","has_more":true}`)
			return
		}
		_, _ = io.WriteString(w, `{"data":[{"id":"b1","status":"expired"}],"last_id":"b1","has_more":false}`)
	})
	o := NewOpenAI(c)
	b, err := o.Get(context.Background(), "batch_1")
	if err != nil || b.State != StateInProgress || b.Pending != 3 || b.Succeeded != 6 || b.Failed != 1 {
		t.Fatalf("get %+v, %v", b, err)
	}
	if b, err = o.Cancel(context.Background(), "batch_1"); err != nil || b.State != StateCancelling || b.State.Terminal() {
		t.Fatalf("cancel %+v, %v", b, err)
	}
	var ids []string
	for after := ""; ; {
		page, next, err := o.List(context.Background(), after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page {
			ids = append(ids, b.ID)
			if b.ID == "b2" && (len(b.Errors) != 1 || b.Errors[0] != "invalid_json_line: line 2") {
				t.Fatalf("b2 errors %q", b.Errors)
			}
		}
		if after = next; after == "" {
			break
		}
	}
	if strings.Join(ids, ",") != "b3,b2,b1" {
		t.Fatalf("listed %v", ids)
	}
}

func TestOpenAIResultsFile(t *testing.T) {
	s, c := newStub(t)
	s.handle("GET /v1/files/file-out/content", answer(
		`{"id":"batch_req_1","custom_id":"r1","response":{"status_code":200,"request_id":"req_1","body":{"id":"chatcmpl-1","object":"chat.completion","choices":[]}},"error":null}`+"\n"+
			`{"id":"batch_req_2","custom_id":"r2","response":{"status_code":400,"request_id":"req_2","body":{"error":{"message":"bad max_tokens","type":"invalid_request_error","code":"invalid_value"}}},"error":null}`+"\n\n"+
			`{"id":"batch_req_3","custom_id":"r3","response":null,"error":{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}`+"\n"+
			`{"id":"batch_req_4","custom_id":"r4","response":null,"error":{"code":"batch_cancelled","message":"cancelled"}}`))
	long := strings.Repeat("x", 1<<20)
	s.handle("GET /v1/files/file-long/content", answer(`{"custom_id":"ok","response":{"status_code":200,"body":{}}}`+"\n"+`{"custom_id":"`+long+`"}`+"\n"))
	s.handle("GET /v1/files/file-bad/content", answer("{\"custom_id\":\"ok\",\"response\":{\"status_code\":200,\"body\":{}}}\nnot json\n"))
	o := NewOpenAI(c)
	var got []Result
	if err := o.Results(context.Background(), "file-out", func(r Result) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("%d results", len(got))
	}
	if r := got[0]; r.ID != "r1" || r.Outcome != Succeeded || r.StatusCode != 200 || r.RequestID != "req_1" || !strings.Contains(string(r.Body), "chatcmpl-1") {
		t.Fatalf("r1 %+v", r)
	}
	if r := got[1]; r.Outcome != Failed || r.StatusCode != 400 || r.Error.Code != "invalid_value" || r.Error.Message != "bad max_tokens" || r.Body == nil {
		t.Fatalf("r2 %+v", r)
	}
	if got[2].Outcome != Expired || got[3].Outcome != Cancelled {
		t.Fatalf("r3 %v, r4 %v", got[2].Outcome, got[3].Outcome)
	}

	// The lines before a bad one are delivered; the bad one fails the
	// read as malformed. A line over the bound is never read whole.
	for _, file := range []string{"file-long", "file-bad"} {
		got = nil
		err := o.results(context.Background(), file, 1<<19, func(r Result) error { got = append(got, r); return nil })
		if !errors.Is(err, api.ErrMalformed) || len(got) != 1 || got[0].ID != "ok" {
			t.Fatalf("%s: %v after %d results", file, err, len(got))
		}
	}

	// fn's error stops the read.
	stop := errors.New("stop")
	if err := o.Results(context.Background(), "file-out", func(Result) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("stop: %v", err)
	}
}

func TestDecodeOpenAIResult(t *testing.T) {
	for _, tc := range []struct {
		line    string
		outcome Outcome
		code    string
		bad     bool
	}{
		{line: `{"custom_id":"a","response":{"status_code":200,"body":{"usage":{"cost_in_usd_ticks":7}}}}`, outcome: Succeeded},
		{line: `{"custom_id":"a","response":{"status_code":500,"body":"oops"}}`, outcome: Failed},
		{line: `{"custom_id":"a","response":{"status_code":200,"body":{}},"error":{"code":"server_error","message":"m"}}`, outcome: Failed, code: "server_error"},
		{line: `{"custom_id":"a","error":"plain message"}`, outcome: Failed},
		{line: `{"custom_id":"a","error":{"code":"batch_expired","message":"m"}}`, outcome: Expired, code: "batch_expired"},
		{line: `{"custom_id":"a","response":{"status_code":400,"body":{"error":{"message":"the token expired"}}}}`, outcome: Failed},
		{line: `{"response":{"status_code":200,"body":{}}}`, bad: true},
		{line: `{"custom_id":"a"}`, bad: true},
		{line: `[]`, bad: true},
	} {
		r, err := DecodeOpenAIResult([]byte(tc.line))
		if tc.bad {
			if !errors.Is(err, api.ErrMalformed) {
				t.Errorf("%s: err %v, want malformed", tc.line, err)
			}
			continue
		}
		if err != nil || r.Outcome != tc.outcome || (tc.code != "" && r.Error.Code != tc.code) || (r.Outcome != Succeeded && r.Error == nil) {
			t.Errorf("%s: %+v, %v", tc.line, r, err)
		}
	}
}
