package batchapi

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
)

// OpenAI's limits (https://platform.openai.com/docs/guides/batch, "Rate
// limits"; https://platform.openai.com/docs/api-reference/batch/create).
const (
	// OpenAIMaxRequests is the most requests one batch may hold.
	OpenAIMaxRequests = 50_000
	// OpenAIMaxFileBytes is the largest input file a batch takes (200 MB).
	OpenAIMaxFileBytes = 200 << 20
	// OpenAICompletionWindow is the only completion window the API takes.
	OpenAICompletionWindow = "24h"
)

// openAIEndpoints are the endpoints OpenAI's Batch API takes.
var openAIEndpoints = map[string]bool{
	"/v1/responses":        true,
	"/v1/chat/completions": true,
	"/v1/embeddings":       true,
	"/v1/completions":      true,
	"/v1/moderations":      true,
}

// OpenAISupports reports whether OpenAI's Batch API takes requests for
// the endpoint url.
func OpenAISupports(url string) bool { return openAIEndpoints[url] }

// OpenAI is a client of OpenAI's Batch API (and of the Files API it
// reads its input from and writes its results to).
type OpenAI struct {
	c     *api.Client
	limit int64 // MaxAnswerBytes; tests lower it
}

// NewOpenAI returns a client calling through c, whose base URL is the
// provider's (https://api.openai.com/v1).
func NewOpenAI(c *api.Client) *OpenAI { return &OpenAI{c: c, limit: MaxAnswerBytes} }

