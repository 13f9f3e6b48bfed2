package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// The offset map is the commit metadata that lists the records above the
// committed offset that are already done (Parallel Consumer's "offset
// map"). The committed offset alone forces the next owner of a partition to
// redo every record above it; with the map it skips the ones listed. Listing
// fewer records than are done only costs redoing them, while listing one
// that is not done would lose it, so every doubt (too big to fit, unknown
// version, corrupt, written for another committed offset) falls back to the
// empty map.
//
// Wire format, version 1 (it is persisted: change it only under a new
// version prefix, and keep decoding the old one through a rolling upgrade):
//
//	s1:<tag>:<base>:<payload>
//
// base is the committed offset the map was written with, in canonical
// decimal; payload is base64url without padding (RawURLEncoding) of bytes
// that describe which offsets in (base, last done] are done, relative to
// base. The tag names the encoding; the encoder writes whichever is
// shorter:
//
//   - 'r', run lengths: uvarints n₀ d₀ n₁ d₁ … alternating a run of not-done
//     offsets (starting at base itself, which is never done) and a run of
//     done ones. Every run is at least 1 long and the list ends with a done
//     run. Sparse or clustered maps are a few bytes.
//   - 'b', bitset: bit i (least significant bit first within each byte) set
//     means offset base+i is done. Bit 0 is clear and the last byte is not
//     zero. Fragmented maps cost one bit per offset.
//
// The encoding is canonical: minimal uvarints, strict base64, no zero-length
// runs or trailing zero bytes, so one set has exactly one encoding per tag.
// Offsets absent from the map, including those Kafka never had (compaction,
// transaction markers), read as not done.
const offsetMapVersion = "s1:"

// Encoding tags of version 1.
const (
	offsetMapRuns   = 'r'
	offsetMapBitset = 'b'
)

// offsetMapBase64 is the payload alphabet: URL-safe, no padding, and strict
// so that stray bits or line breaks are rejected instead of ignored.
var offsetMapBase64 = base64.RawURLEncoding.Strict()

// Errors of decodeOffsetMap. On any of them the caller ignores the map and
// redoes every record above the committed offset.
var (
	// errOffsetMapVersion: the metadata is not a version 1 offset map
	// (written by a newer sluice or by another tool).
	errOffsetMapVersion = errors.New("consumer: unknown offset map version")
	// errOffsetMapBase: the map was written with another committed offset,
	// so offsets were committed since without it (an admin reset, another
	// client of the group).
	errOffsetMapBase = errors.New("consumer: offset map base is not the committed offset")
	// errOffsetMapCorrupt: the map is malformed.
	errOffsetMapCorrupt = errors.New("consumer: corrupt offset map")
)

// offsetMap is a decoded offset map: the offsets above base that are done.
// The zero value is the empty map. It is immutable, so safe for concurrent
// reads.
type offsetMap struct {
	base int64
	// runs holds the done offsets as inclusive ranges, flattened:
	// [runs[2k], runs[2k+1]] for each k. Ranges ascend, are above base and
	// neither overlap nor touch. Inclusive bounds so that offset
	// math.MaxInt64 needs no overflow.
	runs []int64
}

