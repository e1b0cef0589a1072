package pgserver

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

// RunShared runs a test package with one server shared by its tests: call it from TestMain
// as os.Exit(pgserver.RunShared(m, &srv)). The server lives in a fresh temporary directory,
// removed afterwards; tests take an empty database each with NewDatabase. Tests that stop or
// restart a server use StartForTest instead.
func RunShared(m *testing.M, srv **Server) int {
	dir, err := os.MkdirTemp("", "augur-pg-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgserver:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if os.Geteuid() == 0 {
		if err := openTempPath(dir); err != nil {
			fmt.Fprintln(os.Stderr, "pgserver:", err)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := Start(ctx, Options{Dir: dir, Log: slog.New(slog.DiscardHandler)})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgserver: starting the package's server:", err)
		return 1
	}
	defer s.Stop()
	*srv = s
	return m.Run()
}

// NewDatabase creates an empty database on s for one test and returns its URL, so tests
// sharing a server do not see each other's tables. It is dropped when the test ends.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.databases++
	name := fmt.Sprintf("test_%d", s.databases)
	admin := s.urlLocked()
	s.mu.Unlock()
	ctx := context.Background()
	url, err := s.EmptyDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return // the server is gone; its directory goes with it
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)")
	})
	return url
}
