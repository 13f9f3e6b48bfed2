package consumer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// offsetRange returns the offsets from, from+step, … below to.
func offsetRange(from, to, step int64) []int64 {
	var out []int64
	for o := from; o < to; o += step {
		out = append(out, o)
	}
	return out
}

// runsOf returns the runs (see offsetMap) of strictly ascending offsets.
func runsOf(done []int64) []int64 {
	var runs []int64
	for _, o := range done {
		if n := len(runs); n > 0 && runs[n-1] == o-1 {
			runs[n-1] = o
			continue
		}
		runs = append(runs, o, o)
	}
	return runs
}

// checkOffsetMap fails unless m holds exactly done above base: every listed
// offset is done, and base, the neighbours of each run and a sample of the
// offsets in between are not.
func checkOffsetMap(t *testing.T, m offsetMap, base int64, done []int64) {
	t.Helper()
	if want := runsOf(done); !slices.Equal(m.runs, want) {
		t.Fatalf("runs = %v, want %v", m.runs, want)
	}
	if m.done(base) {
		t.Fatalf("base %d reads as done", base)
	}
	for _, o := range done {
		if !m.done(o) {
			t.Fatalf("offset %d not done", o)
		}
	}
	for k := 0; k < len(m.runs); k += 2 {
		if m.done(m.runs[k] - 1) {
			t.Fatalf("offset %d before a run reads as done", m.runs[k]-1)
		}
		if m.runs[k+1] < math.MaxInt64 && m.done(m.runs[k+1]+1) {
			t.Fatalf("offset %d after a run reads as done", m.runs[k+1]+1)
		}
	}
	if got := m.count(); got != int64(len(done)) {
		t.Fatalf("count = %d, want %d", got, len(done))
	}
	last, ok := m.last()
	if ok != (len(done) > 0) || ok && last != done[len(done)-1] {
		t.Fatalf("last = %d, %v", last, ok)
	}
}

func TestOffsetMapRoundTrip(t *testing.T) {
	t.Parallel()
	const big = math.MaxInt64
	tests := []struct {
		name string
		base int64
		done []int64
	}{
		{"empty", 100, nil},
		{"single next to base", 100, []int64{101}},
		{"single far above", 100, []int64{1_000_100}},
		{"base zero", 0, []int64{1, 2, 5}},
		{"dense", 1000, offsetRange(1001, 2024, 1)},
		{"sparse", 1000, offsetRange(1050, 2024, 100)},
		{"alternating", 1000, offsetRange(1001, 2024, 2)},
		{"long runs", 0, slices.Concat(offsetRange(5, 505, 1), offsetRange(508, 1008, 1), offsetRange(2000, 9000, 1))},
		{"gaps from compaction or markers", 10, []int64{11, 12, 15, 20, 21, 22, 23, 40}},
		{"high offsets", 1 << 50, offsetRange(1<<50+3, 1<<50+700, 3)},
		{"up to the largest offset", big - 10, []int64{big - 9, big - 3, big - 1, big}},
		{"whole int64 span", 0, []int64{1, big}},
		{"run to the largest offset", big - 300, offsetRange(big-200, big, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, ok := encodeOffsetMap(tt.base, tt.done, 4000)
			if !ok || len(s) > 4000 {
				t.Fatalf("encode: ok = %v, len = %d", ok, len(s))
			}
			if (s == "") != (len(tt.done) == 0) {
				t.Fatalf("encode = %q for %d done offsets", s, len(tt.done))
			}
			m, err := decodeOffsetMap(s, tt.base)
			if err != nil {
				t.Fatalf("decode %q: %v", s, err)
			}
			checkOffsetMap(t, m, tt.base, tt.done)
		})
	}
}

