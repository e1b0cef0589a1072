package pgserver

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// runAs is the OS user the server programs run as when the caller is root.
// A nil *runAs means "the current user".
type runAs struct {
	name   string
	uid    uint32
	gid    uint32
	groups map[uint32]bool // primary and supplementary
}

// serverUser returns nil when not running as root, else the "postgres" user.
func serverUser() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgserver: running as root, so the server must run as the postgres OS user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: postgres gid %q: %w", u.Gid, err)
	}
	r := &runAs{name: u.Username, uid: uint32(uid), gid: uint32(gid), groups: map[uint32]bool{uint32(gid): true}}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				r.groups[uint32(g)] = true
			}
		}
	}
	return r, nil
}

// credential is what exec needs to start a process as r (nil: as ourselves).
func (r *runAs) credential() *syscall.Credential {
	if r == nil {
		return nil
	}
	return &syscall.Credential{Uid: r.uid, Gid: r.gid}
}

// chown gives path to r; a no-op for the current user.
func (r *runAs) chown(path string) error {
	if r == nil {
		return nil
	}
	return os.Lchown(path, int(r.uid), int(r.gid))
}

// canSearch reports whether r may traverse directory fi (has its x bit).
func (r *runAs) canSearch(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == r.uid:
		return perm&0o100 != 0
	case r.groups[st.Gid]:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// checkReachable fails with a clear message when r cannot traverse every
// directory from / down to dir (itself included).
func (r *runAs) checkReachable(dir string) error {
	if r == nil {
		return nil
	}
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgserver: %w", err)
		}
		if !r.canSearch(fi) {
			return fmt.Errorf("pgserver: the %s OS user (the server cannot run as root) cannot reach %s: "+
				"directory %s has mode %v; allow it with `chmod o+x %s` or use another Dir",
				r.name, dir, p, fi.Mode().Perm(), p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
