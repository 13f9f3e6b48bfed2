package endpoint

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
)

// count is a number a request states that the estimate reads (max_tokens,
// max_completion_tokens, max_output_tokens, n). JSON has one number type,
// so the API may take 1e6, 128.0 or 1e300 where an integer is meant: any
// number is read, rounded down and saturated at MaxCeiling (negative ones
// at 0), so no spelling escapes the caps and the budget checks; so is a
// number written as a string ("10000000"), which a lenient server may
// honour. Any other value reads as 0 (absent) instead of failing the
// whole decode, which would leave nothing reserved.
type count int

// UnmarshalJSON implements json.Unmarshaler.
func (c *count) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if s, err := strconv.Unquote(string(b)); err == nil && len(b) > 0 && b[0] == '"' {
		// A lenient server may take "10000000" for the number: so does
		// the estimate.
		b = []byte(strings.TrimSpace(s))
	}
	f, err := strconv.ParseFloat(string(b), 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		*c = 0 // null, a string, an object: not a count
	case f >= MaxCeiling || math.IsInf(f, 1):
		*c = MaxCeiling
	case f <= 0:
		*c = 0
	default:
		*c = count(f)
	}
	return nil
}
