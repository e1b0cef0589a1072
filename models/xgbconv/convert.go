package xgbconv

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// ErrUnsupported is wrapped by the errors for models the conversion does not cover.
var ErrUnsupported = errors.New("xgbconv: unsupported model")

// identityObjectives are the objectives whose prediction is the margin itself, so the base
// score is written unchanged.
var identityObjectives = map[string]bool{
	"reg:squarederror":     true,
	"reg:linear":           true,
	"reg:absoluteerror":    true,
	"reg:pseudohubererror": true,
}

// number is an integer or float that XGBoost writes either as a JSON number or as a string
// ("5E-1", "100").
type number string

func (n *number) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*n = number(s)
		return nil
	}
	var f json.Number
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = number(f)
	return nil
}

func (n number) int(name string) (int, error) {
	if n == "" {
		return 0, fmt.Errorf("xgbconv: %s missing", name)
	}
	v, err := strconv.Atoi(string(n))
	if err != nil {
		return 0, fmt.Errorf("xgbconv: %s: %v", name, err)
	}
	return v, nil
}

func (n number) float32(name string) (float32, error) {
	if n == "" {
		return 0, fmt.Errorf("xgbconv: %s missing", name)
	}
	v, err := strconv.ParseFloat(string(n), 32)
	if err != nil {
		return 0, fmt.Errorf("xgbconv: %s: %v", name, err)
	}
	return float32(v), nil
}

// flag is a boolean XGBoost writes as 0/1 or as true/false.
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true", "1":
		*f = true
	case "false", "0":
		*f = false
	default:
		return fmt.Errorf("xgbconv: %s is not a boolean", b)
	}
	return nil
}

type jsonTree struct {
	TreeParam struct {
		NumNodes       number `json:"num_nodes"`
		NumFeature     number `json:"num_feature"`
		NumDeleted     number `json:"num_deleted"`
		SizeLeafVector number `json:"size_leaf_vector"`
	} `json:"tree_param"`
	LeftChildren    []int32   `json:"left_children"`
	RightChildren   []int32   `json:"right_children"`
	Parents         []int64   `json:"parents"`
	SplitIndices    []int64   `json:"split_indices"`
	SplitConditions []float32 `json:"split_conditions"`
	SplitType       []int     `json:"split_type"`
	DefaultLeft     []flag    `json:"default_left"`
	BaseWeights     []float32 `json:"base_weights"`
	SumHessian      []float32 `json:"sum_hessian"`
	LossChanges     []float32 `json:"loss_changes"`
	Categories      []int     `json:"categories"`
}

type jsonModel struct {
	Learner *struct {
		Objective struct {
			Name string `json:"name"`
		} `json:"objective"`
		LearnerModelParam struct {
			BaseScore  number `json:"base_score"`
			NumClass   number `json:"num_class"`
			NumFeature number `json:"num_feature"`
			NumTarget  number `json:"num_target"`
		} `json:"learner_model_param"`
		GradientBooster struct {
			Name  string `json:"name"`
			Model *struct {
				Param struct {
					NumTrees        number `json:"num_trees"`
					NumParallelTree number `json:"num_parallel_tree"`
				} `json:"gbtree_model_param"`
				Trees    []jsonTree `json:"trees"`
				TreeInfo []int      `json:"tree_info"`
			} `json:"model"`
		} `json:"gradient_booster"`
	} `json:"learner"`
}

// Binary layout read by leaves (internal/xgbin), all little-endian, mirroring XGBoost 0.90.
type learnerModelParam struct {
	BaseScore          float32
	NumFeatures        uint32
	NumClass           int32
	ContainExtraAttrs  int32
	ContainEvalMetrics int32
	Reserved           [29]int32
}

type gbTreeModelParam struct {
	NumTrees             int32
	NumRoots             int32
	NumFeature           int32
	Pad32bit             int32
	NumPbufferDeprecated int64
	NumOutputGroup       int32
	SizeLeafVector       int32
	Reserved             [32]int32
}

