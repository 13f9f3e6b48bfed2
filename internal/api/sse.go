package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// MaxEventBytes bounds one server-sent event: one line, and the data lines
// of one event together (unless the Assembler is a MaxEventSizer). A
// server sending more fails the call with ErrMalformed instead of growing
// memory.
const MaxEventBytes = 4 << 20

// errEventTooLarge is returned by sseReader.next for an event or a line
// longer than its limit.
var errEventTooLarge = errors.New("server-sent event too large")

// sseReader reads the data of server-sent events as the WHATWG HTML
// standard defines them (§9.2 "Server-sent events"): lines end in CRLF, LF
// or CR; a line starting with ':' is a comment (keep-alive); "data:" lines
// accumulate, joined by "\n"; "event:" names the event's type; a blank
// line dispatches the event; the other fields (id, retry) are ignored, as
// are events without data.
type sseReader struct {
	sc    *bufio.Scanner
	data  []byte
	typ   []byte
	max   int
	first bool // no line read yet: a leading byte order mark is skipped
}

// newSSEReader reads events of at most maxEvent bytes from r.
func newSSEReader(r io.Reader, maxEvent int) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxEvent)
	sc.Split(scanSSELines)
	return &sseReader{sc: sc, max: maxEvent, first: true}
}

// next returns the next event, valid until the next call, or
// io.EOF at the end of the stream. An event cut off by the end of the
// stream (no blank line after it) is discarded, as the standard says,
// unless it is "[DONE]" or a whole JSON value: servers that omit the last
// blank line are common, a value cut in the middle is not an event.
func (s *sseReader) next() (Event, error) {
	s.data, s.typ = s.data[:0], s.typ[:0]
	has := false
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if s.first {
			s.first = false
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if len(line) == 0 {
			if has {
				return Event{Type: string(s.typ), Data: s.data}, nil
			}
			s.typ = s.typ[:0] // an event without data is ignored
			continue
		}
		if line[0] == ':' {
			continue // comment, e.g. ": keep-alive"
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		if string(field) == "event" {
			s.typ = append(s.typ[:0], value...)
			continue
		}
		if string(field) != "data" {
			continue
		}
		if len(s.data)+1+len(value) > s.max {
			return Event{}, errEventTooLarge
		}
		if has {
			s.data = append(s.data, '\n')
		}
		s.data = append(s.data, value...)
		has = true
	}
	if err := s.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Event{}, errEventTooLarge
		}
		return Event{}, err
	}
	if has && (string(s.data) == DoneData || json.Valid(s.data)) {
		return Event{Type: string(s.typ), Data: s.data}, nil
	}
	return Event{}, io.EOF
}

// DoneData is the data of the event that ends an OpenAI chat-completions
// stream.
const DoneData = "[DONE]"

// scanSSELines is a bufio.SplitFunc for SSE lines, which end in CRLF, LF
// or a lone CR.
func scanSSELines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	i := bytes.IndexAny(data, "\r\n")
	switch {
	case i < 0:
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	case data[i] == '\n':
		return i + 1, data[:i], nil
	case i+1 < len(data):
		if data[i+1] == '\n' {
			return i + 2, data[:i], nil
		}
		return i + 1, data[:i], nil
	case atEOF:
		return i + 1, data[:i], nil
	default:
		return 0, nil, nil // a CR last: wait to see whether LF follows
	}
}
