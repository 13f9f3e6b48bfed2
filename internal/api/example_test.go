package api_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/internal/api"
)

func ExampleRetryable() {
	status := func(code int, errCode string) error {
		return &api.StatusError{Response: &api.Response{StatusCode: code}, Code: errCode}
	}
	for _, err := range []error{
		nil,
		status(429, "rate_limit_exceeded"),
		status(429, "insufficient_quota"),
		status(503, ""),
		status(400, "invalid_request_error"),
		status(401, "invalid_api_key"),
		fmt.Errorf("%w: EOF", api.ErrTransport),
		fmt.Errorf("%w: context deadline exceeded", api.ErrTimeout),
	} {
		fmt.Printf("%-45v retryable=%-5v quota=%v\n", err, api.Retryable(err), errors.Is(err, api.ErrQuota))
	}
	// Output:
	// <nil>                                         retryable=false quota=false
	// api: status 429 (rate_limit_exceeded)         retryable=true  quota=false
	// api: status 429 (insufficient_quota)          retryable=false quota=true
	// api: status 503                               retryable=true  quota=false
	// api: status 400 (invalid_request_error)       retryable=false quota=false
	// api: status 401 (invalid_api_key)             retryable=false quota=true
	// api: transport error: EOF                     retryable=true  quota=false
	// api: timeout: context deadline exceeded       retryable=true  quota=false
}

func ExampleRetryAfter() {
	err := error(&api.StatusError{Response: &api.Response{StatusCode: 429}, RetryAfter: 1500 * time.Millisecond})
	fmt.Println(api.RetryAfter(fmt.Errorf("attempt 2: %w", err)))
	// Output:
	// 1.5s
}
