package limiter

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// providerLimits is what one answer's x-ratelimit-* headers said about the
// account; a field is -1 (count) or 0 (reset) when the header was absent.
type providerLimits struct {
	remainingRequests, remainingTokens int64
	resetRequests, resetTokens         time.Duration
}

// readProviderLimits parses the OpenAI-style headers
// x-ratelimit-remaining-{requests,tokens} and x-ratelimit-reset-{requests,tokens}.
func readProviderLimits(h http.Header) providerLimits {
	pl := providerLimits{remainingRequests: -1, remainingTokens: -1}
	if h == nil {
		return pl
	}
	pl.remainingRequests = headerCount(h.Get("x-ratelimit-remaining-requests"))
	pl.remainingTokens = headerCount(h.Get("x-ratelimit-remaining-tokens"))
	pl.resetRequests = headerDuration(h.Get("x-ratelimit-reset-requests"))
	pl.resetTokens = headerDuration(h.Get("x-ratelimit-reset-tokens"))
	return pl
}

func headerCount(v string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// maxHeaderDuration bounds a parsed reset time; the limiter caps the
// pause it causes further (Config.MaxCooldown).
const maxHeaderDuration = 24 * time.Hour

// headerDuration reads "1s", "6m0s", "120ms" (OpenAI) or plain seconds
// ("0.5"), bounded to maxHeaderDuration; anything else, negative or not a
// number, is 0 (ignored).
func headerDuration(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		s, ferr := strconv.ParseFloat(v, 64)
		switch {
		case ferr != nil && !errors.Is(ferr, strconv.ErrRange), !(s > 0):
			return 0 // also NaN and -Inf
		case s >= maxHeaderDuration.Seconds():
			return maxHeaderDuration
		}
		d = time.Duration(s * float64(time.Second))
	}
	return min(max(d, 0), maxHeaderDuration)
}