// openAIBatch is OpenAI's Batch object.
type openAIBatch struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	OutputFileID  string `json:"output_file_id"`
	ErrorFileID   string `json:"error_file_id"`
	CreatedAt     int64  `json:"created_at"`
	ExpiresAt     int64  `json:"expires_at"`
	RequestCounts struct {
		Total     int `json:"total"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"request_counts"`
	Errors *struct {
		Data []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"data"`
	} `json:"errors"`
	Metadata map[string]string `json:"metadata"`
}

func (ob openAIBatch) batch() Batch {
	b := Batch{
		ID:           ob.ID,
		State:        State(ob.Status),
		Total:        ob.RequestCounts.Total,
		Succeeded:    ob.RequestCounts.Completed,
		Failed:       ob.RequestCounts.Failed,
		OutputFileID: ob.OutputFileID,
		ErrorFileID:  ob.ErrorFileID,
		Metadata:     ob.Metadata,
	}
	b.Pending = max(b.Total-b.Succeeded-b.Failed, 0)
	if ob.CreatedAt > 0 {
		b.CreatedAt = time.Unix(ob.CreatedAt, 0)
	}
	if ob.ExpiresAt > 0 {
		b.ExpiresAt = time.Unix(ob.ExpiresAt, 0)
	}
	if ob.Errors != nil {
		for _, e := range ob.Errors.Data {
			b.Errors = append(b.Errors, api.Truncate(e.Code+": "+e.Message, 512))
		}
	}
	return b
}

// OpenAILine is the input file line of r: {"custom_id":ID,"method":"POST",
// "url":URL,"body":BODY}, without a newline.
func OpenAILine(r Request) ([]byte, error) {
	line, err := json.Marshal(struct {
		CustomID string          `json:"custom_id"`
		Method   string          `json:"method"`
		URL      string          `json:"url"`
		Body     json.RawMessage `json:"body"`
	}{r.ID, http.MethodPost, r.URL, r.Body})
	if err != nil {
		return nil, fmt.Errorf("batchapi: request %q: %w", r.ID, err)
	}
	return line, nil
}

// Lines yields the requests of a batch input file in order: it calls
// yield once per request and returns the first error yield returns (or
// its own). It must yield the same requests every time it is called:
// Upload calls it twice, once to check and size the file, once to send
// it, so that the file is never held in memory whole.
type Lines func(yield func(Request) error) error

// Slice is the Lines of reqs.
func Slice(reqs []Request) Lines {
	return func(yield func(Request) error) error {
		for _, r := range reqs {
			if err := yield(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// Upload uploads the requests lines yields as a batch input file (POST
// /v1/files, multipart, purpose "batch"; see OpenAI's "Batch API" guide)
// and returns its file id. Every request must be for one endpoint the
// Batch API takes (ErrUnsupportedURL), and the whole within
// OpenAIMaxRequests and OpenAIMaxFileBytes (ErrTooLarge); both are
// checked in a first pass, before any call. The second pass streams the
// file into the request with its length known, so memory holds one
// request at a time, not the file.
func (o *OpenAI) Upload(ctx context.Context, filename string, lines Lines) (string, error) {
	n, size, url := 0, int64(0), ""
	err := lines(func(r Request) error {
		if n++; n > OpenAIMaxRequests {
			return fmt.Errorf("batchapi: openai upload: %w: more than %d requests, a batch takes %d", ErrTooLarge, OpenAIMaxRequests, OpenAIMaxRequests)
		}
		if !openAIEndpoints[r.URL] {
			return fmt.Errorf("batchapi: openai upload: request %q: %w: %s", r.ID, ErrUnsupportedURL, r.URL)
		}
		if url == "" {
			url = r.URL
		}
		if r.URL != url {
			return fmt.Errorf("batchapi: openai upload: request %q: %w: a batch has one endpoint, %s and %s", r.ID, ErrUnsupportedURL, url, r.URL)
		}
		line, err := OpenAILine(r)
		if err != nil {
			return err
		}
		if size += int64(len(line)) + 1; size > OpenAIMaxFileBytes {
			return fmt.Errorf("batchapi: openai upload: %w: the input file exceeds %d bytes", ErrTooLarge, OpenAIMaxFileBytes)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", errors.New("batchapi: openai upload: no requests")
	}
	// The form around the file: its head (the purpose field and the
	// file part's header) and its tail (the closing boundary).
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	if err := mw.WriteField("purpose", "batch"); err != nil {
		return "", fmt.Errorf("batchapi: openai upload: %w", err)
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, filename))
	h.Set("Content-Type", "application/jsonl")
	if _, err := mw.CreatePart(h); err != nil {
		return "", fmt.Errorf("batchapi: openai upload: %w", err)
	}
	head := bytes.Clone(form.Bytes())
	form.Reset()
	if err := mw.Close(); err != nil {
		return "", fmt.Errorf("batchapi: openai upload: %w", err)
	}
	tail := form.Bytes()

	pr, pw := io.Pipe()
	written := make(chan struct{})
	var werr error // the second pass's own error, read after written
	go func() {    // owned by Upload, which waits for it
		defer close(written)
		werr = lines(func(r Request) error {
			line, err := OpenAILine(r)
			if err != nil {
				return err
			}
			_, err = pw.Write(append(line, '\n'))
			return err
		})
		pw.CloseWithError(werr)
	}()
	resp, err := o.c.Send(ctx, api.Call{
		Method: http.MethodPost, Path: "/files", ContentType: mw.FormDataContentType(),
		Body:          io.MultiReader(bytes.NewReader(head), pr, bytes.NewReader(tail)),
		ContentLength: int64(len(head)) + size + int64(len(tail)),
	}, 1<<20)
	pr.CloseWithError(errUploadEnded) // ends the writer if the call stopped reading
	<-written
	if err != nil {
		if werr != nil && !errors.Is(werr, errUploadEnded) && !errors.Is(werr, io.ErrClosedPipe) {
			err = werr // reading the file back failed: that is the cause
		}
		return "", fmt.Errorf("batchapi: openai upload: %w", err)
	}
	var f struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(resp.Body, &f); err != nil || f.ID == "" {
		return "", fmt.Errorf("batchapi: openai upload: %w: the answer names no file id", api.ErrMalformed)
	}
	return f.ID, nil
}

// errUploadEnded stops the writer of an upload whose call ended.
var errUploadEnded = errors.New("batchapi: upload ended")

// Create creates a batch of the uploaded input file fileID for the
// endpoint url, with completion window "24h" and metadata (at most 16
// pairs; OpenAI's limit). Creating is not idempotent: after an error that
// left no answer, look for the batch by its metadata (List) before
// creating it again.
func (o *OpenAI) Create(ctx context.Context, fileID, url string, metadata map[string]string) (Batch, error) {
	if !openAIEndpoints[url] {
		return Batch{}, fmt.Errorf("batchapi: openai create: %w: %s", ErrUnsupportedURL, url)
	}
	body, err := json.Marshal(map[string]any{
		"input_file_id":     fileID,
		"endpoint":          url,
		"completion_window": OpenAICompletionWindow,
		"metadata":          metadata,
	})
	if err != nil {
		return Batch{}, fmt.Errorf("batchapi: openai create: %w", err)
	}
	return o.batchCall(ctx, "create", api.Call{Method: http.MethodPost, Path: "/batches", ContentType: "application/json", Body: bytes.NewReader(body)})
}

// Get reads a batch.
func (o *OpenAI) Get(ctx context.Context, id string) (Batch, error) {
	if id == "" {
		return Batch{}, errors.New("batchapi: openai get: empty batch id")
	}
	return o.batchCall(ctx, "get", api.Call{Method: http.MethodGet, Path: "/batches/" + url.PathEscape(id)})
}

// Cancel cancels a batch: it is cancelling for up to 10 minutes, then
// cancelled, its finished requests' results in its output file.
func (o *OpenAI) Cancel(ctx context.Context, id string) (Batch, error) {
	if id == "" {
		return Batch{}, errors.New("batchapi: openai cancel: empty batch id")
	}
	return o.batchCall(ctx, "cancel", api.Call{Method: http.MethodPost, Path: "/batches/" + url.PathEscape(id) + "/cancel"})
}

// DeleteFile deletes file id (DELETE /v1/files/{id}): an input file once
// its batch ended, an output or error file once its results are read.
// A file already gone is not an error.
func (o *OpenAI) DeleteFile(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("batchapi: openai delete file: empty file id")
	}
	_, err := o.c.Send(ctx, api.Call{Method: http.MethodDelete, Path: "/files/" + url.PathEscape(id)}, 1<<20)
	var se *api.StatusError
	if errors.As(err, &se) && se.Response != nil && se.Response.StatusCode == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("batchapi: openai delete file: %w", err)
	}
	return nil
}

func (o *OpenAI) batchCall(ctx context.Context, what string, call api.Call) (Batch, error) {
	resp, err := o.c.Send(ctx, call, o.limit)
	if err != nil {
		return Batch{}, fmt.Errorf("batchapi: openai %s: %w", what, err)
	}
	var ob openAIBatch
	if err := json.Unmarshal(resp.Body, &ob); err != nil {
		return Batch{}, fmt.Errorf("batchapi: openai %s: %w: %v", what, api.ErrMalformed, err)
	}
	if ob.ID == "" || ob.Status == "" {
		return Batch{}, fmt.Errorf("batchapi: openai %s: %w: the batch has no id or status", what, api.ErrMalformed)
	}
	return ob.batch(), nil
}

// List reads one page of the account's batches, newest first: at most
// limit (1 to 100) after the batch id after ("" for the first page). next
// is the id to pass for the following page, "" after the last.
func (o *OpenAI) List(ctx context.Context, after string, limit int) (batches []Batch, next string, err error) {
	q := url.Values{"limit": {strconv.Itoa(min(max(limit, 1), 100))}}
	if after != "" {
		q.Set("after", after)
	}
	resp, err := o.c.Send(ctx, api.Call{Method: http.MethodGet, Path: "/batches?" + q.Encode()}, o.limit)
	if err != nil {
		return nil, "", fmt.Errorf("batchapi: openai list: %w", err)
	}
	var page struct {
		Data    []openAIBatch `json:"data"`
		LastID  string        `json:"last_id"`
		HasMore bool          `json:"has_more"`
	}
	if err := json.Unmarshal(resp.Body, &page); err != nil {
		return nil, "", fmt.Errorf("batchapi: openai list: %w: %v", api.ErrMalformed, err)
	}
	for _, ob := range page.Data {
		batches = append(batches, ob.batch())
	}
	if page.HasMore && len(page.Data) > 0 {
		next = cmp.Or(page.LastID, page.Data[len(page.Data)-1].ID)
	}
	return batches, next, nil
}

// Results reads a result file (a batch's OutputFileID or ErrorFileID,
// GET /v1/files/{id}/content) line by line, calling fn with each result
// in the file's order; an error of fn stops the read and is returned. A
// line longer than MaxResultBytes, or one that is not a result line,
// fails the read with api.ErrMalformed after the lines before it.
func (o *OpenAI) Results(ctx context.Context, fileID string, fn func(Result) error) error {
	return o.results(ctx, fileID, MaxResultBytes, fn)
}

func (o *OpenAI) results(ctx context.Context, fileID string, maxLine int, fn func(Result) error) error {
	if fileID == "" {
		return errors.New("batchapi: openai results: empty file id")
	}
	body, _, err := o.c.Open(ctx, api.Call{Method: http.MethodGet, Path: "/files/" + url.PathEscape(fileID) + "/content"})
	if err != nil {
		return fmt.Errorf("batchapi: openai results: %w", err)
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br, maxLine)
		if len(bytes.TrimSpace(line)) > 0 {
			r, derr := DecodeOpenAIResult(line)
			if derr != nil {
				return fmt.Errorf("batchapi: openai results: line %d: %w", n, derr)
			}
			if ferr := fn(r); ferr != nil {
				return ferr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, errLineTooLong):
			return fmt.Errorf("batchapi: openai results: line %d: %w: longer than %d bytes", n, api.ErrMalformed, maxLine)
		case err != nil:
			if ctx.Err() != nil {
				return fmt.Errorf("batchapi: openai results: %w", context.Cause(ctx))
			}
			return fmt.Errorf("batchapi: openai results: %w: %v", api.ErrTransport, err)
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line without its newline, at most limit bytes; a
// longer line is errLineTooLong. At the end of the input the last line
// comes with io.EOF.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > limit+1 { // +1: the newline
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return bytes.TrimSuffix(line, []byte("\n")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

// openAIResultLine is one line of a result file.
type openAIResultLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error json.RawMessage `json:"error"`
}

// DecodeOpenAIResult decodes one line of a batch's output or error file:
// {"id":...,"custom_id":...,"response":{"status_code":...,"request_id":...,
// "body":{...}},"error":null} or, for a request that did not run,
// "response":null and "error":{"code":"batch_expired","message":...}. A
// line without a custom_id, or with neither a response nor an error, is
// api.ErrMalformed.
func DecodeOpenAIResult(line []byte) (Result, error) {
	var l openAIResultLine
	if err := json.Unmarshal(line, &l); err != nil {
		return Result{}, fmt.Errorf("%w: %v", api.ErrMalformed, err)
	}
	if l.CustomID == "" {
		return Result{}, fmt.Errorf("%w: a result line without custom_id", api.ErrMalformed)
	}
	r := Result{ID: l.CustomID}
	hasError := len(l.Error) > 0 && !bytes.Equal(l.Error, []byte("null"))
	if l.Response != nil {
		r.StatusCode, r.RequestID = l.Response.StatusCode, l.Response.RequestID
		if len(l.Response.Body) > 0 && !bytes.Equal(l.Response.Body, []byte("null")) {
			r.Body = l.Response.Body
		}
		if !hasError && r.StatusCode >= 200 && r.StatusCode <= 299 {
			r.Outcome = Succeeded
			_, r.CostUSDTicks = answerMeta(r.Body)
			return r, nil
		}
	}
	e := &Error{}
	switch {
	case hasError:
		typ, code, msg := api.ParseErrorObject(l.Error)
		e.Code, e.Message = cmp.Or(code, typ), msg
	case l.Response != nil:
		var b struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(r.Body, &b) == nil && len(b.Error) > 0 {
			typ, code, msg := api.ParseErrorObject(b.Error)
			e.Code, e.Message = cmp.Or(code, typ), msg
		}
		if e.Message == "" {
			e.Message = fmt.Sprintf("status %d", r.StatusCode)
		}
	default:
		return Result{}, fmt.Errorf("%w: result %q has neither a response nor an error", api.ErrMalformed, l.CustomID)
	}
	e.Code, e.Message = api.Truncate(e.Code, 100), api.Truncate(e.Message, 1024)
	r.Outcome, r.Error = Failed, e
	switch e.Code {
	case "batch_expired":
		r.Outcome = Expired
	case "batch_cancelled":
		r.Outcome = Cancelled
	}
	return r, nil
}
