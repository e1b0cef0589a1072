// The architecture's dependency rules, checked: every package states in its doc.go which
// packages and modules it may import, and the product never depends on the wind tunnel or
// the local stand-ins.
package augur_test

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/augur-llm/augur"

type listed struct {
	ImportPath string
	Dir        string
	Name       string
	Standard   bool
	Imports    []string
	Deps       []string
	GoFiles    []string
}

func goList(t *testing.T, args ...string) []listed {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	var pkgs []listed
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

var ruleLine = regexp.MustCompile(`^// Allowed imports(?: \([^)]*\))?: (.*)\.$`)

// allowed reads a package's rule from its doc.go: Augur packages by path below the module,
// other modules by path prefix, or "none".
func allowed(dir string) ([]string, bool) {
	f, err := os.Open(filepath.Join(dir, "doc.go"))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := ruleLine.FindStringSubmatch(sc.Text()); m != nil {
			if m[1] == "none" {
				return []string{}, true
			}
			var out []string
			for _, e := range strings.Split(m[1], ",") {
				out = append(out, strings.TrimSpace(e))
			}
			return out, true
		}
	}
	return nil, false
}

func permitted(imp string, rule []string) bool {
	for _, r := range rule {
		if !strings.Contains(strings.SplitN(r, "/", 2)[0], ".") { // an Augur package
			if imp == module+"/"+r {
				return true
			}
		} else if imp == r || strings.HasPrefix(imp, r+"/") {
			return true
		}
	}
	return false
}

func isStandard(imp string) bool { return !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") }

func TestImportsFollowDocRules(t *testing.T) {
	for _, p := range goList(t, "./...") {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if len(p.GoFiles) == 0 || p.Name == "main" {
			continue // binaries may import what they assemble; test-only folders import nothing shipped
		}
		rule, ok := allowed(p.Dir)
		if !ok {
			t.Errorf("%s: doc.go states no \"Allowed imports: ...\" rule", rel)
			continue
		}
		for _, imp := range p.Imports {
			if isStandard(imp) {
				continue
			}
			if !permitted(imp, rule) {
				t.Errorf("%s imports %s, which its doc.go does not allow (%v)", rel, imp, rule)
			}
		}
	}
}

// The product (everything outside windtunnel/, local/ and the binaries that drive them) must
// not depend on the wind tunnel or the stand-ins, even indirectly; the picker stays pure Go.
func TestProductIndependentOfWindTunnel(t *testing.T) {
	for _, p := range goList(t, "-deps", "./...") {
		if !strings.HasPrefix(p.ImportPath, module) {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if strings.HasPrefix(rel, "windtunnel/") || strings.HasPrefix(rel, "local/") || strings.HasPrefix(rel, "cmd/") {
			continue
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/windtunnel/") || strings.HasPrefix(d, module+"/local/") {
				t.Errorf("product package %s depends on %s", rel, strings.TrimPrefix(d, module+"/"))
			}
		}
	}
	// The picker binary builds without cgo: it predicts in Go (leaves reads its models), never
	// with libxgboost.
	build := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "epp"), "./cmd/epp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Errorf("CGO_ENABLED=0 go build ./cmd/epp: %v\n%s", err, out)
	}
	for _, p := range goList(t, "-deps", "./cmd/epp") {
		if strings.HasPrefix(p.ImportPath, module+"/windtunnel/") || strings.HasPrefix(p.ImportPath, module+"/local/") ||
			strings.HasPrefix(p.ImportPath, module+"/trainer") {
			t.Errorf("cmd/epp links %s", p.ImportPath)
		}
	}
}
