package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	superuser = "augur" // created by initdb -U; trusted on loopback
	database  = "augur" // created by Start when missing

	startTimeout    = 60 * time.Second // when the caller's context has no deadline
	fastStopTimeout = 30 * time.Second // then immediate shutdown (SIGQUIT)
	quitTimeout     = 5 * time.Second  // then SIGKILL to the whole process group
)

// Options configures Start.
type Options struct {
	// Dir holds the cluster (Dir/data) and the server log (Dir/postgres.log).
	// It is created if missing and never removed. Required.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Log receives start and stop events; nil discards them.
	Log *slog.Logger
}

// Server is a running (or stopped) local PostgreSQL server. Its methods are
// safe for concurrent use.
type Server struct {
	dir     string // absolute Options.Dir
	dataDir string
	logPath string
	bins    binaries
	owner   *runAs // nil: run as the current user
	log     *slog.Logger

	mu        sync.Mutex
	port      int
	proc      *process // nil while stopped
	databases int      // made by NewDatabase, for unique names
}

// process is one run of the postmaster.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	err  error         // cmd.Wait's result, readable after done is closed
}

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port in use")

// Start creates a cluster in opts.Dir unless one is there already, starts
// the server, waits until it accepts connections and creates the "augur"
// database if needed. A server still running on the same data directory
// (left by a crashed process) is stopped first. ctx bounds the start only;
// the server runs until Stop or Close, or until this process dies.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgserver: Options.Dir is required")
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("pgserver: invalid port %d", opts.Port)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bins, err := findBinariesOnce()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	owner, err := serverUser()
	if err != nil {
		return nil, err
	}
	if err := owner.checkReachable(dir); err != nil {
		return nil, err
	}
	s := &Server{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "postgres.log"),
		bins:    bins,
		owner:   owner,
		log:     log,
	}
	began := time.Now()
	s.stopStale()
	if err := s.ensureCluster(ctx); err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var conn *pgx.Conn
	for attempt := 1; ; attempt++ {
		s.port = opts.Port
		if s.port == 0 {
			if s.port, err = freePort(); err != nil {
				return nil, err
			}
		}
		conn, err = s.startLocked(ctx)
		if err == nil {
			break
		}
		// A port picked by freePort can be taken before postgres binds it.
		if opts.Port != 0 || attempt == 3 || !errors.Is(err, errPortInUse) {
			return nil, err
		}
		log.Debug("pgserver: port taken, trying another", "port", s.port)
	}
	defer conn.Close(context.Background())
	if err := ensureDatabase(ctx, conn); err != nil {
		return nil, errors.Join(err, s.stopLocked())
	}
	log.Info("pgserver: started", "url", s.urlLocked(), "dir", dir, "elapsed", time.Since(began).Round(time.Millisecond))
	return s, nil
}

// URL is a connection string for the "augur" database as the superuser
// "augur", e.g. postgres://augur@127.0.0.1:54321/augur?sslmode=disable.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.urlLocked()
}

func (s *Server) urlLocked() string { return s.urlFor(database) }

// EmptyDatabase drops database name on s if it exists (closing its connections) and creates
// it empty; it returns its URL. A demo or a wind-tunnel run starts from nothing with it, on a
// server that keeps its cluster between runs.
func (s *Server) EmptyDatabase(ctx context.Context, name string) (string, error) {
	s.mu.Lock()
	admin, url := s.urlLocked(), s.urlFor(name)
	s.mu.Unlock()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("pgserver: %w", err)
	}
	defer conn.Close(ctx)
	id := pgx.Identifier{name}.Sanitize()
	for _, q := range []string{"drop database if exists " + id + " with (force)", "create database " + id} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("pgserver: database %s: %w", name, err)
		}
	}
	return url, nil
}

func (s *Server) urlFor(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, s.port, db)
}

// Stop shuts the server down the way `pg_ctl stop -m fast` does: SIGINT to
// the postmaster, which ends open sessions, writes a checkpoint and exits.
// If it has not exited after 30s it gets SIGQUIT (immediate shutdown), then
// its process group SIGKILL. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