type treeParam struct {
	NumRoots       int32
	NumNodes       int32
	NumDeleted     int32
	MaxDepth       int32
	NumFeature     int32
	SizeLeafVector int32
	Reserved       [31]int32
}

type node struct {
	Parent int32
	CLeft  int32
	CRight int32
	SIndex uint32
	Info   float32
}

type nodeStat struct {
	LossChg      float32
	SumHess      float32
	BaseWeight   float32
	LeafChildCnt int32
}

// ConvertJSON converts an XGBoost 1.7 JSON model into the binary format of XGBoost 0.90 that
// leaves.XGEnsembleFromReader loads (without a transformation: predictions are margins, which
// for the supported objectives are the predictions).
func ConvertJSON(data []byte) ([]byte, error) {
	var m jsonModel
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("xgbconv: not an XGBoost JSON model: %w", err)
	}
	if m.Learner == nil {
		return nil, errors.New("xgbconv: not an XGBoost JSON model: no learner")
	}
	l := m.Learner
	if gb := l.GradientBooster.Name; gb != "gbtree" {
		return nil, fmt.Errorf("%w: booster %q (only gbtree)", ErrUnsupported, gb)
	}
	if !identityObjectives[l.Objective.Name] {
		return nil, fmt.Errorf("%w: objective %q", ErrUnsupported, l.Objective.Name)
	}
	p := l.LearnerModelParam
	baseScore, err := p.BaseScore.float32("base_score")
	if err != nil {
		return nil, err
	}
	if math.IsNaN(float64(baseScore)) || math.IsInf(float64(baseScore), 0) {
		return nil, fmt.Errorf("xgbconv: base_score %v", baseScore)
	}
	numFeature, err := p.NumFeature.int("num_feature")
	if err != nil {
		return nil, err
	}
	if numFeature <= 0 || numFeature > math.MaxInt32 {
		return nil, fmt.Errorf("xgbconv: num_feature %d", numFeature)
	}
	if p.NumClass != "" {
		nc, err := p.NumClass.int("num_class")
		if err != nil {
			return nil, err
		}
		if nc > 1 {
			return nil, fmt.Errorf("%w: multi-class model (num_class %d)", ErrUnsupported, nc)
		}
	}
	if p.NumTarget != "" {
		nt, err := p.NumTarget.int("num_target")
		if err != nil {
			return nil, err
		}
		if nt > 1 {
			return nil, fmt.Errorf("%w: multi-target model (num_target %d)", ErrUnsupported, nt)
		}
	}
	gm := l.GradientBooster.Model
	if gm == nil {
		return nil, errors.New("xgbconv: gradient_booster has no model")
	}
	numTrees, err := gm.Param.NumTrees.int("num_trees")
	if err != nil {
		return nil, err
	}
	if numTrees <= 0 || numTrees != len(gm.Trees) {
		return nil, fmt.Errorf("xgbconv: num_trees %d but %d trees", numTrees, len(gm.Trees))
	}
	if len(gm.TreeInfo) != numTrees {
		return nil, fmt.Errorf("xgbconv: %d trees but tree_info has %d entries", numTrees, len(gm.TreeInfo))
	}
	for i, g := range gm.TreeInfo {
		if g != 0 {
			return nil, fmt.Errorf("%w: tree %d belongs to output group %d", ErrUnsupported, i, g)
		}
	}

	var out bytes.Buffer
	w := func(v any) {
		_ = binary.Write(&out, binary.LittleEndian, v) // a bytes.Buffer does not fail
	}
	writeString := func(s string) {
		w(uint64(len(s)))
		out.WriteString(s)
	}
	w(learnerModelParam{BaseScore: baseScore, NumFeatures: uint32(numFeature)})
	writeString(l.Objective.Name)
	writeString("gbtree")
	w(gbTreeModelParam{NumTrees: int32(numTrees), NumRoots: 1, NumFeature: int32(numFeature), NumOutputGroup: 1})
	for i := range gm.Trees {
		tp, nodes, stats, err := convertTree(&gm.Trees[i], numFeature)
		if err != nil {
			return nil, fmt.Errorf("xgbconv: tree %d: %w", i, err)
		}
		w(tp)
		w(nodes)
		w(stats)
	}
	w(make([]int32, numTrees)) // tree_info: every tree in output group 0
	return out.Bytes(), nil
}

