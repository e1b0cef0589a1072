package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/augur-llm/augur/pool"
)

// DefaultDebounce is how long a FileWatcher waits after the last change in the file's
// directory before it re-reads the file.
const DefaultDebounce = 100 * time.Millisecond

// FileOptions configure a FileSource.
type FileOptions struct {
	// Log receives reload errors and changes. Nil means slog.Default().
	Log *slog.Logger
	// OnError, if set, is told of every reload that failed (unreadable or invalid file, watch
	// errors) and was therefore ignored; the picker counts these in a metric.
	OnError func(error)
	// Debounce is WatchOptions.Debounce.
	Debounce time.Duration

	afterRead func(raw []byte, err error) // see WatchOptions.afterRead
}

// FileSource reports the endpoints of an endpoint file (pool.ParseFile's format) and follows
// edits to it.
type FileSource struct {
	path string
	opts FileOptions
}

// NewFileSource returns a source for the endpoint file at path.
func NewFileSource(path string, opts FileOptions) *FileSource {
	opts.Log = orDefault(opts.Log)
	return &FileSource{path: path, opts: opts}
}

// Run reports the file's endpoints, then re-reads the file after every change (see
// FileWatcher). A missing or invalid file at start is an error; later, an unreadable or
// invalid file is logged, passed to OnError and ignored, so the last valid set stays in force.
func (s *FileSource) Run(ctx context.Context, update func([]pool.Endpoint)) error {
	if update == nil {
		return errors.New("endpoint file: nil update func")
	}
	w, err := WatchFile(s.path, WatchOptions{Debounce: s.opts.Debounce, afterRead: s.opts.afterRead})
	if err != nil {
		return fmt.Errorf("endpoint file: %w", err)
	}
	defer w.Close()
	path := w.Path()
	raw, err := w.Read()
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

	r := reloader{path: path, log: log, onError: s.opts.OnError, update: update, current: current}
	if err := w.Run(ctx, r.reload, r.fail); err != nil {
		return fmt.Errorf("endpoint file: %w", err)
	}
	return nil
}

// reloader holds a FileSource's state between reads; it lives on Run's stack so that Run
// could be called again.
type reloader struct {
	path    string
	log     *slog.Logger
	onError func(error)
	update  func([]pool.Endpoint)
	current []pool.Endpoint
}

// reload takes the file's new content.
func (r *reloader) reload(raw []byte) {
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
