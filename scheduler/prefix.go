package scheduler

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"math"
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
	indexes    map[string]*blockIndex // by replica name
	dispatches int
}

var (
	_ PreScorer        = (*PrefixScorer)(nil)
	_ Scorer           = (*PrefixScorer)(nil)
	_ DispatchObserver = (*PrefixScorer)(nil)
)

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
	return &PrefixScorer{seed: maphash.MakeSeed(), capacity: capacity, pool: p, indexes: map[string]*blockIndex{}}
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
		n += idx.len()
	}
	return n
}

// Name implements Scorer.
func (*PrefixScorer) Name() string { return "prefix" }

// PreScore implements PreScorer: it sets ValuePrefixMatch, the share of the prompt's blocks
// that the replica holds as a leading run, on every candidate. A prompt shorter than one
// block sets nothing: there is nothing to match.
func (s *PrefixScorer) PreScore(_ context.Context, req *Request, cands []Candidate) {
	hashes := s.hashes(req)
	if len(hashes) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range cands {
		m := 0.0
		if idx := s.indexes[cands[i].Replica.Name]; idx != nil {
			m = float64(idx.matched(hashes)) / float64(len(hashes))
		}
		cands[i].SetValue(ValuePrefixMatch, m)
	}
}

// Score implements Scorer: the prefix match PreScore computed.
func (s *PrefixScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	for i := range cands {
		scores[i], _ = cands[i].Value(ValuePrefixMatch)
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
	s.add(target, hashes)
	s.dispatches++
	if s.pool != nil && s.dispatches%purgeEvery == 0 {
		s.purge()
	}
}

// Moved implements DispatchObserver: the blocks this request added to from's record (those
// past the leading run from already held at decision time) are taken back, and to is credited.
func (s *PrefixScorer) Moved(_ context.Context, req *Request, from, to Candidate) {
	hashes := s.hashes(req)
	if len(hashes) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx := s.indexes[from.Replica.Name]; idx != nil {
		held := 0
		if m, ok := from.Value(ValuePrefixMatch); ok {
			held = int(math.Round(m * float64(len(hashes))))
		}
		for _, h := range hashes[min(held, len(hashes)):] {
			idx.remove(h)
		}
	}
	s.add(to, hashes)
}

func (s *PrefixScorer) add(c Candidate, hashes []uint64) {
	idx := s.indexes[c.Replica.Name]
	if idx == nil {
		idx = newBlockIndex(s.capacityFor(c))
		s.indexes[c.Replica.Name] = idx
	}
	idx.add(hashes, s.capacityFor(c)) // the replica may report its capacity only later
}

// purge forgets replicas no longer in the pool.
func (s *PrefixScorer) purge() {
	live := make(map[string]bool, len(s.indexes))
	for _, r := range s.pool.Replicas() {
		live[r.Name] = true
	}
	for name := range s.indexes {
		if !live[name] {
			delete(s.indexes, name)
		}
	}
}

// hashes returns the chained hashes of the prompt's full blocks, computed once per request:
// block i's is the hash of block i-1's (8 bytes, little-endian; zeros for the first block)
// followed by the block's bytes.
func (s *PrefixScorer) hashes(req *Request) []uint64 {
	if req.prefixHashes != nil || len(req.Prompt) < prefixBlockBytes {
		return req.prefixHashes
	}
	n := len(req.Prompt) / prefixBlockBytes
	out := make([]uint64, n)
	// One maphash.Bytes call per block hashes what a maphash.Hash fed the same bytes would
	// (the parent, then the block), without the Hash's buffering.
	var buf [8 + prefixBlockBytes]byte
	for i := range n {
		copy(buf[8:], req.Prompt[i*prefixBlockBytes:(i+1)*prefixBlockBytes])
		v := maphash.Bytes(s.seed, buf[:])
		binary.LittleEndian.PutUint64(buf[:8], v)
		out[i] = v
	}
	req.prefixHashes = out
	return out
}

// blockIndex is one replica's remembered blocks with least-recently-used eviction: a map from
// block hash to a slot, and the slots in a list from the most to the least recently used,
// linked by slot number. It holds no pointers, so the garbage collector does not walk a
// record, and recording a block writes no pointer.
type blockIndex struct {
	slots      map[uint64]int32 // by block hash
	entries    []blockEntry     // by slot
	head, tail int32            // the most and least recently used slots; -1 when empty
	free       int32            // the first free slot (the rest follow by next); -1 when none
	capacity   int
}

type blockEntry struct {
	hash       uint64
	prev, next int32 // the slots used more and less recently; -1 at the ends
}

func newBlockIndex(capacity int) *blockIndex {
	return &blockIndex{slots: map[uint64]int32{}, head: -1, tail: -1, free: -1, capacity: max(capacity, 1)}
}

// len is how many blocks are recorded.
func (b *blockIndex) len() int { return len(b.slots) }

// contains reports whether block h is recorded, without refreshing its recency.
func (b *blockIndex) contains(h uint64) bool {
	_, ok := b.slots[h]
	return ok
}

// matched returns how many leading blocks are present. Because hashes are chained, block i
// present means its whole prefix was sent here, so the leading run is found by binary search.
// Looking does not refresh recency: only dispatches do, as only they reach the replica.
func (b *blockIndex) matched(hashes []uint64) int {
	lo, hi := 0, len(hashes) // invariant: hashes[:lo] present, hashes[hi:] not known present
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if b.contains(hashes[mid-1]) {
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
func (b *blockIndex) add(hashes []uint64, capacity int) {
	if capacity > 0 && capacity != b.capacity {
		b.resize(capacity)
	}
	for _, h := range slices.Backward(hashes) {
		b.touch(h)
	}
}

// touch makes block h the most recently used, recording it if it is not, and then forgets
// the least recently used block if the record holds more than its capacity.
func (b *blockIndex) touch(h uint64) {
	if i, ok := b.slots[h]; ok {
		if i != b.head {
			b.unlink(i)
			b.pushFront(i)
		}
		return
	}
	i := b.free
	if i >= 0 {
		b.free = b.entries[i].next
	} else {
		i = int32(len(b.entries))
		b.entries = append(b.entries, blockEntry{})
	}
	b.entries[i].hash = h
	b.pushFront(i)
	b.slots[h] = i
	if len(b.slots) > b.capacity {
		b.remove(b.entries[b.tail].hash)
	}
}

// remove forgets block h, if recorded.
func (b *blockIndex) remove(h uint64) {
	i, ok := b.slots[h]
	if !ok {
		return
	}
	b.unlink(i)
	delete(b.slots, h)
	b.entries[i] = blockEntry{next: b.free}
	b.free = i
}

// resize sets the capacity, forgetting the least recently used blocks beyond it.
func (b *blockIndex) resize(capacity int) {
	for len(b.slots) > capacity {
		b.remove(b.entries[b.tail].hash)
	}
	b.capacity = capacity
}

func (b *blockIndex) unlink(i int32) {
	e := &b.entries[i]
	if e.prev >= 0 {
		b.entries[e.prev].next = e.next
	} else {
		b.head = e.next
	}
	if e.next >= 0 {
		b.entries[e.next].prev = e.prev
	} else {
		b.tail = e.prev
	}
}

func (b *blockIndex) pushFront(i int32) {
	e := &b.entries[i]
	e.prev, e.next = -1, b.head
	if b.head >= 0 {
		b.entries[b.head].prev = i
	} else {
		b.tail = i
	}
	b.head = i
}
