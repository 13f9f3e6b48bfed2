package secretfile_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sluice-dev/sluice/internal/secretfile"
)

// clock is a time source the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replace writes content to a temporary file beside path and renames it
// over path, as a careful writer does.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const interval = 5 * time.Second

func open(t *testing.T, path string, c *clock, opts ...secretfile.Option) *secretfile.File {
	t.Helper()
	f, err := secretfile.Open(path, append([]secretfile.Option{secretfile.WithInterval(interval), secretfile.WithClock(c.now)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return f
}

func TestReadTrimsTrailingWhitespace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	write(t, path, "  sk-123 \r\n\n")
	got, err := secretfile.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != "  sk-123" {
		t.Errorf("Read = %q, want %q (trailing whitespace only)", got, "  sk-123")
	}
}

func TestOpenFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "empty"), "")
	write(t, filepath.Join(dir, "blank"), " \n\t\n")
	write(t, filepath.Join(dir, "huge"), strings.Repeat("k", secretfile.MaxSize+1))
	for _, tc := range []struct {
		name string
		want error
	}{
		{"missing", fs.ErrNotExist},
		{"empty", secretfile.ErrEmpty},
		{"blank", secretfile.ErrEmpty},
		{"huge", nil},
		{".", nil}, // a directory
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := secretfile.Open(filepath.Join(dir, tc.name))
			if err == nil {
				t.Fatalf("Open(%s) = %v, want an error", tc.name, f)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Open(%s) = %v, want %v", tc.name, err, tc.want)
			}
		})
	}
}

func TestRotateByRename(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	write(t, path, "key-1\n")
	c := newClock()
	f := open(t, path, c)
	if got := f.Get(); got != "key-1" {
		t.Fatalf("Get = %q, want key-1", got)
	}
	replace(t, path, "key-2\n")
	c.advance(interval - time.Nanosecond)
	if got := f.Get(); got != "key-1" {
		t.Errorf("Get before the interval = %q, want key-1 (no look yet)", got)
	}
	c.advance(time.Nanosecond)
	if got := f.Get(); got != "key-2" {
		t.Errorf("Get after rotation = %q, want key-2", got)
	}
}

func TestRotateInPlace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	write(t, path, "key-1")
	c := newClock()
	f := open(t, path, c)
	write(t, path, "key-22") // same inode, another size
	c.advance(interval)
	if got := f.Get(); got != "key-22" {
		t.Errorf("Get after an in-place rewrite = %q, want key-22", got)
	}
}

// TestRotateKubernetesSecret mimics the kubelet: the key is
// dir/key -> ..data/key, ..data -> ..<timestamp>, and a rotation writes a
// new timestamped directory and renames a new ..data symlink over the old.
func TestRotateKubernetesSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := func(name, key string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "key"), key)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_00_00_00.000000001", "key-1\n")
	path := filepath.Join(dir, "key")
	if err := os.Symlink(filepath.Join("..data", "key"), path); err != nil {
		t.Fatal(err)
	}
	c := newClock()
	var logs syncBuffer
	f := open(t, path, c, secretfile.WithLogger(zerolog.New(&logs)))
	if got := f.Get(); got != "key-1" {
		t.Fatalf("Get = %q, want key-1", got)
	}

	version("..2026_02_01_00_00_00.000000002", "key-2\n")
	if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.000000001")); err != nil {
		t.Fatal(err)
	}
	c.advance(interval)
	if got := f.Get(); got != "key-2" {
		t.Errorf("Get after the ..data swap = %q, want key-2", got)
	}
	if out := logs.String(); !strings.Contains(out, "using the new value") || strings.Contains(out, "key-") {
		t.Errorf("log = %q, want the rotation logged without the key", out)
	}
}

// TestKeepsLastGoodValue: a file that disappears or empties after startup
// leaves the last good key in use, logged once per outage.
func TestKeepsLastGoodValue(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	write(t, path, "key-1")
	c := newClock()
	var logs syncBuffer
	f := open(t, path, c, secretfile.WithLogger(zerolog.New(&logs)))

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c.advance(interval)
		if got := f.Get(); got != "key-1" {
			t.Fatalf("Get with the file gone = %q, want the last good key-1", got)
		}
	}
	write(t, path, "\n") // empty: also unusable
	c.advance(interval)
	if got := f.Get(); got != "key-1" {
		t.Fatalf("Get with the file empty = %q, want the last good key-1", got)
	}
	if n := strings.Count(logs.String(), "unreadable"); n != 1 {
		t.Errorf("logged the failure %d times, want once:\n%s", n, logs.String())
	}

	replace(t, path, "key-2")
	c.advance(interval)
	if got := f.Get(); got != "key-2" {
		t.Errorf("Get after the file came back = %q, want key-2", got)
	}
	if !strings.Contains(logs.String(), "readable again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

// TestRealClock rotates the file under the real clock with a short
// interval and polls, with a deadline, for the new key.
func TestRealClock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	write(t, path, "key-1")
	f, err := secretfile.Open(path, secretfile.WithInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	replace(t, path, "key-2")
	deadline := time.Now().Add(5 * time.Second)
	for f.Get() != "key-2" {
		if time.Now().After(deadline) {
			t.Fatalf("Get = %q 5s after rotation, want key-2", f.Get())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestConcurrentGet rotates the file while many goroutines read it (run
// with -race): every value seen is a whole key, and the last one wins.
func TestConcurrentGet(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key")
	write(t, path, "key-0")
	f, err := secretfile.Open(path, secretfile.WithInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if v := f.Get(); !strings.HasPrefix(v, "key-") {
					t.Errorf("Get = %q, want a whole key", v)
					return
				}
			}
		})
	}
	for i := 1; i <= 50; i++ {
		replace(t, path, "key-"+strings.Repeat("x", i))
	}
	close(stop)
	wg.Wait()
	if got, want := f.Get(), "key-"+strings.Repeat("x", 50); got != want {
		t.Errorf("Get after the last rotation = %q, want %q", got, want)
	}
	if s := f.String(); strings.Contains(s, "key-") {
		t.Errorf("String() = %q leaks the secret", s)
	}
}