func convertTree(t *jsonTree, numFeature int) (treeParam, []node, []nodeStat, error) {
	var tp treeParam
	n, err := t.TreeParam.NumNodes.int("num_nodes")
	if err != nil {
		return tp, nil, nil, err
	}
	if n <= 0 {
		return tp, nil, nil, fmt.Errorf("num_nodes %d", n)
	}
	if t.TreeParam.SizeLeafVector != "" {
		slv, err := t.TreeParam.SizeLeafVector.int("size_leaf_vector")
		if err != nil {
			return tp, nil, nil, err
		}
		if slv > 0 {
			return tp, nil, nil, fmt.Errorf("%w: vector leaves (size_leaf_vector %d)", ErrUnsupported, slv)
		}
	}
	deleted := 0
	if t.TreeParam.NumDeleted != "" {
		if deleted, err = t.TreeParam.NumDeleted.int("num_deleted"); err != nil {
			return tp, nil, nil, err
		}
	}
	for name, l := range map[string]int{
		"left_children": len(t.LeftChildren), "right_children": len(t.RightChildren),
		"split_indices": len(t.SplitIndices), "split_conditions": len(t.SplitConditions),
		"default_left": len(t.DefaultLeft),
	} {
		if l != n {
			return tp, nil, nil, fmt.Errorf("%s has %d entries, num_nodes is %d", name, l, n)
		}
	}
	for _, st := range t.SplitType {
		if st != 0 {
			return tp, nil, nil, fmt.Errorf("%w: categorical split", ErrUnsupported)
		}
	}
	if len(t.Categories) > 0 {
		return tp, nil, nil, fmt.Errorf("%w: categorical split", ErrUnsupported)
	}
	optional := func(v []float32, i int) float32 {
		if len(v) == n {
			return v[i]
		}
		return 0
	}

	nodes := make([]node, n)
	stats := make([]nodeStat, n)
	for i := range nodes {
		nodes[i].Parent = -1
	}
	// Walk from the root so that every reachable node is checked and visited once; nodes that
	// are not reachable (deleted ones) are written as leaves, which leaves never visits.
	seen := make([]bool, n)
	stack := []int{0}
	seen[0] = true
	maxDepth := 0
	depth := make([]int, n)
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		maxDepth = max(maxDepth, depth[i])
		left, right := t.LeftChildren[i], t.RightChildren[i]
		cond := t.SplitConditions[i]
		if math.IsNaN(float64(cond)) || math.IsInf(float64(cond), 0) {
			return tp, nil, nil, fmt.Errorf("node %d: split condition %v", i, cond)
		}
		stats[i] = nodeStat{LossChg: optional(t.LossChanges, i), SumHess: optional(t.SumHessian, i), BaseWeight: optional(t.BaseWeights, i)}
		if left == -1 {
			if right != -1 {
				return tp, nil, nil, fmt.Errorf("node %d: left child -1 but right child %d", i, right)
			}
			nodes[i].CLeft, nodes[i].CRight, nodes[i].Info = -1, -1, cond // a leaf: its value
			continue
		}
		feat := t.SplitIndices[i]
		if feat < 0 || feat >= int64(numFeature) {
			return tp, nil, nil, fmt.Errorf("node %d: split on feature %d of %d", i, feat, numFeature)
		}
		sindex := uint32(feat)
		if t.DefaultLeft[i] {
			sindex |= 1 << 31
		}
		// XGBoost goes left on value < cond, leaves on value <= threshold.
		nodes[i].CLeft, nodes[i].CRight, nodes[i].SIndex = left, right, sindex
		nodes[i].Info = math.Nextafter32(cond, float32(math.Inf(-1)))
		leafChildren := int32(0)
		for k, c := range []int32{left, right} {
			if c <= 0 || int(c) >= n {
				return tp, nil, nil, fmt.Errorf("node %d: child %d out of range", i, c)
			}
			if seen[c] {
				return tp, nil, nil, fmt.Errorf("node %d: child %d reached twice", i, c)
			}
			seen[c] = true
			depth[c] = depth[i] + 1
			parent := uint32(i)
			if k == 0 {
				parent |= 1 << 31
			}
			nodes[c].Parent = int32(parent)
			if t.LeftChildren[c] == -1 {
				leafChildren++
			}
			stack = append(stack, int(c))
		}
		stats[i].LeafChildCnt = leafChildren
	}
	for i := range nodes {
		if !seen[i] {
			nodes[i].CLeft, nodes[i].CRight = -1, -1
		}
	}
	tp = treeParam{NumRoots: 1, NumNodes: int32(n), NumDeleted: int32(deleted), MaxDepth: int32(maxDepth), NumFeature: int32(numFeature)}
	return tp, nodes, stats, nil
}