// TestOffsetMapGolden pins the wire format: the metadata outlives the
// binary that wrote it.
func TestOffsetMapGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		base int64
		done []int64
		want string
	}{
		{100, []int64{101}, "s1:b:100:Ag"},            // bit 1
		{100, []int64{120}, "s1:r:100:FAE"},           // runs 20,1
		{0, []int64{1, 3, 5, 7}, "s1:b:0:qg"},         // bits 0b10101010
		{7, []int64{8, 9, 10, 300}, "s1:r:7:AQOhAgE"}, // runs 1,3,289,1
		{7, []int64{9, 11, 13, 15, 16}, "s1:b:7:VAM"}, // bits 0x54 0x03
		{math.MaxInt64 - 1, []int64{math.MaxInt64}, "s1:b:9223372036854775806:Ag"},
		{math.MaxInt64 - 100, []int64{math.MaxInt64}, "s1:r:9223372036854775707:ZAE"}, // runs 100,1
	}
	for _, tt := range tests {
		s, ok := encodeOffsetMap(tt.base, tt.done, 4000)
		if !ok || s != tt.want {
			t.Errorf("encode(%d, %v) = %q, %v; want %q", tt.base, tt.done, s, ok, tt.want)
			continue
		}
		m, err := decodeOffsetMap(tt.want, tt.base)
		if err != nil {
			t.Errorf("decode %q: %v", tt.want, err)
			continue
		}
		checkOffsetMap(t, m, tt.base, tt.done)
	}
}

// TestOffsetMapChoosesShorter checks the encoder writes whichever of the
// two payloads is shorter (run lengths on a tie).
func TestOffsetMapChoosesShorter(t *testing.T) {
	t.Parallel()
	const base = 1_000_000
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := map[string][]int64{
		"every other":      offsetRange(base+1, base+1024, 2),
		"ten":              offsetRange(base+100, base+1024, 100),
		"top 1000":         offsetRange(base+24, base+1024, 1),
		"one":              {base + 1},
		"four alternating": {base + 1, base + 3, base + 5, base + 7}, // 1 byte vs 8
	}
	for i := range 20 {
		var done []int64
		for o := int64(base + 1); o < base+1024; o++ {
			if rng.IntN(20) < i {
				done = append(done, o)
			}
		}
		shapes[fmt.Sprintf("random density %d/20", i)] = done
	}
	for name, done := range shapes {
		if len(done) == 0 {
			continue
		}
		runs := runsOf(done)
		rl := appendRunsPayload(nil, base, runs)
		bs := appendBitsetPayload(nil, base, runs)
		if len(rl) != runsPayloadLen(base, runs) {
			t.Errorf("%s: runsPayloadLen = %d, payload %d", name, runsPayloadLen(base, runs), len(rl))
		}
		wantTag, payload := byte(offsetMapRuns), rl
		if len(bs) < len(rl) {
			wantTag, payload = offsetMapBitset, bs
		}
		want := offsetMapVersion + string(wantTag) + ":" + strconv.Itoa(base) + ":" + offsetMapBase64.EncodeToString(payload)
		s, ok := encodeOffsetMap(base, done, 4000)
		if !ok || s != want {
			t.Errorf("%s: encode = %q, %v; want %q (runs %d bytes, bitset %d)", name, s, ok, want, len(rl), len(bs))
		}
		t.Logf("%s: %d done, %d bytes (%c)", name, len(done), len(s), wantTag)
	}
}

func TestOffsetMapSizeBound(t *testing.T) {
	t.Parallel()
	alternating := offsetRange(1, 200_000, 2) // 100k done, every other offset
	if s, ok := encodeOffsetMap(0, alternating, 4000); ok || s != "" {
		t.Fatalf("100k alternating offsets: encode = %d bytes, %v; want no fit", len(s), ok)
	}
	if s, ok := encodeOffsetMap(0, alternating, math.MaxInt); !ok || len(s) <= 4000 {
		t.Fatalf("100k alternating offsets unbounded: %d bytes, %v", len(s), ok)
	}
	// The bound is exact, for both encodings.
	for _, done := range [][]int64{offsetRange(1, 5000, 2), offsetRange(100, 5000, 100)} {
		s, ok := encodeOffsetMap(0, done, math.MaxInt)
		if !ok {
			t.Fatal("no encoding without a bound")
		}
		if got, ok := encodeOffsetMap(0, done, len(s)); !ok || got != s {
			t.Errorf("maxLen = len: %q, %v; want %q", got, ok, s)
		}
		if got, ok := encodeOffsetMap(0, done, len(s)-1); ok || got != "" {
			t.Errorf("maxLen = len-1: %q, %v; want no fit", got, ok)
		}
	}
	if s, ok := encodeOffsetMap(0, nil, 0); !ok || s != "" {
		t.Errorf("empty map with maxLen 0: %q, %v", s, ok)
	}
}

func TestOffsetMapBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		base int64
		done []int64
	}{
		{"base listed", 10, []int64{10, 11}},
		{"below base", 10, []int64{5, 11}},
		{"unsorted", 10, []int64{12, 11}},
		{"duplicate", 10, []int64{11, 11}},
		{"negative base", -1, []int64{1}},
	}
	for _, tt := range tests {
		if s, ok := encodeOffsetMap(tt.base, tt.done, 4000); ok || s != "" {
			t.Errorf("%s: encode = %q, %v; want refusal", tt.name, s, ok)
		}
	}
}

func TestOffsetMapBaseMismatch(t *testing.T) {
	t.Parallel()
	s, ok := encodeOffsetMap(100, []int64{102, 103}, 4000)
	if !ok {
		t.Fatal("encode failed")
	}
	for _, committed := range []int64{99, 101, 0, -1, 1000} {
		m, err := decodeOffsetMap(s, committed)
		if !errors.Is(err, errOffsetMapBase) || len(m.runs) != 0 {
			t.Errorf("committed %d: map %v, err %v; want errOffsetMapBase", committed, m.runs, err)
		}
	}
}

func TestOffsetMapVersion(t *testing.T) {
	t.Parallel()
	if m, err := decodeOffsetMap("", 5); err != nil || len(m.runs) != 0 || m.done(6) {
		t.Fatalf("empty metadata: %v, %v", m.runs, err)
	}
	for _, meta := range []string{"s2:r:5:AQE", "S1:r:5:AQE", "s1", "s:r:5:AQE", "some other tool's note", " s1:r:5:AQE"} {
		if m, err := decodeOffsetMap(meta, 5); !errors.Is(err, errOffsetMapVersion) || len(m.runs) != 0 {
			t.Errorf("%q: %v, %v; want errOffsetMapVersion", meta, m.runs, err)
		}
	}
}

func TestOffsetMapCorrupt(t *testing.T) {
	t.Parallel()
	b64 := offsetMapBase64.EncodeToString
	tests := []struct{ name, meta string }{
		{"no tag", "s1:"},
		{"tag only", "s1:r"},
		{"no base", "s1:r:"},
		{"no payload separator", "s1:r:5"},
		{"empty payload", "s1:r:5:"},
		{"long tag", "s1:rb:5:AQE"},
		{"unknown tag", "s1:x:5:AQE"},
		{"signed base", "s1:r:+5:AQE"},
		{"padded base", "s1:r:05:AQE"},
		{"negative base", "s1:r:-5:AQE"},
		{"base out of range", "s1:r:9223372036854775808:AQE"},
		{"not base64", "s1:r:5:A*E"},
		{"padded base64", "s1:r:5:AQE="},
		{"standard base64", "s1:r:5:" + "+/8"},
		{"stray base64 bits", "s1:r:5:AQF"},
		{"line break", "s1:r:5:AQ\nE"},
		{"odd run count", "s1:r:5:" + b64([]byte{1, 1, 1})},
		{"zero skip", "s1:r:5:" + b64([]byte{0, 1})},
		{"zero done run", "s1:r:5:" + b64([]byte{1, 0})},
		{"non-minimal uvarint", "s1:r:5:" + b64([]byte{0x81, 0x00, 1})},
		{"truncated uvarint", "s1:r:5:" + b64([]byte{1, 0x80})},
		{"uvarint overflow", "s1:r:5:" + b64([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})},
		{"runs past int64", "s1:r:5:" + b64(appendRunsPayloadRaw(1, math.MaxInt64-4))},
		{"skip past int64", "s1:r:5:" + b64(appendRunsPayloadRaw(math.MaxInt64-4, 1))},
		{"second run past int64", "s1:r:5:" + b64(appendRunsPayloadRaw(1, math.MaxInt64-6, 1, 1))},
		{"bitset base done", "s1:b:5:" + b64([]byte{0x03})},
		{"bitset trailing zero", "s1:b:5:" + b64([]byte{0x02, 0x00})},
		{"bitset all zero", "s1:b:5:" + b64([]byte{0x00})},
		{"bitset past int64", "s1:b:" + strconv.FormatInt(math.MaxInt64-3, 10) + ":" + b64([]byte{0x10})},
	}
	for _, tt := range tests {
		committed := int64(5)
		if strings.HasPrefix(tt.meta, "s1:b:9") {
			committed = math.MaxInt64 - 3
		}
		m, err := decodeOffsetMap(tt.meta, committed)
		if !errors.Is(err, errOffsetMapCorrupt) || len(m.runs) != 0 {
			t.Errorf("%s: %q decoded to %v, %v; want errOffsetMapCorrupt", tt.name, tt.meta, m.runs, err)
		}
	}
	// The edges just inside the range decode.
	for _, meta := range []string{
		"s1:r:5:" + b64(appendRunsPayloadRaw(1, math.MaxInt64-5)),
		"s1:r:5:" + b64(appendRunsPayloadRaw(1, math.MaxInt64-7, 1, 1)),
		"s1:r:5:" + b64(appendRunsPayloadRaw(math.MaxInt64-5, 1)),
	} {
		m, err := decodeOffsetMap(meta, 5)
		if last, _ := m.last(); err != nil || last != math.MaxInt64 {
			t.Errorf("%q: last %d, %v; want up to MaxInt64", meta, last, err)
		}
	}
	if m, err := decodeOffsetMap("s1:b:"+strconv.FormatInt(math.MaxInt64-3, 10)+":"+b64([]byte{0x08}), math.MaxInt64-3); err != nil || !m.done(math.MaxInt64) {
		t.Errorf("bitset up to MaxInt64: %v, %v", m.runs, err)
	}
}

