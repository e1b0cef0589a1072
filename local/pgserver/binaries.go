package pgserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrNotInstalled is wrapped by the error Start returns when the PostgreSQL
// server binaries (initdb and postgres) cannot be found.
var ErrNotInstalled = errors.New("pgserver: PostgreSQL server binaries (initdb, postgres) not found; " +
	"run scripts/deps.sh or `apt-get install postgresql`")

// binaries holds the absolute paths of the server programs pgserver runs.
type binaries struct {
	initdb   string
	postgres string
}

var findBinariesOnce = sync.OnceValues(findBinaries)

// findBinaries looks for initdb and postgres in `pg_config --bindir`, then in
// the highest /usr/lib/postgresql/N/bin, then on PATH.
func findBinaries() (binaries, error) {
	var tried []string
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			dir := strings.TrimSpace(string(out))
			if b, ok := binariesIn(dir); ok {
				return b, nil
			}
			tried = append(tried, dir)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return debianVersion(dirs[i]) > debianVersion(dirs[j]) })
	for _, dir := range dirs {
		if b, ok := binariesIn(dir); ok {
			return b, nil
		}
		tried = append(tried, dir)
	}
	initdb, err1 := exec.LookPath("initdb")
	postgres, err2 := exec.LookPath("postgres")
	if err1 == nil && err2 == nil {
		return binaries{initdb: initdb, postgres: postgres}, nil
	}
	tried = append(tried, "PATH")
	return binaries{}, fmt.Errorf("%w (looked in %s)", ErrNotInstalled, strings.Join(tried, ", "))
}

// binariesIn reports the server programs in dir, if both are there.
func binariesIn(dir string) (binaries, bool) {
	b := binaries{initdb: filepath.Join(dir, "initdb"), postgres: filepath.Join(dir, "postgres")}
	return b, isExecutable(b.initdb) && isExecutable(b.postgres)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// debianVersion extracts N from /usr/lib/postgresql/N/bin (N may be "9.6").
func debianVersion(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}