// Restart stops the server if it is running and starts it again on the same
// port with the same data, for tests of what clients do when the database
// goes away and comes back. It fails if the port was taken meanwhile.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		return err
	}
	began := time.Now()
	conn, err := s.startLocked(ctx)
	if err != nil {
		return err
	}
	s.log.Info("pgserver: restarted", "port", s.port, "elapsed", time.Since(began).Round(time.Millisecond))
	return conn.Close(ctx)
}

// Close stops the server. It removes nothing: the caller owns Options.Dir,
// and a later Start on it finds the same data.
func (s *Server) Close() error { return s.Stop() }

func (s *Server) stopLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	began := time.Now()
	err := s.stopProcess(p)
	s.log.Info("pgserver: stopped", "port", s.port, "elapsed", time.Since(began).Round(time.Millisecond))
	return err
}

// stopProcess ends p, escalating from fast to immediate shutdown to SIGKILL.
func (s *Server) stopProcess(p *process) error {
	pid := p.cmd.Process.Pid
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, fastStopTimeout}, {syscall.SIGQUIT, quitTimeout}, {syscall.SIGKILL, quitTimeout}}
	for _, step := range steps {
		select {
		case <-p.done:
			return nil
		default:
		}
		if step.sig == syscall.SIGKILL {
			// The postmaster was started with Setpgid, so its group is its pid
			// and holds every backend it forked.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		} else {
			_ = p.cmd.Process.Signal(step.sig)
		}
		timer := time.NewTimer(step.wait)
		select {
		case <-p.done:
			timer.Stop()
			if step.sig != syscall.SIGINT {
				s.log.Warn("pgserver: postgres ignored fast shutdown", "pid", pid, "signal", step.sig.String())
			}
			return nil
		case <-timer.C:
		}
	}
	return fmt.Errorf("pgserver: postgres (pid %d) did not exit after SIGKILL", pid)
}