// appendRunsPayloadRaw returns the uvarints of lengths, unchecked.
func appendRunsPayloadRaw(lengths ...uint64) []byte {
	var b []byte
	for _, l := range lengths {
		b = binary.AppendUvarint(b, l)
	}
	return b
}

// TestOffsetMapWindow encodes what an offsetWindow reports, as the commit
// path will.
func TestOffsetMapWindow(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		w := newOffsetWindow()
		var es []*entry
		o := rng.Int64N(1 << 40)
		for range 1024 {
			es = append(es, w.push(o, 1))
			o += 1 + rng.Int64N(3) // gaps, as compaction leaves
		}
		finished := make(map[*entry]bool)
		for _, i := range rng.Perm(len(es))[:rng.IntN(len(es))] {
			w.finish(es[i])
			finished[es[i]] = true
		}
		base, _, _ := w.base()
		s, ok := w.asMap().encode(4000)
		if !ok {
			t.Fatalf("window of 1024 did not fit: %d runs above %d", len(w.runs)/2, base)
		}
		m, err := decodeOffsetMap(s, base)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.offset >= base && m.done(e.offset) != finished[e] {
				t.Fatalf("offset %d: map says done %v, finished %v", e.offset, m.done(e.offset), finished[e])
			}
		}
	}
}

