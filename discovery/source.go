package discovery

import (
	"context"
	"log/slog"
	"slices"

	"github.com/augur-llm/augur/pool"
)

// Source reports the full endpoint set whenever it changes.
//
// Run blocks until ctx ends (then it returns nil) or the source fails for good. update is
// called from Run's goroutine, never concurrently, with a fresh slice the callee may keep. The
// first call comes once the source has synced, even if the set is empty; later calls come only
// when the set differs from the one last reported.
type Source interface {
	Run(ctx context.Context, update func([]pool.Endpoint)) error
}

var (
	_ Source = (*FileSource)(nil)
	_ Source = (*KubernetesSource)(nil)
)

func orDefault(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

func sameSet(a, b []pool.Endpoint) bool { return slices.EqualFunc(a, b, pool.Endpoint.Equal) }
