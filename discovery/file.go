package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/augur-llm/augur/pool"
)

// DefaultDebounce is how long a FileSource waits after the last change in the file's directory
// before it re-reads the file.
const DefaultDebounce = 100 * time.Millisecond

// maxDebounceWaits bounds how many debounce periods a steady stream of directory events can
// hold back a re-read, so that a busy directory cannot starve reloads.
const maxDebounceWaits = 10

// FileOptions configures a FileSource.
type FileOptions struct {
	// Log receives reload errors and changes. Nil means slog.Default().
	Log *slog.Logger
	// OnError, if set, is told of every reload that failed (unreadable or invalid file, watch
	// errors) and was therefore ignored; the picker counts these in a metric.
	OnError func(error)
	// Debounce is the quiet period after the last change before the file is re-read; 0 means
	// DefaultDebounce. An in-place write truncates the file before writing it, so reading at the
	// first event could see an empty, valid-looking file.
	Debounce time.Duration
}

// FileSource reports the endpoints of an endpoint file (pool.ParseFile's format) and follows
// edits to it.
type FileSource struct {
	path string
	opts FileOptions
}

// NewFileSource returns a source for the endpoint file at path.
func NewFileSource(path string, opts FileOptions) *FileSource {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	opts.Log = orDefault(opts.Log)
	return &FileSource{path: path, opts: opts}
}

// Run reports the file's endpoints, then re-reads the file after every change. A missing or
// invalid file at start is an error; later, an unreadable or invalid file is logged, passed to
// OnError and ignored, so the last valid set stays in force.
//
// The file's directory is watched rather than the file: editors that save by writing a
// temporary file and renaming it over the original replace the inode a file watch would follow,
// and a ConfigMap volume changes no file at all but swaps its "..data" symlink to a new
// directory. Every event in the directory therefore triggers a (debounced) re-read, and reads
// whose bytes did not change are dropped.
func (s *FileSource) Run(ctx context.Context, update func([]pool.Endpoint)) error {
	if update == nil {
		return errors.New("endpoint file: nil update func")
	}
	path, err := filepath.Abs(s.path)
	if err != nil {
		return fmt.Errorf("endpoint file %q: %w", s.path, err)
	}
	dir := filepath.Dir(path)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("endpoint file %s: start watcher: %w", path, err)
	}
	defer w.Close()
	// Watch before the first read, so a change made right after the read is not lost.
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("endpoint file %s: watch directory: %w", path, err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read endpoint file: %w", err)
	}
	current, err := pool.ParseFile(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	log := s.opts.Log.With("file", path)
	log.Info("endpoint file loaded", "endpoints", len(current))
	update(slices.Clone(current))

	r := reloader{path: path, log: log, onError: s.opts.OnError, update: update,
		lastRaw: raw, haveRaw: true, current: current}
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
	schedule := func() {
		now := time.Now()
		switch {
		case fire == nil:
			pendingAt = now
		case now.Sub(pendingAt) >= maxDebounceWaits*s.opts.Debounce:
			return // let the pending timer fire as planned
		}
		if timer == nil {
			timer = time.NewTimer(s.opts.Debounce)
		} else {
			timer.Reset(s.opts.Debounce)
		}
		fire = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("endpoint file %s: watcher closed", path)
			}
			if ev.Name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				// The watch went with the directory; nothing more will be seen.
				return fmt.Errorf("endpoint file %s: directory %s was removed", path, dir)
			}
			// Other files' attribute changes are noise (touch, backup tools); the file's own
			// may make it readable.
			if ev.Op == fsnotify.Chmod && ev.Name != path {
				continue
			}
			schedule()
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("endpoint file %s: watcher closed", path)
			}
			r.fail(fmt.Errorf("endpoint file %s: watch: %w", path, err))
			// Events may have been dropped (queue overflow): look at the file again.
			schedule()
		case <-fire:
			fire = nil
			r.reload()
		}
	}
}

// reloader holds a FileSource's state between reads; it lives on Run's stack so that Run
// could be called again.
type reloader struct {
	path    string
	log     *slog.Logger
	onError func(error)
	update  func([]pool.Endpoint)

	lastRaw []byte // content of the last read that succeeded, valid or not
	haveRaw bool
	current []pool.Endpoint
	lastErr string // last read error, so a file that stays missing is reported once
}

func (r *reloader) reload() {
	raw, err := os.ReadFile(r.path)
	if err != nil {
		msg := err.Error()
		if msg != r.lastErr {
			r.lastErr = msg
			r.lastRaw, r.haveRaw = nil, false
			r.fail(fmt.Errorf("read endpoint file: %w", err))
		}
		return
	}
	r.lastErr = ""
	if r.haveRaw && bytes.Equal(raw, r.lastRaw) {
		return
	}
	r.lastRaw, r.haveRaw = raw, true
	if len(bytes.TrimSpace(raw)) == 0 {
		// A save that truncates and then writes passes through an empty file, which would parse
		// as "no endpoints"; removing every replica takes an explicit "endpoints: []".
		r.fail(fmt.Errorf("endpoint file %s is empty", r.path))
		return
	}
	eps, err := pool.ParseFile(raw)
	if err != nil {
		r.fail(fmt.Errorf("%s: %w", r.path, err))
		return
	}
	if sameSet(eps, r.current) {
		return
	}
	r.log.Info("endpoint file changed", "endpoints", len(eps), "before", len(r.current))
	r.current = eps
	r.update(slices.Clone(eps))
}

func (r *reloader) fail(err error) {
	r.log.Error("endpoint file reload ignored; keeping the previous endpoints", "err", err)
	if r.onError != nil {
		r.onError(err)
	}
}