func FuzzOffsetMap(f *testing.F) {
	f.Add(int64(100), []byte{0, 0, 3, 1}, "s1:r:100:AQE")
	f.Add(int64(0), []byte{1, 1, 1, 1}, "s1:b:0:qg")
	f.Add(int64(math.MaxInt64-300), []byte{0xff, 5}, "s1:r:5:"+offsetMapBase64.EncodeToString([]byte{1, 0x80, 1}))
	f.Add(int64(-7), []byte{}, "")
	f.Add(int64(1<<40), []byte{200, 0, 0, 0, 9, 0xff}, "s1:b:1099511627776:VAE")
	f.Add(int64(100), []byte{1}, "AA8") // a bitset as long as its run lengths
	f.Fuzz(func(t *testing.T, base int64, steps []byte, meta string) {
		if base < 0 {
			base = -(base + 1)
		}
		// Round trip: each step byte moves to the next done offset, 0xff
		// by a long way.
		var done []int64
		for o, i := base, 0; i < len(steps); i++ {
			step := int64(steps[i]) + 1
			if steps[i] == 0xff {
				step = 1 << 40
			}
			if o > math.MaxInt64-step {
				break
			}
			o += step
			done = append(done, o)
		}
		const maxLen = 4000
		s, ok := encodeOffsetMap(base, done, maxLen)
		if ok {
			if len(s) > maxLen {
				t.Fatalf("encoded %d bytes, bound %d", len(s), maxLen)
			}
			m, err := decodeOffsetMap(s, base)
			if err != nil {
				t.Fatalf("decode %q: %v", s, err)
			}
			checkOffsetMap(t, m, base, done)
			if base < math.MaxInt64 && s != "" {
				if _, err := decodeOffsetMap(s, base+1); !errors.Is(err, errOffsetMapBase) {
					t.Fatalf("decoded with another base: %v", err)
				}
			}
		} else if s != "" {
			t.Fatalf("no fit but %q", s)
		} else if long, ok := encodeOffsetMap(base, done, math.MaxInt); !ok || len(long) <= maxLen {
			t.Fatalf("refused %d done offsets that encode in %d bytes", len(done), len(long))
		}

		// Arbitrary metadata, as is and behind a valid header, never
		// panics; what decodes is well formed and canonical.
		b := strconv.FormatInt(base, 10)
		for _, meta := range []string{meta, "s1:r:" + b + ":" + meta, "s1:b:" + b + ":" + meta} {
			m, err := decodeOffsetMap(meta, base)
			if err != nil {
				if len(m.runs) != 0 {
					t.Fatalf("%q: error %v with runs %v", meta, err, m.runs)
				}
				continue
			}
			for k := 0; k < len(m.runs); k += 2 {
				if m.runs[k] > m.runs[k+1] || m.runs[k] <= base || k > 0 && m.runs[k] <= m.runs[k-1]+1 {
					t.Fatalf("%q: malformed runs %v", meta, m.runs)
				}
			}
			// The same encoding is the same string; the other one is
			// shorter, or as long when run lengths win a tie.
			again, ok := m.encode(math.MaxInt)
			switch {
			case meta == "":
				if again != "" {
					t.Fatalf("empty metadata re-encodes to %q", again)
				}
			case !ok || len(again) > len(meta):
				t.Fatalf("%q re-encodes to %q", meta, again)
			case again[3] == meta[3] && again != meta:
				t.Fatalf("%q re-encodes with the same tag to %q", meta, again)
			case again[3] != meta[3] && again[3] == offsetMapBitset && len(again) == len(meta):
				t.Fatalf("%q re-encodes to a bitset as long: %q", meta, again)
			}
			m2, err := decodeOffsetMap(again, base)
			if err != nil || !slices.Equal(m2.runs, m.runs) {
				t.Fatalf("%q re-encoded %q decodes to %v, %v; want %v", meta, again, m2.runs, err, m.runs)
			}
		}
	})
}

// offsetMapShapes are 1024-record windows above a committed offset.
func offsetMapShapes() []struct {
	name string
	base int64
	done []int64
} {
	const base = 1_000_000
	return []struct {
		name string
		base int64
		done []int64
	}{
		{"every other", base, offsetRange(base+1, base+1024, 2)},
		{"10 done", base, offsetRange(base+100, base+1024, 100)},
		{"top 1000", base, offsetRange(base+24, base+1024, 1)},
	}
}

func BenchmarkOffsetMapEncode(b *testing.B) {
	for _, sh := range offsetMapShapes() {
		b.Run(sh.name, func(b *testing.B) {
			var s string
			b.ReportAllocs()
			for b.Loop() {
				s, _ = encodeOffsetMap(sh.base, sh.done, 4000)
			}
			b.ReportMetric(float64(len(s)), "meta-bytes")
		})
	}
}

func BenchmarkOffsetMapDecode(b *testing.B) {
	for _, sh := range offsetMapShapes() {
		b.Run(sh.name, func(b *testing.B) {
			s, _ := encodeOffsetMap(sh.base, sh.done, 4000)
			b.ReportAllocs()
			for b.Loop() {
				decodeOffsetMap(s, sh.base)
			}
		})
	}
}

func TestLooksLikeOffsetMap(t *testing.T) {
	for meta, want := range map[string]bool{
		"s1:r:5:AQ":   true,
		"s2:x:0:":     true,
		"s12:":        true,
		"sluice-ab12": false, // a franz-go member id
		"s:":          false,
		"s1":          false,
		"":            false,
		"1:r:5:AQ":    false,
	} {
		if got := looksLikeOffsetMap(meta); got != want {
			t.Errorf("looksLikeOffsetMap(%q) = %v, want %v", meta, got, want)
		}
	}
}
