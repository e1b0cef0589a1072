package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// DefaultModelsInterval is how often a replica's /v1/models is read again. Served models change
// only when a replica is redeployed or loads an adapter, and a replica that recovers from failed
// scrapes (a restart, perhaps with another model) is read again at once.
const DefaultModelsInterval = 30 * time.Second

// maxModelsBytes bounds one /v1/models response.
const maxModelsBytes = 1 << 20

// modelState is what the scraper learnt of a replica's served models.
type modelState struct {
	ids       []string  // sorted; nil until a fetch succeeded
	checkedAt time.Time // last fetch attempt, on the scraper's clock
}

// Serves reports whether the replica serves model. known is false when the endpoint lists no
// models and none have been discovered yet (or the replica listed none): callers then route as
// if it served every model.
func (r *Replica) Serves(model string) (serves, known bool) {
	ids, known := r.Models()
	if !known {
		return false, false
	}
	_, found := slices.BinarySearch(ids, model)
	return found, true
}

// Models returns the replica's served models, sorted: the configured list, else the one
// discovered from /v1/models. The slice must not be modified.
func (r *Replica) Models() (models []string, known bool) {
	if len(r.endpoint.Load().Models) > 0 {
		return r.configuredModels(), true
	}
	st := r.models.Load()
	if st == nil || len(st.ids) == 0 {
		return nil, false
	}
	return st.ids, true
}

// configuredModels is Endpoint.Models, sorted when the endpoint was stored.
func (r *Replica) configuredModels() []string { return r.endpoint.Load().Models }

// Serves reports whether some replica in the pool serves model. known is false when no replica
// is known to serve it but some replica's models are not known, so a caller must not conclude
// that the model does not exist.
func (p *Pool) Serves(model string) (serves, known bool) {
	known = true
	for _, r := range p.Replicas() {
		s, k := r.Serves(model)
		if s {
			return true, true
		}
		known = known && k
	}
	return false, known
}

// modelsDue claims the next /v1/models fetch for r, reporting false when its models are
// configured or were read less than interval ago (unless force).
func modelsDue(r *Replica, now time.Time, interval time.Duration, force bool) bool {
	if len(r.endpoint.Load().Models) > 0 {
		return false
	}
	st := r.models.Load()
	if st != nil && !force && now.Sub(st.checkedAt) < interval {
		return false
	}
	next := &modelState{checkedAt: now}
	if st != nil {
		next.ids = st.ids
	}
	// A probe and the periodic scrape may race; one fetch is enough.
	return r.models.CompareAndSwap(st, next)
}

// fetchModels reads the model names from an OpenAI-compatible /v1/models.
func fetchModels(ctx context.Context, client *http.Client, r *Replica) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Address()+"/v1/models", nil)
	if err != nil {
		return nil, fmt.Errorf("models of %s: %w", r.Name, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("models of %s: %w", r.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("models of %s: status %d", r.Name, resp.StatusCode)
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxModelsBytes)).Decode(&list); err != nil {
		return nil, fmt.Errorf("models of %s: decode: %w", r.Name, err)
	}
	ids := make([]string, 0, len(list.Data))
	for _, m := range list.Data {
		if m.ID != "" {
			ids = append(ids, m.ID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}
