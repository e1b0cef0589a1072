package discovery

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions configure a FileWatcher.
type WatchOptions struct {
	// Debounce is the quiet period after the last change in the file's directory before the
	// file is re-read; 0 means DefaultDebounce. An in-place write truncates the file before
	// writing it, so reading at the first event could see an empty file.
	Debounce time.Duration

	// afterRead, when set, is told of every read Run makes, after changed or failed returned;
	// tests wait on it instead of sleeping.
	afterRead func(raw []byte, err error)
}

// FileWatcher follows the content of one file: the endpoint file, the picker's configuration.
//
// The file's directory is watched rather than the file: editors that save by writing a
// temporary file and renaming it over the original replace the inode a file watch would follow,
// and a ConfigMap volume changes no file at all but swaps its "..data" symlink to a new
// directory. Every event in the directory therefore triggers a (debounced) re-read, and reads
// whose bytes did not change are dropped.
type FileWatcher struct {
	path, dir string
	opts      WatchOptions
	w         *fsnotify.Watcher

	lastRaw []byte // content of the last read that succeeded
	haveRaw bool
	lastErr string // last read error, so a file that stays unreadable is reported once
}

// WatchFile starts watching the file at path; its directory must exist. Read the file with
// Read, then follow it with Run; Close the watcher when done.
func WatchFile(path string, opts WatchOptions) (*FileWatcher, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watch %q: %w", path, err)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: start watcher: %w", abs, err)
	}
	dir := filepath.Dir(abs)
	// The watch is in place before the first Read, so a change made right after it is seen.
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s: watch directory: %w", abs, err)
	}
	return &FileWatcher{path: abs, dir: dir, opts: opts, w: w}, nil
}

// Path is the watched file's absolute path.
func (fw *FileWatcher) Path() string { return fw.path }

// Close stops watching.
func (fw *FileWatcher) Close() error { return fw.w.Close() }

// Read reads the file now. Run reports later content only when it differs from what was last
// read, and a read error only when it differs from the last one.
func (fw *FileWatcher) Read() ([]byte, error) {
	raw, err := os.ReadFile(fw.path)
	if err != nil {
		fw.lastErr = err.Error()
		// Content that comes back after an error is news, even if it is what it was before.
		fw.lastRaw, fw.haveRaw = nil, false
		return nil, err
	}
	fw.lastErr = ""
	fw.lastRaw, fw.haveRaw = raw, true
	return raw, nil
}

// maxDebounceWaits bounds how many debounce periods a steady stream of directory events can
// hold back a re-read, so that a busy directory cannot starve reloads.
const maxDebounceWaits = 10

// Run re-reads the file after changes until ctx ends, calling changed with content that differs
// from the last read and failed with read errors (once per distinct error) and watch errors.
// Both are called from Run's goroutine. It returns nil when ctx ends, and an error when the
// watch cannot go on (the directory was removed).
func (fw *FileWatcher) Run(ctx context.Context, changed func(raw []byte), failed func(error)) error {
	var (
		timer     *time.Timer
		fire      <-chan time.Time
		pendingAt time.Time // when the first event of the pending batch came
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// Debouncing is against real time: it waits out a writer on the real file system.
	schedule := func() {
		now := time.Now()
		switch {
		case fire == nil:
			pendingAt = now
		case now.Sub(pendingAt) >= maxDebounceWaits*fw.opts.Debounce:
			return // let the pending timer fire as planned
		}
		if timer == nil {
			timer = time.NewTimer(fw.opts.Debounce)
		} else {
			timer.Reset(fw.opts.Debounce)
		}
		fire = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.w.Events:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", fw.path)
			}
			if ev.Name == fw.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				// The watch went with the directory; nothing more will be seen.
				return fmt.Errorf("watch %s: directory %s was removed", fw.path, fw.dir)
			}
			// Other files' attribute changes are noise (touch, backup tools); the file's own
			// may make it readable.
			if ev.Op == fsnotify.Chmod && ev.Name != fw.path {
				continue
			}
			schedule()
		case err, ok := <-fw.w.Errors:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", fw.path)
			}
			failed(fmt.Errorf("watch %s: %w", fw.path, err))
			// Events may have been dropped (queue overflow): look at the file again.
			schedule()
		case <-fire:
			fire = nil
			fw.reread(changed, failed)
		}
	}
}

func (fw *FileWatcher) reread(changed func([]byte), failed func(error)) {
	prevRaw, hadRaw, prevErr := fw.lastRaw, fw.haveRaw, fw.lastErr
	raw, err := fw.Read()
	switch {
	case err != nil:
		if err.Error() != prevErr {
			failed(fmt.Errorf("read %s: %w", fw.path, err))
		}
	case !hadRaw || !bytes.Equal(raw, prevRaw):
		changed(raw)
	}
	if fw.opts.afterRead != nil {
		fw.opts.afterRead(raw, err)
	}
}
