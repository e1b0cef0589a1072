// Package pgserver runs a throw-away PostgreSQL server on the local machine.
//
// It serves two callers: `make demo`, which needs a database when no
// --database-url is given, and tests that exercise real Postgres instead of a
// mock (see StartForTest). Start creates a cluster with initdb the first time
// a directory is used, runs the postgres binary as a child process listening
// only on 127.0.0.1, waits until it accepts connections (checked with pgx),
// and makes sure a database named "augur" exists. URL returns a connection
// string for it.
//
// # Binaries
//
// The server binaries are looked up in `pg_config --bindir`, then in the
// highest-numbered /usr/lib/postgresql/N/bin, then on PATH. When none is
// found Start returns an error wrapping ErrNotInstalled; scripts/deps.sh
// installs Debian's PostgreSQL package.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the current process is root, initdb
// and postgres run as the "postgres" OS user: the data directory is owned by
// that user, and every directory above it must be searchable (x bit) by it,
// which Start checks up front. StartForTest opens up the directories that
// t.TempDir creates. Otherwise the server runs as the current user.
//
// # Layout of Options.Dir
//
//	Dir/data          the cluster (PGDATA); its Unix socket lives here too
//	Dir/postgres.log  the server's log, appended to on every start
//
// initdb works in Dir/data.init-* and renames the result to Dir/data, so a
// cluster is either complete or absent; leftovers of an interrupted initdb
// are removed by the next Start.
//
// # Not durable on purpose
//
// The server runs with fsync=off, synchronous_commit=off,
// full_page_writes=off and wal_level=minimal. Data survives a clean stop,
// a restart and even a crash of the postgres processes, but not a crash of
// the operating system. Authentication is "trust" for the superuser
// "augur": anything on the loopback interface can connect. Use it only for
// demos and tests.
//
// # No server left behind
//
// The postmaster is a direct child in its own process group, started with a
// parent-death signal (SIGINT, PostgreSQL's fast shutdown): if the process
// that called Start dies, even by SIGKILL, the kernel tells the server to
// stop. (Linux sends that signal when the OS thread that started the child
// exits, so do not call Start from a goroutine that locks its OS thread and
// then ends.) Stop signals fast shutdown itself and escalates to immediate
// shutdown and then SIGKILL if the server does not exit. As a last resort,
// Start looks at Dir/data/postmaster.pid and stops a server still running on
// that data directory before starting its own, so one Dir must not be used
// by two live Servers at once.
//
// Allowed imports (checked by imports_test.go): github.com/jackc/pgx/v5.
package pgserver