// maxBinaryString bounds the strings of a binary model (objective and booster names).
const maxBinaryString = 256

// CheckBinary walks a model in the binary format ConvertJSON writes and reports the first
// thing that is not in that format: a truncated or padded file, a length or count that does
// not fit the bytes, a child or split feature out of range. A reader that trusts a length
// field allocates what it says; checking first means a corrupt file is refused instead of
// exhausting memory. It returns the model's feature and tree counts.
func CheckBinary(b []byte) (numFeatures, numTrees int, err error) {
	m, err := readBinary(b, false)
	if err != nil {
		return 0, 0, err
	}
	return m.NumFeatures, m.numTrees, nil
}

// Model is a binary model's trees as ReadBinary returns them: the prediction for a row is
// BaseScore plus, tree by tree in order, the value of the leaf the row reaches.
type Model struct {
	BaseScore   float32
	NumFeatures int
	// Trees hold each tree's nodes, the root first. Nodes no path from the root reaches
	// (deleted ones) are as stored and carry no meaning.
	Trees    [][]Node
	numTrees int
}

// Node is a node of a tree: a split, or a leaf when Left and Right are -1.
type Node struct {
	// Left and Right are the children's positions in the tree.
	Left, Right int32
	// Feature is the column a split reads; a NaN value goes left when DefaultLeft, right
	// otherwise.
	Feature     uint32
	DefaultLeft bool
	// Value is a split's threshold, with leaves' rule (left when value <= Value, see the
	// package comment), or a leaf's value.
	Value float32
}

// Leaf reports whether n is a leaf.
func (n Node) Leaf() bool { return n.Left == -1 && n.Right == -1 }

// ReadBinary reads a model in the binary format ConvertJSON writes, with CheckBinary's checks:
// every node a path from a root reaches is a leaf or a split on a feature below NumFeatures,
// with finite values, and each is reached once.
func ReadBinary(b []byte) (*Model, error) { return readBinary(b, true) }

