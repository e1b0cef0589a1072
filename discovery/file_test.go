package discovery

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/augur-llm/augur/pool"
)

// recorder collects what a source reports, for tests to wait on.
type recorder struct {
	mu      sync.Mutex
	updates [][]pool.Endpoint
	errs    []error
	reads   []readResult
	notify  chan struct{} // signalled after every record; made on first use
}

// readResult is one read of a watched file.
type readResult struct {
	raw []byte
	err error
}

// signal wakes a waiter; r.mu must be held.
func (r *recorder) signal() {
	if r.notify == nil {
		r.notify = make(chan struct{}, 1)
	}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) update(eps []pool.Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, eps)
	r.signal()
}

func (r *recorder) onError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
	r.signal()
}

// read is the watcher's afterRead hook: it runs once the read's update or error is recorded.
func (r *recorder) read(raw []byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads = append(r.reads, readResult{raw, err})
	r.signal()
}

// wait waits until cond holds, waking on every record rather than polling.
func (r *recorder) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	r.mu.Lock()
	r.signal() // make the channel, and look at cond at least once
	ch := r.notify
	r.mu.Unlock()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
		if cond() {
			return
		}
	}
}

// waitRead waits until the watcher has read the file and found want (or an error matching
// isErr, when want is nil): every update or error that read causes is then recorded, so an
// absence of them means something.
func (r *recorder) waitRead(t *testing.T, want []byte, isErr func(error) bool) {
	t.Helper()
	r.wait(t, "the watcher to read the change", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, rd := range r.reads {
			if want != nil && rd.err == nil && string(rd.raw) == string(want) {
				return true
			}
			if want == nil && rd.err != nil && isErr(rd.err) {
				return true
			}
		}
		return false
	})
}

func (r *recorder) counts() (updates, errs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates), len(r.errs)
}

func (r *recorder) last() []pool.Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.updates) == 0 {
		return nil
	}
	return r.updates[len(r.updates)-1]
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitUpdates waits for the n-th update and checks it.
func (r *recorder) waitUpdates(t *testing.T, n int, want []pool.Endpoint) {
	t.Helper()
	r.wait(t, "update", func() bool { u, _ := r.counts(); return u >= n })
	r.mu.Lock()
	got := r.updates[n-1]
	total := len(r.updates)
	r.mu.Unlock()
	if !slices.EqualFunc(got, want, pool.Endpoint.Equal) {
		t.Fatalf("update %d = %+v, want %+v", n, got, want)
	}
	if total != n {
		t.Fatalf("%d updates, want %d", total, n)
	}
}

const testDebounce = 20 * time.Millisecond

const fileA = `endpoints:
  - name: a
    address: 10.0.0.1:8000
    class: small
`

const fileAB = `endpoints:
  - name: a
    address: 10.0.0.1:8000
    class: small
  - name: b
    address: 10.0.0.2:8000
`

var (
	epA = pool.Endpoint{Name: "a", Address: "10.0.0.1:8000", Class: "small"}
	epB = pool.Endpoint{Name: "b", Address: "10.0.0.2:8000"}
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startFile runs a FileSource on path until the test ends.
func startFile(t *testing.T, path string, initial []pool.Endpoint) *recorder {
	t.Helper()
	rec := &recorder{}
	src := NewFileSource(path, FileOptions{Log: slog.New(slog.DiscardHandler), OnError: rec.onError, Debounce: testDebounce,
		afterRead: rec.read})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec.update) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	rec.waitUpdates(t, 1, initial)
	return rec
}

func TestFileSourceInPlaceWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.yaml")
	writeFile(t, path, "endpoints: []\n")
	rec := startFile(t, path, nil)

	writeFile(t, path, fileA)
	rec.waitUpdates(t, 2, []pool.Endpoint{epA})

	// Same set, different bytes: no update.
	noop := "# a comment\n" + fileA
	writeFile(t, path, noop)
	rec.waitRead(t, []byte(noop), nil)
	if u, _ := rec.counts(); u != 2 {
		t.Fatalf("%d updates after a no-op edit, want 2", u)
	}
}

func TestFileSourceInitialLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.yaml")
	writeFile(t, path, fileAB)
	rec := &recorder{}
	src := NewFileSource(path, FileOptions{Log: slog.New(slog.DiscardHandler), Debounce: testDebounce})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec.update) }()
	rec.waitUpdates(t, 1, []pool.Endpoint{epA, epB})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

func TestFileSourceRenameOver(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "endpoints.yaml")
	writeFile(t, path, "endpoints: []\n")
	rec := startFile(t, path, nil)

	// How editors and config tools save atomically: a temporary file renamed over the original.
	tmp := filepath.Join(dir, ".endpoints.yaml.tmp")
	writeFile(t, tmp, fileAB)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 2, []pool.Endpoint{epA, epB})

	// The watch survives the replaced inode.
	writeFile(t, tmp, fileA)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 3, []pool.Endpoint{epA})
}

func TestFileSourceInvalidChangeKeepsSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.yaml")
	writeFile(t, path, fileA)
	rec := startFile(t, path, []pool.Endpoint{epA})

	for i, bad := range []string{
		"endpoints:\n  - name: a\n    address: not-an-address\n",
		"endpoints:\n  - name: a\n    adress: 10.0.0.1:8000\n", // unknown field
		"endpoints: [",
		"", // mid-save truncation, not "no endpoints"
	} {
		writeFile(t, path, bad)
		rec.wait(t, "OnError", func() bool { _, e := rec.counts(); return e == i+1 })
	}
	// Deleting the file is a failed reload too, not an empty set.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	rec.waitRead(t, nil, func(err error) bool { return errors.Is(err, os.ErrNotExist) })
	if u, e := rec.counts(); u != 1 || e != 5 {
		t.Fatalf("%d updates and %d errors, want 1 and 5", u, e)
	}

	// A valid file again is picked up, and an explicit empty list does empty the set.
	writeFile(t, path, fileAB)
	rec.waitUpdates(t, 2, []pool.Endpoint{epA, epB})
	if _, e := rec.counts(); e != 5 {
		t.Fatalf("%d errors, want 5: a file that stays missing is reported once", e)
	}
	writeFile(t, path, "endpoints: []\n")
	rec.waitUpdates(t, 3, []pool.Endpoint{})
}

// TestFileSourceConfigMapSwap mimics how the kubelet updates a ConfigMap volume: the file is a
// symlink into "..data", itself a symlink to a timestamped directory, and an update writes a new
// directory and renames a new "..data" link over the old one. The file's path never changes.
func TestFileSourceConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	publish := func(version, content string) {
		t.Helper()
		ts := filepath.Join(dir, "..ts_"+version)
		if err := os.Mkdir(ts, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(ts, "endpoints.yaml"), content)
		tmpLink := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(ts), tmpLink); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmpLink, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish("1", fileA)
	path := filepath.Join(dir, "endpoints.yaml")
	if err := os.Symlink(filepath.Join("..data", "endpoints.yaml"), path); err != nil {
		t.Fatal(err)
	}
	rec := startFile(t, path, []pool.Endpoint{epA})

	publish("2", fileAB)
	if err := os.RemoveAll(filepath.Join(dir, "..ts_1")); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 2, []pool.Endpoint{epA, epB})
}

func TestFileSourceStartErrors(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.yaml")
	writeFile(t, invalid, "endpoints:\n  - name: ''\n    address: 10.0.0.1:1\n")
	for name, path := range map[string]string{
		"missing file": filepath.Join(dir, "missing.yaml"),
		"missing dir":  filepath.Join(dir, "nope", "endpoints.yaml"),
		"invalid":      invalid,
	} {
		t.Run(name, func(t *testing.T) {
			called := false
			err := NewFileSource(path, FileOptions{Log: slog.New(slog.DiscardHandler)}).
				Run(context.Background(), func([]pool.Endpoint) { called = true })
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if called {
				t.Fatal("update called")
			}
		})
	}
	if err := NewFileSource(invalid, FileOptions{}).Run(context.Background(), nil); err == nil {
		t.Fatal("nil update accepted")
	}
	var pathErr *os.PathError
	err := NewFileSource(filepath.Join(dir, "missing.yaml"), FileOptions{}).Run(context.Background(), func([]pool.Endpoint) {})
	if !errors.As(err, &pathErr) {
		t.Fatalf("missing file error %v does not wrap the *os.PathError", err)
	}
}