// startLocked runs the postmaster on s.port and waits until it accepts
// connections, returning one to the "postgres" database.
func (s *Server) startLocked(ctx context.Context) (*pgx.Conn, error) {
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	logStart, _ := logFile.Seek(0, io.SeekEnd)
	fmt.Fprintf(logFile, "--- pgserver %s: starting postgres on 127.0.0.1:%d\n", time.Now().Format(time.RFC3339), s.port)

	// Unix socket paths are limited to 107 bytes; go without one if too long.
	socketDir := s.dataDir
	if len(socketDir)+len("/.s.PGSQL.65535") > 107 {
		socketDir = ""
	}
	settings := []string{
		"listen_addresses=127.0.0.1",
		"unix_socket_directories=" + socketDir,
		// Throw-away server: give up crash safety for speed (see the package doc).
		"fsync=off",
		"synchronous_commit=off",
		"full_page_writes=off",
		"wal_level=minimal",
		"max_wal_senders=0", // required by wal_level=minimal
	}
	args := []string{"-D", s.dataDir, "-p", strconv.Itoa(s.port)}
	for _, kv := range settings {
		args = append(args, "-c", kv)
	}
	cmd := exec.Command(s.bins.postgres, args...)
	cmd.Dir = s.dataDir
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.owner.credential(),
		Setpgid:    true,           // a terminal's Ctrl-C is for the caller, not the server
		Pdeathsig:  syscall.SIGINT, // fast shutdown if the process that started it dies
	}
	err = cmd.Start()
	logFile.Close()
	if err != nil {
		return nil, fmt.Errorf("pgserver: starting %s: %w", s.bins.postgres, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	conn, err := s.waitReady(ctx, p)
	if err != nil {
		stopErr := s.stopProcess(p)
		tail := s.logSince(logStart)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return nil, errors.Join(fmt.Errorf("pgserver: postgres on port %d did not start: %w; log %s:\n%s",
			s.port, err, s.logPath, tail), stopErr)
	}
	s.proc = p
	return conn, nil
}

// waitReady polls postmaster.pid until our postmaster reports "ready", then
// confirms with a connection.
func (s *Server) waitReady(ctx context.Context, p *process) (*pgx.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	pidFile := filepath.Join(s.dataDir, "postmaster.pid")
	pid := strconv.Itoa(p.cmd.Process.Pid)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if b, err := os.ReadFile(pidFile); err == nil && postmasterReady(b, pid) {
			conn, err := pgx.Connect(ctx, s.urlFor("postgres"))
			if err == nil {
				return conn, nil
			}
			lastErr = err
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("postgres exited: %v", p.err)
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("%w (last connection error: %v)", ctx.Err(), lastErr)
			}
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// postmasterReady reads a postmaster.pid: line 1 is the pid, line 8 the
// status, which is "ready" once connections are accepted.
func postmasterReady(pidFile []byte, pid string) bool {
	lines := strings.Split(string(pidFile), "\n")
	return len(lines) >= 8 && strings.TrimSpace(lines[0]) == pid && strings.TrimSpace(lines[7]) == "ready"
}

// ensureDatabase creates the "augur" database unless it exists.
func ensureDatabase(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	err := conn.QueryRow(ctx, "select exists(select 1 from pg_database where datname = $1)", database).Scan(&exists)
	if err == nil && !exists {
		_, err = conn.Exec(ctx, "create database "+pgx.Identifier{database}.Sanitize())
	}
	if err != nil {
		return fmt.Errorf("pgserver: creating database %q: %w", database, err)
	}
	return nil
}

// ensureCluster runs initdb unless the data directory holds a cluster.
// initdb writes into a fresh Dir/data.init-* renamed into place on success,
// so an interrupted initdb never leaves a half-made Dir/data.
func (s *Server) ensureCluster(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	if _, err := os.Stat(s.dataDir); err == nil {
		return fmt.Errorf("pgserver: %s exists but holds no PostgreSQL cluster (no PG_VERSION); remove it", s.dataDir)
	}
	leftovers, _ := filepath.Glob(filepath.Join(s.dir, "data.init-*"))
	for _, l := range leftovers {
		_ = os.RemoveAll(l)
	}
	tmp, err := os.MkdirTemp(s.dir, "data.init-")
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	if err := s.owner.chown(tmp); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("pgserver: %w", err)
	}
	began := time.Now()
	cmd := exec.CommandContext(ctx, s.bins.initdb,
		"-D", tmp,
		"-U", superuser,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
	cmd.Dir = tmp
	cmd.Env = append(childEnv(), "TZ=UTC") // also spares initdb its time zone search
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.owner.credential(), Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("pgserver: initdb: %w\n%s", err, bytes.TrimSpace(out))
	}
	if err := os.Rename(tmp, s.dataDir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("pgserver: %w", err)
	}
	s.log.Info("pgserver: created cluster", "dir", s.dataDir, "elapsed", time.Since(began).Round(time.Millisecond))
	return nil
}

// stopStale stops a postmaster that postmaster.pid names if it is still
// running on our data directory, which happens when the process that
// started it died without its parent-death signal doing its work.
func (s *Server) stopStale() {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 0 {
		return
	}
	// Only a postmaster we started: its command line names our data
	// directory. (A zombie or an unrelated process reusing the pid has not.)
	runsOurs := func() bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && bytes.Contains(cmdline, []byte("\x00"+s.dataDir+"\x00"))
	}
	if !runsOurs() {
		return
	}
	s.log.Warn("pgserver: stopping a server left running on this data directory", "pid", pid, "dir", s.dataDir)
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, fastStopTimeout}, {syscall.SIGQUIT, quitTimeout}, {syscall.SIGKILL, quitTimeout}} {
		target := pid
		if pgid, err := syscall.Getpgid(pid); step.sig == syscall.SIGKILL && err == nil && pgid == pid {
			target = -pid // its backends too
		}
		_ = syscall.Kill(target, step.sig)
		for deadline := time.Now().Add(step.wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if !runsOurs() {
				return
			}
		}
	}
}

// logSince returns what the server logged after offset, at most the last 4 KiB.
func (s *Server) logSince(offset int64) string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > 4096 {
		offset = fi.Size() - 4096
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return strings.TrimSpace(string(b))
}

// childEnv is our environment without locale and libpq settings, in the C
// locale so that messages (and our checks of them) are in English.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LANG" || k == "LANGUAGE" || strings.HasPrefix(k, "LC_") || strings.HasPrefix(k, "PG") || k == "TZ" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// freePort asks the kernel for a loopback port nobody listens on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgserver: picking a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
