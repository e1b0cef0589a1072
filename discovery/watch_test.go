package discovery

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A file that is missing at first is reported once as missing and followed once it appears.
func TestWatchFileMissingThenCreated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	rec := &recorder{}
	w, err := WatchFile(path, WatchOptions{Debounce: testDebounce, afterRead: rec.read})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Read(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v", err)
	}
	changes := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(raw []byte) { changes <- string(raw) }, rec.onError)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()
	// Another file's change makes the watcher look again: still missing, already reported.
	writeFile(t, filepath.Join(filepath.Dir(path), "other"), "x")
	rec.waitRead(t, nil, func(err error) bool { return errors.Is(err, os.ErrNotExist) })
	if _, e := rec.counts(); e != 0 {
		t.Fatalf("%d errors for a file missing since the first read, want 0", e)
	}
	writeFile(t, path, "v1")
	select {
	case got := <-changes:
		if got != "v1" {
			t.Fatalf("changed(%q), want v1", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the created file was not reported")
	}
}

func TestWatchFileMissingDirectory(t *testing.T) {
	if _, err := WatchFile(filepath.Join(t.TempDir(), "nope", "c.yaml"), WatchOptions{}); err == nil {
		t.Fatal("watching in a missing directory succeeded")
	}
}
