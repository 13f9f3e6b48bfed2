package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes, read as a plain number of bytes or with a
// binary suffix: "268435456", "256MiB", "64KiB", "1GiB".
type ByteSize int64

// byteUnits are the accepted suffixes, longest first.
var byteUnits = []struct {
	suffix string
	factor int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// Decode implements envconfig.Decoder.
func (b *ByteSize) Decode(v string) error {
	s := strings.TrimSpace(v)
	factor := int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/factor {
		return fmt.Errorf("%q: want bytes, or a whole number with KiB, MiB or GiB (e.g. 256MiB)", v)
	}
	*b = ByteSize(n * factor)
	return nil
}

// String formats b with the largest suffix that divides it.
func (b ByteSize) String() string {
	for _, u := range byteUnits[:3] {
		if b != 0 && int64(b)%u.factor == 0 {
			return strconv.FormatInt(int64(b)/u.factor, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}
