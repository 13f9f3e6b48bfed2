package limiter

import (
	"net/http"
	"testing"
)

// FuzzProviderLimits: whatever the x-ratelimit-* headers say, counts are
// -1 (absent or unreadable) or non-negative, and reset times are in
// [0, maxHeaderDuration].
func FuzzProviderLimits(f *testing.F) {
	for _, s := range [][4]string{
		{"0", "1234", "1.5s", "120ms"}, {"-1", "lots", "6m0s", "0.25"}, {"", "", "1e400", "NaN"},
		{"99999999999999999999", "7", "100000h", "-1s"}, {" 5 ", "0", "2", "Inf"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, remReq, remTok, resetReq, resetTok string) {
		h := http.Header{}
		h.Set("x-ratelimit-remaining-requests", remReq)
		h.Set("x-ratelimit-remaining-tokens", remTok)
		h.Set("x-ratelimit-reset-requests", resetReq)
		h.Set("x-ratelimit-reset-tokens", resetTok)
		pl := readProviderLimits(h)
		if pl.remainingRequests < -1 || pl.remainingTokens < -1 {
			t.Fatalf("counts %+v below -1", pl)
		}
		if pl.resetRequests < 0 || pl.resetRequests > maxHeaderDuration || pl.resetTokens < 0 || pl.resetTokens > maxHeaderDuration {
			t.Fatalf("reset times %+v outside [0, %s]", pl, maxHeaderDuration)
		}
	})
}
