package scheduler

import (
	"container/list"
	"context"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/tokens"
)

// PrefixBlockTokens is the size of the blocks the prefix index tracks: vLLM's default KV block
// of 16 tokens, 64 bytes of prompt text under the token rule.
const PrefixBlockTokens = 16

const prefixBlockBytes = PrefixBlockTokens * tokens.BytesPerToken

// PrefixScorer estimates how much of a request's prompt each replica still holds in its
// prefix cache, from the prompts this picker sent it: it records the chained hashes of every
// dispatched prompt's 16-token blocks per replica, and scores a replica by the share of the
// new prompt's leading blocks found there. The record of each replica is bounded (least
// recently used blocks are forgotten first), as the replica's own cache is.
type PrefixScorer struct {
	seed     maphash.Seed
	capacity int        // blocks remembered per replica whose KV capacity is not reported
	pool     *pool.Pool // to forget replicas that left; nil: never forget

	mu         sync.Mutex
	indexes    map[*pool.Replica]*blockIndex
	dispatches int
}

// purgeEvery is how many dispatches pass between sweeps for replicas that left the pool:
// often enough to bound memory under churn, rarely enough to cost nothing per request.
const purgeEvery = 1024

// DefaultPrefixCapacity is the blocks remembered per replica when none is configured: about
// the KV capacity of an 8B model on one H100.
const DefaultPrefixCapacity = 25000

// NewPrefixScorer returns a scorer. Each replica's record is sized from the KV capacity it
// reports (vllm:cache_config_info), or capacity blocks when it reports none; p, when not nil,
// is the pool whose departed replicas are forgotten.
func NewPrefixScorer(capacity int, p *pool.Pool) *PrefixScorer {
	if capacity <= 0 {
		capacity = DefaultPrefixCapacity
	}
	return &PrefixScorer{seed: maphash.MakeSeed(), capacity: capacity, pool: p, indexes: map[*pool.Replica]*blockIndex{}}
}

// capacityFor is how many 16-token blocks of a replica's cache the record mirrors.
func (s *PrefixScorer) capacityFor(c Candidate) int {
	if c.Metrics.NumGPUBlocks > 0 && c.Metrics.BlockSize > 0 {
		return max(1, c.Metrics.NumGPUBlocks*c.Metrics.BlockSize/PrefixBlockTokens)
	}
	return s.capacity
}

// Blocks returns how many blocks are recorded across replicas, for tests and metrics.
func (s *PrefixScorer) Blocks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, idx := range s.indexes {
		n += len(idx.blocks)
	}
	return n
}

// Name implements Scorer.
func (*PrefixScorer) Name() string { return "prefix" }

// Score implements Scorer: the share of the prompt's blocks that the replica holds as a
// leading run.
func (s *PrefixScorer) Score(_ context.Context, req *Request, cands []Candidate, scores []float64) {
	hashes := s.hashes(req)
	if len(hashes) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range cands {
		if idx := s.indexes[c.Replica]; idx != nil {
			scores[i] = float64(idx.matched(hashes)) / float64(len(hashes))
			cands[i].PrefixMatch = scores[i]
		}
	}
}

// Dispatched implements DispatchObserver: the chosen replica will now cache the prompt.
func (s *PrefixScorer) Dispatched(_ context.Context, req *Request, target Candidate) {
	hashes := s.hashes(req)
	if len(hashes) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.indexes[target.Replica]
	if idx == nil {
		idx = newBlockIndex(s.capacityFor(target))
		s.indexes[target.Replica] = idx
	}
	idx.capacity = s.capacityFor(target) // the replica may report its capacity only later
	idx.add(hashes)
	s.dispatches++
	if s.pool != nil && s.dispatches%purgeEvery == 0 {
		s.purge()
	}
}

// purge forgets replicas no longer in the pool.
func (s *PrefixScorer) purge() {
	live := make(map[*pool.Replica]bool, len(s.indexes))
	for _, r := range s.pool.Replicas() {
		live[r] = true
	}
	for r := range s.indexes {
		if !live[r] {
			delete(s.indexes, r)
		}
	}
}

// hashes returns the chained hashes of the prompt's full blocks, computed once per request.
func (s *PrefixScorer) hashes(req *Request) []uint64 {
	if req.prefixHashes != nil || len(req.Prompt) < prefixBlockBytes {
		return req.prefixHashes
	}
	n := len(req.Prompt) / prefixBlockBytes
	out := make([]uint64, n)
	var h maphash.Hash
	h.SetSeed(s.seed)
	var parent [8]byte
	for i := range n {
		h.Reset()
		_, _ = h.Write(parent[:])
		_, _ = h.Write(req.Prompt[i*prefixBlockBytes : (i+1)*prefixBlockBytes])
		v := h.Sum64()
		binary.LittleEndian.PutUint64(parent[:], v)
		out[i] = v
	}
	req.prefixHashes = out
	return out
}

// blockIndex is one replica's remembered blocks with least-recently-used eviction.
type blockIndex struct {
	capacity int
	blocks   map[uint64]*list.Element
	lru      list.List // front = most recently used; values are uint64 hashes
}

func newBlockIndex(capacity int) *blockIndex {
	return &blockIndex{capacity: capacity, blocks: make(map[uint64]*list.Element)}
}

// matched returns how many leading blocks are present. Because hashes are chained, block i
// present means its whole prefix was sent here, so the leading run is found by binary search.
func (b *blockIndex) matched(hashes []uint64) int {
	lo, hi := 0, len(hashes) // invariant: hashes[:lo] present, hashes[hi:] not known present
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if _, ok := b.blocks[hashes[mid-1]]; ok {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// add records a prompt's blocks, last block first, so that the prompt's head ends up most
// recently used: eviction then takes the ends of prompts first, as vLLM's cache does, and a
// present block always has its whole prefix present, which matched relies on.
func (b *blockIndex) add(hashes []uint64) {
	for _, h := range slices.Backward(hashes) {
		if e, ok := b.blocks[h]; ok {
			b.lru.MoveToFront(e)
			continue
		}
		b.blocks[h] = b.lru.PushFront(h)
	}
	for b.lru.Len() > b.capacity {
		old := b.lru.Back()
		b.lru.Remove(old)
		delete(b.blocks, old.Value.(uint64))
	}
}
