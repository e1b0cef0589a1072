package gateway

import (
	"io"
	"sync"
)

// streamBuffer carries the request body the picker replays to the upstream
// request. Writes never block: the goroutine receiving from the picker must
// keep reading the gRPC stream even when the upstream has stopped reading its
// request body, or the picker's answer to the response headers would queue
// behind an unread body chunk. Memory stays bounded by the request body,
// which the picker has buffered in full anyway.
type streamBuffer struct {
	mu       sync.Mutex
	cond     *sync.Cond
	chunks   [][]byte
	err      error // set once the writer is done; io.EOF on success
	abortErr error // set once the reader side is abandoned
	touched  bool  // a Read happened, so the body can no longer be replayed
}

func newStreamBuffer() *streamBuffer {
	b := &streamBuffer{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// push appends a chunk; it owns p afterwards.
func (b *streamBuffer) push(p []byte) {
	if len(p) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil || b.abortErr != nil {
		return
	}
	b.chunks = append(b.chunks, p)
	b.cond.Broadcast()
}

// finish ends the body; a nil error means a clean end.
func (b *streamBuffer) finish(err error) {
	if err == nil {
		err = io.EOF
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
}

// abort makes pending and future reads fail and drops buffered data.
func (b *streamBuffer) abort(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.abortErr == nil {
		b.abortErr = err
	}
	b.chunks = nil
	b.cond.Broadcast()
}

func (b *streamBuffer) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.touched = true
	for len(b.chunks) == 0 && b.err == nil && b.abortErr == nil {
		b.cond.Wait()
	}
	if b.abortErr != nil {
		return 0, b.abortErr
	}
	if len(b.chunks) == 0 {
		return 0, b.err
	}
	n := copy(p, b.chunks[0])
	if n == len(b.chunks[0]) {
		b.chunks[0] = nil
		b.chunks = b.chunks[1:]
	} else {
		b.chunks[0] = b.chunks[0][n:]
	}
	return n, nil
}

func (b *streamBuffer) wasRead() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.touched
}

// upstreamBody hands the buffer to net/http. Close is a no-op because the
// transport closes a request body even when it failed before sending a byte,
// and the same body must then go to the next fallback endpoint.
type upstreamBody struct{ *streamBuffer }

func (upstreamBody) Close() error { return nil }
