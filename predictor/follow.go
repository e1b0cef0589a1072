package predictor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
)

// Source is where published models come from.
type Source interface {
	// Fingerprint changes whenever the published models do; it is cheap, polled often.
	Fingerprint(ctx context.Context) (string, error)
	// Load reads the published artifacts, unchecked.
	Load(ctx context.Context) ([]models.Artifact, error)
	String() string
}

// DBSource follows the champions in Postgres's model_versions table.
type DBSource struct{ DB *pgxpool.Pool }

// Fingerprint implements Source: the champions' versions.
func (s DBSource) Fingerprint(ctx context.Context) (string, error) {
	v, err := store.ChampionVersions(ctx, s.DB)
	if err != nil {
		return "", err
	}
	var parts []string
	for slot, ver := range v {
		parts = append(parts, slot+"="+ver)
	}
	slices.Sort(parts)
	return strings.Join(parts, ","), nil
}

// Load implements Source.
func (s DBSource) Load(ctx context.Context) ([]models.Artifact, error) {
	return store.Champions(ctx, s.DB)
}

func (s DBSource) String() string { return "database" }

// DirSource follows the artifacts in a directory (models.WriteDir's layout), such as a
// mounted ConfigMap or volume.
type DirSource struct{ Dir string }

// Fingerprint implements Source: a hash of the manifests' contents (they carry the model
// files' checksums) and of the other files' names, sizes and modification times.
func (s DirSource) Fingerprint(context.Context) (string, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && e.Name() != "..data" {
			continue
		}
		// ConfigMap volumes swap a symlink (..data); Stat and ReadFile follow it.
		path := filepath.Join(s.Dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil || fi.IsDir() {
			continue
		}
		fmt.Fprintf(h, "%s:%d:%d;", e.Name(), fi.Size(), fi.ModTime().UnixNano())
		if strings.HasSuffix(e.Name(), ".manifest.json") {
			if b, err := os.ReadFile(path); err == nil {
				h.Write(b)
			}
		}
	}
	if len(entries) == 0 {
		return "", nil
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Load implements Source.
func (s DirSource) Load(context.Context) ([]models.Artifact, error) {
	arts, err := models.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	return arts, nil
}

func (s DirSource) String() string { return "directory " + s.Dir }

// DefaultFollowInterval is how often Follow polls its source.
const DefaultFollowInterval = 10 * time.Second

// Follow keeps the predictor serving src's published models until ctx ends: it polls every
// interval (default DefaultFollowInterval) and, when the models changed, loads and checks
// them (Load) before swapping them in. Models that fail the checks are refused (logged and
// counted once per publication) and the previous ones keep serving; a source that cannot be
// reached changes nothing.
func (p *Predictor) Follow(ctx context.Context, src Source, every time.Duration, tick func(time.Duration) <-chan time.Time) {
	if every <= 0 {
		every = DefaultFollowInterval
	}
	if tick == nil {
		tick = time.After
	}
	unreachable := false
	for {
		err := p.Refresh(ctx, src)
		switch {
		case err != nil && !unreachable && ctx.Err() == nil:
			p.opts.Log.Warn("model source unreachable; the current models keep serving", "source", src.String(), "err", err)
			unreachable = true
		case err == nil && unreachable:
			p.opts.Log.Info("model source reachable again", "source", src.String())
			unreachable = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick(every):
		}
	}
}

// Refresh polls src once and applies its models when they changed. It returns an error when
// the source could not be read (the next call tries again); models that were read and failed
// a check are refused, logged and counted once, not returned.
func (p *Predictor) Refresh(ctx context.Context, src Source) error {
	fp, err := src.Fingerprint(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	seen := fp == p.loaded
	p.mu.Unlock()
	if seen || fp == "" {
		return nil
	}
	arts, err := src.Load(ctx)
	if err != nil && !errors.Is(err, models.ErrInvalidArtifact) {
		return err // not read (cut short, the source away): the next poll tries again
	}
	if err == nil && len(arts) == 0 {
		return nil // nothing published yet
	}
	var set *Set
	if err == nil {
		set, err = Load(arts)
	}
	if err != nil {
		// Read, and failed a check: this publication is refused once, not every poll.
		p.refuse(fp, src, err)
		return nil
	}
	p.mu.Lock()
	p.loaded = fp
	p.swapLocked(func(st *state) { st.set = set })
	p.resetDrift()
	p.mu.Unlock()
	if m := p.opts.Metrics; m != nil {
		m.load("loaded")
	}
	p.opts.Log.Info("models loaded", "source", src.String(), "version", set.Version(), "models", joinVersions(arts))
	return nil
}

func (p *Predictor) refuse(fp string, src Source, err error) {
	p.mu.Lock()
	p.loaded = fp
	p.mu.Unlock()
	if m := p.opts.Metrics; m != nil {
		m.load("refused")
	}
	p.opts.Log.Error("published models refused; the current models keep serving", "source", src.String(),
		"serving", p.Version(), "err", err)
}
