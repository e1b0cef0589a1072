package pgserver

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartForTest starts a server in a fresh t.TempDir and stops it when the
// test ends. It fails the test, rather than skipping it, when PostgreSQL is
// not installed or does not start. Server events go to the test log.
//
// When running as root, the directories that t.TempDir creates (mode 0700)
// are made searchable by others so that the postgres OS user can reach its
// data directory.
func StartForTest(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if err := openTempPath(dir); err != nil {
			t.Fatalf("pgserver: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	s, err := Start(ctx, Options{Dir: dir, Log: log})
	if err != nil {
		t.Fatalf("pgserver.StartForTest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("pgserver: stopping test server: %v", err)
		}
	})
	return s
}

// openTempPath adds o+x to dir and every directory above it up to, not
// including, os.TempDir().
func openTempPath(dir string) error {
	tmp, err := filepath.Abs(os.TempDir())
	if err != nil {
		return err
	}
	for p := dir; strings.HasPrefix(p, tmp+string(filepath.Separator)); p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm&0o001 == 0 {
			if err := os.Chmod(p, perm|0o001); err != nil {
				return err
			}
		}
	}
	return nil
}
