package api

import (
	"net/http"
	"testing"
	"time"
)

// FuzzRetryAfter: whatever Retry-After and retry-after-ms say, the wait
// is in [0, MaxRetryAfter] and a plain number of seconds is honoured.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range [][2]string{
		{"3600", ""}, {"", "250"}, {"1e300", ""}, {"", "1e300"}, {"NaN", "NaN"}, {"-1", "-1"},
		{"Fri, 31 Dec 9999 23:59:59 GMT", ""}, {"Mon, 01 Jan 2024 00:00:00 GMT", ""}, {"0.5", "Inf"}, {" 7 ", ""},
	} {
		f.Add(s[0], s[1])
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ra, ms string) {
		h := http.Header{}
		h.Set("Retry-After", ra)
		h.Set("retry-after-ms", ms)
		d := retryAfter(h, now)
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("retryAfter(%q, %q) = %s, outside [0, %s]", ra, ms, d, MaxRetryAfter)
		}
	})
}
