package pgserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec1(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// reachableTempDir is t.TempDir, made reachable by the postgres user when root.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if err := openTempPath(dir); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStartSelect1(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := StartForTest(t)
	t.Logf("StartForTest (initdb + start + create database) took %v", time.Since(began))

	if !strings.HasPrefix(s.URL(), "postgres://augur@127.0.0.1:") || !strings.HasSuffix(s.URL(), "/augur?sslmode=disable") {
		t.Errorf("URL() = %q", s.URL())
	}
	conn := connect(t, s.URL())
	var one int
	if err := conn.QueryRow(context.Background(), "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	if db := queryString(t, conn, "select current_database()"); db != "augur" {
		t.Errorf("current_database() = %q", db)
	}
	for setting, want := range map[string]string{"fsync": "off", "listen_addresses": "127.0.0.1", "server_encoding": "UTF8"} {
		if got := queryString(t, conn, "show "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
}

func TestStopThenConnectFails(t *testing.T) {
	t.Parallel()
	s := StartForTest(t)
	began := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %v", time.Since(began))
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, s.URL()); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after Stop: %v", err)
	}
}

func TestRestartKeepsDataAndPort(t *testing.T) {
	t.Parallel()
	s := StartForTest(t)
	url := s.URL()
	conn := connect(t, url)
	exec1(t, conn, "create table notes (id int primary key, body text)")
	exec1(t, conn, "insert into notes values (1, 'kept across restart')")
	conn.Close(context.Background())

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restart took %v", time.Since(began))
	if s.URL() != url {
		t.Fatalf("URL changed across Restart: %s -> %s", url, s.URL())
	}
	conn = connect(t, url)
	if got := queryString(t, conn, "select body from notes where id = 1"); got != "kept across restart" {
		t.Fatalf("after restart: %q", got)
	}

	// Restart of a running server stops it first; open sessions are ended.
	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(context.Background()); err == nil {
		t.Fatal("a session survived Restart")
	}
	conn = connect(t, url)
	if got := queryString(t, conn, "select count(*)::text from notes"); got != "1" {
		t.Fatalf("rows after second restart: %s", got)
	}
}

func TestTwoServersAtOnce(t *testing.T) {
	t.Parallel()
	a, b := StartForTest(t), StartForTest(t)
	if a.URL() == b.URL() {
		t.Fatalf("both servers at %s", a.URL())
	}
	ca, cb := connect(t, a.URL()), connect(t, b.URL())
	exec1(t, ca, "create table only_in_a (x int)")
	if err := cb.QueryRow(context.Background(), "select count(*) from only_in_a").Scan(new(int)); err == nil {
		t.Fatal("table created on server a is visible on server b")
	}
	if queryString(t, ca, "select inet_server_port()::text") == queryString(t, cb, "select inet_server_port()::text") {
		t.Fatal("same port")
	}
}

func TestStartReusesExistingCluster(t *testing.T) {
	t.Parallel()
	dir := reachableTempDir(t)
	ctx := context.Background()
	s1, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, s1.URL())
	exec1(t, conn, "create table survivor (v text)")
	exec1(t, conn, "insert into survivor values ('still here')")
	conn.Close(ctx)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	version1, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION"))
	if err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	s2, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	t.Logf("Start on an existing cluster took %v", time.Since(began))
	conn = connect(t, s2.URL())
	if got := queryString(t, conn, "select v from survivor"); got != "still here" {
		t.Fatalf("got %q", got)
	}
	version2, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	if !version1.ModTime().Equal(version2.ModTime()) {
		t.Fatal("initdb ran again")
	}
}

func TestFixedPort(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), Options{Dir: reachableTempDir(t), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if want := fmt.Sprintf("127.0.0.1:%d/", port); !strings.Contains(s.URL(), want) {
		t.Fatalf("URL %s does not use port %d", s.URL(), port)
	}
	// A second server on the same port fails clearly instead of hanging.
	_, err = Start(context.Background(), Options{Dir: reachableTempDir(t), Port: port})
	if err == nil || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("second server on port %d: %v", port, err)
	}
}