func readBinary(b []byte, keep bool) (*Model, error) {
	r := bytes.NewReader(b)
	read := func(v any) error {
		if err := binary.Read(r, binary.LittleEndian, v); err != nil {
			return fmt.Errorf("xgbconv: binary model truncated: %w", err)
		}
		return nil
	}
	var lp learnerModelParam
	if err := read(&lp); err != nil {
		return nil, err
	}
	if bs := float64(lp.BaseScore); math.IsNaN(bs) || math.IsInf(bs, 0) {
		return nil, fmt.Errorf("xgbconv: binary model base score %v", lp.BaseScore)
	}
	if lp.NumFeatures == 0 || lp.NumFeatures > math.MaxInt32 || lp.NumClass > 1 || lp.ContainExtraAttrs != 0 || lp.ContainEvalMetrics != 0 {
		return nil, fmt.Errorf("xgbconv: binary model header %+v is not one ConvertJSON writes", lp)
	}
	for range 2 {
		var n uint64
		if err := read(&n); err != nil {
			return nil, err
		}
		if n > maxBinaryString || n > uint64(r.Len()) {
			return nil, fmt.Errorf("xgbconv: binary model string of %d bytes", n)
		}
		if _, err := r.Seek(int64(n), io.SeekCurrent); err != nil {
			return nil, err
		}
	}
	var gp gbTreeModelParam
	if err := read(&gp); err != nil {
		return nil, err
	}
	nodeSize := int64(binary.Size(node{}) + binary.Size(nodeStat{}))
	treeSize := int64(binary.Size(treeParam{}))
	if gp.NumTrees <= 0 || int64(gp.NumTrees)*(treeSize+nodeSize+4) > int64(r.Len()) || gp.NumOutputGroup != 1 || gp.NumFeature <= 0 || uint32(gp.NumFeature) > lp.NumFeatures {
		return nil, fmt.Errorf("xgbconv: binary model booster %+v does not fit its %d bytes", gp, len(b))
	}
	m := &Model{BaseScore: lp.BaseScore, NumFeatures: int(lp.NumFeatures), numTrees: int(gp.NumTrees)}
	if keep {
		m.Trees = make([][]Node, 0, gp.NumTrees)
	}
	for t := range int(gp.NumTrees) {
		var tp treeParam
		if err := read(&tp); err != nil {
			return nil, err
		}
		if tp.NumNodes <= 0 || tp.NumRoots != 1 || tp.SizeLeafVector != 0 || int64(tp.NumNodes)*nodeSize > int64(r.Len()) {
			return nil, fmt.Errorf("xgbconv: binary model tree %d: %d nodes in %d bytes", t, tp.NumNodes, r.Len())
		}
		nodes := make([]node, tp.NumNodes)
		if err := read(nodes); err != nil {
			return nil, err
		}
		// Walk from the root: every reachable node in range, reached once (no cycle a
		// prediction could loop on), a leaf or a split on a known feature, finite.
		seen := make([]bool, len(nodes))
		stack := []int32{0}
		seen[0] = true
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n := nodes[i]
			if f := float64(n.Info); math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("xgbconv: binary model tree %d node %d: value %v", t, i, n.Info)
			}
			if n.CLeft == -1 && n.CRight == -1 {
				continue
			}
			if n.SIndex&((1<<31)-1) >= lp.NumFeatures {
				return nil, fmt.Errorf("xgbconv: binary model tree %d node %d: feature %d out of range", t, i, n.SIndex&((1<<31)-1))
			}
			for _, c := range []int32{n.CLeft, n.CRight} {
				if c <= 0 || c >= tp.NumNodes || seen[c] {
					return nil, fmt.Errorf("xgbconv: binary model tree %d node %d: child %d out of range or reached twice", t, i, c)
				}
				seen[c] = true
				stack = append(stack, c)
			}
		}
		if _, err := r.Seek(int64(tp.NumNodes)*int64(binary.Size(nodeStat{})), io.SeekCurrent); err != nil {
			return nil, err
		}
		if keep {
			tree := make([]Node, len(nodes))
			for i, n := range nodes {
				tree[i] = Node{Left: n.CLeft, Right: n.CRight, Feature: n.SIndex & (1<<31 - 1), DefaultLeft: n.SIndex>>31 != 0, Value: n.Info}
			}
			m.Trees = append(m.Trees, tree)
		}
	}
	if r.Len() != int(gp.NumTrees)*4 {
		return nil, fmt.Errorf("xgbconv: binary model has %d bytes after its trees, want %d", r.Len(), int(gp.NumTrees)*4)
	}
	// One output group: leaves refuses a tree_info that names any other.
	info := make([]int32, gp.NumTrees)
	if err := read(info); err != nil {
		return nil, err
	}
	for t, g := range info {
		if g != 0 {
			return nil, fmt.Errorf("xgbconv: binary model tree %d in output group %d, want 0", t, g)
		}
	}
	return m, nil
}
