// Package secretfile reads a secret, such as an API key, from a file and
// follows the file when it is rotated, so a new key needs no restart.
//
// It suits mounted Kubernetes Secrets, which the kubelet updates by
// swapping the ..data symlink, and any writer that replaces the file by
// rename. A Get re-stats the file at most once per interval and re-reads it
// only when its identity, size or modification time changed; there is no
// goroutine and no watcher to stop.
//
//	key, err := secretfile.Open("/var/run/secrets/sluice/api-key", secretfile.WithLogger(log))
//	if err != nil {
//		return err // missing, unreadable or empty at startup
//	}
//	client, _ := api.New(api.Config{BaseURL: url, Key: key.Get})
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/rs/zerolog"
)

// DefaultInterval is how often Get looks at the file by default.
const DefaultInterval = 5 * time.Second

// MaxSize is the largest secret file Read accepts.
const MaxSize = 64 << 10

// ErrEmpty is returned for a file that holds only whitespace.
var ErrEmpty = errors.New("file is empty")

// Read returns the content of the file at path without trailing whitespace
// (the newline editors and `echo` add). A file that is empty after
// trimming is ErrEmpty.
func Read(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > MaxSize {
		return "", fmt.Errorf("%s: larger than %d KiB, not a secret", path, MaxSize>>10)
	}
	s := strings.TrimRightFunc(string(b), unicode.IsSpace)
	if s == "" {
		return "", fmt.Errorf("%s: %w", path, ErrEmpty)
	}
	return s, nil
}

// File is a secret read from a file and kept current. Its Get is safe for
// concurrent use and never blocks on the file system for long: while one
// caller re-reads the file, the others get the current value.
type File struct {
	path     string
	interval time.Duration
	now      func() time.Time
	log      zerolog.Logger

	val  atomic.Pointer[string]
	next atomic.Int64 // when (unix ns) Get next looks at the file

	mu      sync.Mutex  // held by the one caller refreshing; guards below
	seen    os.FileInfo // the file the current value came from
	failing bool        // the last look failed (and was logged)
}

// Option configures a File.
type Option func(*File)

// WithInterval sets how often Get looks at the file (default
// DefaultInterval); 0 looks on every call.
func WithInterval(d time.Duration) Option { return func(f *File) { f.interval = max(d, 0) } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(f *File) { f.now = now } }

// WithLogger sets the logger of rotations and of read failures after
// startup (default: none). The secret itself is never logged.
func WithLogger(l zerolog.Logger) Option { return func(f *File) { f.log = l } }

// Open reads the secret at path. It fails if the file is missing,
// unreadable or empty: a key that never worked is a configuration error,
// not something to keep retrying.
func Open(path string, opts ...Option) (*File, error) {
	f := &File{path: path, interval: DefaultInterval, now: time.Now, log: zerolog.Nop()}
	for _, o := range opts {
		o(f)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	v, err := Read(path)
	if err != nil {
		return nil, err
	}
	f.val.Store(&v)
	f.seen = fi
	f.next.Store(f.now().Add(f.interval).UnixNano())
	return f, nil
}

// Get returns the secret, re-reading the file first when the interval has
// passed and the file changed. After a failed re-read it keeps returning
// the last good value.
func (f *File) Get() string {
	if f.now().UnixNano() >= f.next.Load() && f.mu.TryLock() {
		f.refresh()
		f.mu.Unlock()
	}
	return *f.val.Load()
}

// String names the file, never the secret.
func (f *File) String() string { return "secretfile(" + f.path + ")" }

// refresh looks at the file and, if it changed, reads it. f.mu is held.
func (f *File) refresh() {
	now := f.now()
	if now.UnixNano() < f.next.Load() {
		return // another caller just looked
	}
	f.next.Store(now.Add(f.interval).UnixNano())
	// Stat before reading: if the file changes while it is read, the
	// change shows on the next look.
	fi, err := os.Stat(f.path)
	if err != nil {
		f.fail(err)
		return
	}
	if !changed(f.seen, fi) {
		f.recovered()
		return
	}
	v, err := Read(f.path)
	if err != nil {
		f.fail(err)
		return
	}
	old := f.val.Swap(&v)
	f.seen = fi
	f.recovered()
	if *old != v {
		f.log.Info().Str("path", f.path).Msg("secret file changed; using the new value")
	}
}

func (f *File) fail(err error) {
	if !f.failing {
		f.failing = true
		f.log.Warn().Err(err).Str("path", f.path).Msg("secret file unreadable; keeping the last good value")
	}
}

func (f *File) recovered() {
	if f.failing {
		f.failing = false
		f.log.Info().Str("path", f.path).Msg("secret file readable again")
	}
}

// changed reports whether b is not the file a was: another inode (a
// rename or a Kubernetes ..data swap), or the same one rewritten.
func changed(a, b os.FileInfo) bool {
	return !os.SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime())
}
