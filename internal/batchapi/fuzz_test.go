package batchapi

import (
	"testing"
)

// FuzzDecodeOpenAIResult feeds result-file lines (provider bytes) to the
// decoder: it never panics, and a decoded result has an id, an outcome,
// and an error exactly when it did not succeed.
func FuzzDecodeOpenAIResult(f *testing.F) {
	for _, s := range []string{
		`{"id":"batch_req_1","custom_id":"r1","response":{"status_code":200,"request_id":"req_1","body":{"id":"c","usage":{"cost_in_usd_ticks":"5"}}},"error":null}`,
		`{"custom_id":"r2","response":{"status_code":400,"body":{"error":{"message":"m","code":"c"}}}}`,
		`{"custom_id":"r3","response":null,"error":{"code":"batch_expired","message":"m"}}`,
		`{"custom_id":"r4","error":"text"}`,
		`{"custom_id":""}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeOpenAIResult(line)
		if err != nil {
			return
		}
		checkResult(t, r)
	})
}

// FuzzDecodeXAIResults does the same for a page of xAI results.
func FuzzDecodeXAIResults(f *testing.F) {
	for _, s := range []string{
		`{"results":[{"batch_request_id":"r1","batch_result":{"response":{"chat_get_completion":{"id":"c","usage":{"cost_in_usd_ticks":7}}}}}],"pagination_token":"p"}`,
		`{"results":[{"batch_request_id":"r2","batch_result":{"error":{"code":"x","message":"expired"}}}]}`,
		`{"succeeded":[{"batch_request_id":"a","batch_result":{"response":{"chat_get_completion":null}}}],"failed":[{"batch_request_id":"b","error_message":"m"}]}`,
		`{"results":[{}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, page []byte) {
		rs, _, err := decodeXAIResults(page)
		if err != nil {
			return
		}
		for _, r := range rs {
			checkResult(t, r)
		}
	})
}

func checkResult(t *testing.T, r Result) {
	t.Helper()
	if r.ID == "" {
		t.Fatal("a result without an id")
	}
	if r.Outcome < Succeeded || r.Outcome > Cancelled {
		t.Fatalf("outcome %d", r.Outcome)
	}
	if (r.Outcome == Succeeded) != (r.Error == nil) {
		t.Fatalf("outcome %s with error %v", r.Outcome, r.Error)
	}
}