// done reports whether offset is marked done. It is a binary search over the
// runs, O(log runs) whatever the order of the questions, so records fetched
// again after a seek are answered as well as records fetched in order.
func (m offsetMap) done(offset int64) bool {
	lo, hi := 0, len(m.runs)/2
	for lo < hi { // first run whose last offset is >= offset
		mid := int(uint(lo+hi) >> 1)
		if m.runs[2*mid+1] < offset {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo < len(m.runs)/2 && m.runs[2*lo] <= offset
}

// last returns the highest done offset; ok is false for the empty map. Past
// it the map has nothing more to say and can be dropped.
func (m offsetMap) last() (offset int64, ok bool) {
	if len(m.runs) == 0 {
		return 0, false
	}
	return m.runs[len(m.runs)-1], true
}

// count returns the number of done offsets (for logs).
func (m offsetMap) count() int64 {
	var n int64
	for k := 0; k < len(m.runs); k += 2 {
		n += m.runs[k+1] - m.runs[k] + 1
	}
	return n
}

// encodeOffsetMap encodes the offset map of a partition whose committed
// offset is base (the next offset to consume: every offset below it is
// done, base itself is not) and whose offsets in done, strictly ascending
// and above base, are finished (offsetWindow.doneAbove). It returns the
// commit metadata, at most maxLen bytes long, and ok. No done offsets
// encode as "" (the empty map). ok is false, and the string empty, when the
// map does not fit in maxLen, or when base is negative or done is not
// strictly ascending above base; the caller then commits base with empty
// metadata, which only redoes records.
//
// Kafka bounds commit metadata by the broker's offset.metadata.max.bytes
// (4096 by default): pass a little less.
func encodeOffsetMap(base int64, done []int64, maxLen int) (string, bool) {
	if len(done) == 0 {
		return "", true
	}
	if base < 0 || done[0] <= base {
		return "", false
	}
	n := 1 // runs
	for i := 1; i < len(done); i++ {
		if done[i] <= done[i-1] {
			return "", false
		}
		if done[i] != done[i-1]+1 {
			n++
		}
	}
	runs := make([]int64, 0, 2*n)
	for _, o := range done {
		if n := len(runs); n > 0 && runs[n-1] == o-1 {
			runs[n-1] = o
			continue
		}
		runs = append(runs, o, o)
	}
	return offsetMap{base: base, runs: runs}.encode(maxLen)
}

// encode returns m in the shorter encoding; ok is false when that does not
// fit in maxLen. The runs must be well formed (see offsetMap).
func (m offsetMap) encode(maxLen int) (string, bool) {
	if len(m.runs) == 0 {
		return "", true
	}
	// Size both encodings first: the bitset of a wide span would be huge,
	// and is only built when it is the shorter.
	runsLen := runsPayloadLen(m.base, m.runs)
	rel := uint64(m.runs[len(m.runs)-1] - m.base) // highest done, relative
	tag, payloadLen := byte(offsetMapRuns), runsLen
	if rel/8+1 < uint64(runsLen) {
		tag, payloadLen = offsetMapBitset, int(rel/8+1)
	}
	header := offsetMapVersion + string(tag) + ":" + strconv.FormatInt(m.base, 10) + ":"
	total := len(header) + offsetMapBase64.EncodedLen(payloadLen)
	if total > maxLen {
		return "", false
	}
	var payload []byte
	if tag == offsetMapRuns {
		payload = appendRunsPayload(make([]byte, 0, payloadLen), m.base, m.runs)
	} else {
		payload = appendBitsetPayload(make([]byte, 0, payloadLen), m.base, m.runs)
	}
	out := make([]byte, 0, total)
	out = append(out, header...)
	out = offsetMapBase64.AppendEncode(out, payload)
	return string(out), true
}

// runsPayloadLen is the length of the run-length payload of runs.
func runsPayloadLen(base int64, runs []int64) int {
	n := 0
	next := uint64(0) // relative offset of the first offset not yet described
	for k := 0; k < len(runs); k += 2 {
		first, last := uint64(runs[k]-base), uint64(runs[k+1]-base)
		n += uvarintLen(first-next) + uvarintLen(last-first+1)
		next = last + 1
	}
	return n
}

// appendRunsPayload appends the run-length payload of runs to b.
func appendRunsPayload(b []byte, base int64, runs []int64) []byte {
	next := uint64(0)
	for k := 0; k < len(runs); k += 2 {
		first, last := uint64(runs[k]-base), uint64(runs[k+1]-base)
		b = binary.AppendUvarint(b, first-next)
		b = binary.AppendUvarint(b, last-first+1)
		next = last + 1
	}
	return b
}

// appendBitsetPayload appends the bitset payload of runs to b. The span of
// runs must be small enough to allocate.
func appendBitsetPayload(b []byte, base int64, runs []int64) []byte {
	start := len(b)
	b = append(b, make([]byte, uint64(runs[len(runs)-1]-base)/8+1)...)
	bs := b[start:]
	for k := 0; k < len(runs); k += 2 {
		for i := uint64(runs[k] - base); i <= uint64(runs[k+1]-base); i++ {
			bs[i/8] |= 1 << (i % 8)
		}
	}
	return b
}

// uvarintLen is the length of the minimal uvarint encoding of v.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// decodeOffsetMap decodes the offset map in the commit metadata meta, read
// together with the committed offset committed. Empty metadata is the empty
// map. Metadata that is not a version 1 map, is malformed or was written
// with another base than committed is an error (errOffsetMapVersion,
// errOffsetMapCorrupt, errOffsetMapBase) with the empty map: the caller
// then redoes everything above committed. It never panics, whatever meta.
//
// The decoded map takes memory proportional to len(meta) (at most 16 bytes
// per run, a few runs per byte); the broker bounds meta by
// offset.metadata.max.bytes.
func decodeOffsetMap(meta string, committed int64) (offsetMap, error) {
	if meta == "" {
		return offsetMap{}, nil
	}
	rest, ok := strings.CutPrefix(meta, offsetMapVersion)
	if !ok {
		return offsetMap{}, errOffsetMapVersion
	}
	if len(rest) < 2 || rest[1] != ':' {
		return offsetMap{}, fmt.Errorf("%w: no encoding tag", errOffsetMapCorrupt)
	}
	tag := rest[0]
	baseText, payloadText, ok := strings.Cut(rest[2:], ":")
	if !ok {
		return offsetMap{}, fmt.Errorf("%w: no base offset", errOffsetMapCorrupt)
	}
	base, err := strconv.ParseInt(baseText, 10, 64)
	if err != nil || base < 0 || strconv.FormatInt(base, 10) != baseText {
		return offsetMap{}, fmt.Errorf("%w: bad base offset", errOffsetMapCorrupt)
	}
	if base != committed {
		return offsetMap{}, fmt.Errorf("%w: map base %d, committed %d", errOffsetMapBase, base, committed)
	}
	if strings.ContainsAny(payloadText, "\r\n") { // base64 would skip them
		return offsetMap{}, fmt.Errorf("%w: line break in payload", errOffsetMapCorrupt)
	}
	payload, err := offsetMapBase64.DecodeString(payloadText)
	if err != nil || len(payload) == 0 {
		return offsetMap{}, fmt.Errorf("%w: bad payload", errOffsetMapCorrupt)
	}
	var runs []int64
	switch tag {
	case offsetMapRuns:
		runs, err = decodeRunsPayload(base, payload)
	case offsetMapBitset:
		runs, err = decodeBitsetPayload(base, payload)
	default:
		err = fmt.Errorf("%w: unknown encoding %q", errOffsetMapCorrupt, tag)
	}
	if err != nil {
		return offsetMap{}, err
	}
	return offsetMap{base: base, runs: runs}, nil
}

// decodeRunsPayload decodes a run-length payload into runs.
func decodeRunsPayload(base int64, p []byte) ([]int64, error) {
	limit := uint64(math.MaxInt64 - base) // highest relative offset there is
	runs := make([]int64, 0, len(p))      // a run takes at least 2 bytes
	next := uint64(0)                     // relative offset of the first offset not yet described
	for len(p) > 0 {
		skip, n := readRun(p)
		if n == 0 {
			return nil, fmt.Errorf("%w: bad run length", errOffsetMapCorrupt)
		}
		p = p[n:]
		length, n := readRun(p)
		if n == 0 {
			return nil, fmt.Errorf("%w: bad or missing done-run length", errOffsetMapCorrupt)
		}
		p = p[n:]
		if next > limit || skip > limit-next || length-1 > limit-(next+skip) {
			return nil, fmt.Errorf("%w: offsets past the largest int64", errOffsetMapCorrupt)
		}
		first := next + skip
		last := first + length - 1
		runs = append(runs, base+int64(first), base+int64(last))
		next = last + 1
	}
	return runs, nil
}

// readRun reads a run length: a minimal, non-zero uvarint. n is 0 when
// there is none.
func readRun(p []byte) (v uint64, n int) {
	v, n = binary.Uvarint(p)
	if n <= 0 || v == 0 || n != uvarintLen(v) {
		return 0, 0
	}
	return v, n
}

// decodeBitsetPayload decodes a bitset payload into runs.
func decodeBitsetPayload(base int64, p []byte) ([]int64, error) {
	if p[0]&1 != 0 {
		return nil, fmt.Errorf("%w: base offset marked done", errOffsetMapCorrupt)
	}
	top := p[len(p)-1]
	if top == 0 {
		return nil, fmt.Errorf("%w: trailing zero bytes", errOffsetMapCorrupt)
	}
	highest := uint64(len(p)-1)*8 + uint64(bits.Len8(top)) - 1
	if highest > uint64(math.MaxInt64-base) {
		return nil, fmt.Errorf("%w: offsets past the largest int64", errOffsetMapCorrupt)
	}
	n, prev := 0, byte(0) // runs: bits set whose lower neighbour is clear
	for _, b := range p {
		n += bits.OnesCount8(b &^ (b<<1 | prev>>7))
		prev = b
	}
	runs := make([]int64, 0, 2*n)
	open := false // the last run extends to the previous bit
	for i, b := range p {
		if (b == 0 && !open) || (b == 0xff && open) { // nothing starts or ends here
			if open {
				runs[len(runs)-1] = base + int64(i)*8 + 7
			}
			continue
		}
		for j := range 8 {
			o := base + int64(i)*8 + int64(j)
			switch {
			case b&(1<<j) == 0:
				open = false
			case open:
				runs[len(runs)-1] = o
			default:
				runs = append(runs, o, o)
				open = true
			}
		}
	}
	return runs, nil
}