func TestStartStopsStaleServerOnSameDir(t *testing.T) {
	t.Parallel()
	dir := reachableTempDir(t)
	old, err := Start(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// A second Start on the same Dir, as after a crash, takes over.
	s, err := Start(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := old.Stop(); err != nil {
		t.Fatalf("Stop of the displaced server: %v", err)
	}
	conn := connect(t, s.URL())
	queryString(t, conn, "select 'ok'")
}

// TestServerDiesWithItsParent runs a child process that starts a server and
// is then killed with SIGKILL: the postmaster must exit on its own.
func TestServerDiesWithItsParent(t *testing.T) {
	if dir := os.Getenv("PGSERVER_TEST_CHILD_DIR"); dir != "" {
		s, err := Start(context.Background(), Options{Dir: dir})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("url:", s.URL())
		time.Sleep(time.Minute)
		os.Exit(2)
	}
	t.Parallel()
	dir := reachableTempDir(t)
	child := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithItsParent$")
	child.Env = append(os.Environ(), "PGSERVER_TEST_CHILD_DIR="+dir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "url: ") {
		t.Fatalf("child said %q, %v", line, err)
	}
	pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), dir) {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGQUIT)
			t.Fatalf("postmaster %d still running 20s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The data directory is usable again.
	s, err := Start(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(context.Background(), Options{}); err == nil {
		t.Error("Start without Dir succeeded")
	}
	if _, err := Start(context.Background(), Options{Dir: t.TempDir(), Port: 70000}); err == nil {
		t.Error("Start with port 70000 succeeded")
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", "unrelated"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := openTempPath(dir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Start(context.Background(), Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "no PG_VERSION") {
		t.Errorf("Start on a non-cluster data dir: %v", err)
	}
}

func TestCheckReachable(t *testing.T) {
	dir := t.TempDir()
	closed := filepath.Join(dir, "closed")
	inner := filepath.Join(closed, "inner")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stranger := &runAs{name: "stranger", uid: 54321, gid: 54321, groups: map[uint32]bool{54321: true}}
	err := stranger.checkReachable(inner)
	if err == nil || !strings.Contains(err.Error(), closed+" has mode -rwx------") {
		t.Fatalf("got %v", err)
	}
	if err := os.Chmod(closed, 0o701); err != nil {
		t.Fatal(err)
	}
	if err := stranger.checkReachable(inner); err != nil && !strings.Contains(err.Error(), filepath.Dir(dir)) {
		t.Fatalf("after chmod o+x: %v", err)
	}
	if err := (*runAs)(nil).checkReachable(inner); err != nil {
		t.Fatal(err)
	}
}

func TestPostmasterReady(t *testing.T) {
	ready := "123\n/d\n1700000000\n5432\n/d\n127.0.0.1\n  1 2\nready   \n"
	if !postmasterReady([]byte(ready), "123") {
		t.Error("ready file not ready")
	}
	if postmasterReady([]byte(ready), "124") {
		t.Error("another pid's file taken as ours")
	}
	if postmasterReady([]byte(strings.Replace(ready, "ready", "starting", 1)), "123") {
		t.Error("starting taken as ready")
	}
	if postmasterReady([]byte("123\n/d\n"), "123") {
		t.Error("short file taken as ready")
	}
}

func TestDebianVersionOrder(t *testing.T) {
	if !(debianVersion("/usr/lib/postgresql/16/bin") > debianVersion("/usr/lib/postgresql/9.6/bin")) {
		t.Error("16 should sort above 9.6")
	}
	if debianVersion("/usr/lib/postgresql/x/bin") >= 0 {
		t.Error("non-numeric should sort last")
	}
}

func TestBinariesFound(t *testing.T) {
	b, err := findBinariesOnce()
	if errors.Is(err, ErrNotInstalled) {
		t.Fatalf("%v", err) // tests that need Postgres must fail, not skip
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initdb %s, postgres %s", b.initdb, b.postgres)
}
