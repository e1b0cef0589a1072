package predictor

import (
	"fmt"
	"math"

	"github.com/augur-llm/augur/models/xgbconv"
)

// forest is a model's trees laid out for the request path. It predicts what leaves predicts
// for the same model (its trees added in order to the base score, each row value compared
// with leaves' rule, a NaN following the split's default direction), bit for bit, and many
// rows at once, tree by tree, so that a tree's nodes stay in cache while every candidate of
// a decision walks it.
//
// Missing values cost no test on the way down: a row is stored twice (fillRow), once with
// NaN as -Inf and once as +Inf, and a split whose NaN goes left reads the first copy (-Inf <=
// any threshold: left), one whose NaN goes right the second (+Inf > any threshold: right).
// A leaf is a node that leads to itself (threshold +Inf, no row value exceeds it), so every
// row takes exactly the tree's depth in steps, and the two children of a split are adjacent
// (right = left + 1): a step is a load, a comparison and an add, without a branch.
type forest struct {
	base  float64
	width int // input columns; rows hold 2*width values
	trees []ftree
	nodes []fnode
}

type ftree struct {
	root, depth int32
}

type fnode struct {
	thr  float32 // left (child) when the value <= thr; +Inf for a leaf
	col  uint32  // the row value read: the feature, + width when a NaN goes right
	left int32   // the left child; the right one follows it. A leaf: itself
	leaf float32 // a leaf's value
}

// newForest lays out m's trees for rows of width columns.
func newForest(m *xgbconv.Model, width int) (*forest, error) {
	if m.NumFeatures > width {
		return nil, fmt.Errorf("the trees read %d features, the rows have %d", m.NumFeatures, width)
	}
	f := &forest{base: float64(m.BaseScore), width: width, trees: make([]ftree, 0, len(m.Trees))}
	for ti, tree := range m.Trees {
		root := int32(len(f.nodes))
		f.nodes = append(f.nodes, fnode{})
		depth, err := f.place(tree, 0, root, 0, width)
		if err != nil {
			return nil, fmt.Errorf("tree %d: %w", ti, err)
		}
		f.trees = append(f.trees, ftree{root: root, depth: int32(depth)})
	}
	return f, nil
}

// maxDepth bounds a tree's depth (XGBoost's own limit is far below).
const maxDepth = 64

// place lays out the subtree of tree rooted at src into f.nodes[at] and returns its depth.
func (f *forest) place(tree []xgbconv.Node, src int32, at int32, depth, width int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("deeper than %d", maxDepth)
	}
	if src < 0 || int(src) >= len(tree) {
		return 0, fmt.Errorf("node %d out of range", src)
	}
	n := tree[src]
	if n.Leaf() {
		f.nodes[at] = fnode{thr: float32(math.Inf(1)), left: at, leaf: n.Value}
		return depth, nil
	}
	col := n.Feature
	if int(col) >= width {
		return 0, fmt.Errorf("node %d splits on feature %d of %d", src, col, width)
	}
	if !n.DefaultLeft {
		col += uint32(width)
	}
	left := int32(len(f.nodes))
	f.nodes = append(f.nodes, fnode{}, fnode{})
	f.nodes[at] = fnode{thr: n.Value, col: col, left: left}
	dl, err := f.place(tree, n.Left, left, depth+1, width)
	if err != nil {
		return 0, err
	}
	dr, err := f.place(tree, n.Right, left+1, depth+1, width)
	if err != nil {
		return 0, err
	}
	return max(dl, dr), nil
}

// predict sets out[r] to the forest's prediction for row r of rows (2*width values each, see
// fillRow): the base score, then each tree's leaf added in order, as leaves adds them.
func (f *forest) predict(rows []float32, out []float64) {
	stride := 2 * f.width
	n := len(out)
	rows = rows[:n*stride]
	for r := range out {
		out[r] = f.base
	}
	nodes := f.nodes
	for _, t := range f.trees {
		r := 0
		for ; r+4 <= n; r += 4 {
			a, b, c, d := rows[r*stride:(r+1)*stride], rows[(r+1)*stride:(r+2)*stride], rows[(r+2)*stride:(r+3)*stride], rows[(r+3)*stride:(r+4)*stride]
			ia, ib, ic, id := t.root, t.root, t.root, t.root
			for range t.depth {
				na, nb, nc, nd := &nodes[ia], &nodes[ib], &nodes[ic], &nodes[id]
				ia, ib, ic, id = na.left+step(a[na.col], na.thr), nb.left+step(b[nb.col], nb.thr), nc.left+step(c[nc.col], nc.thr), nd.left+step(d[nd.col], nd.thr)
			}
			out[r] += float64(nodes[ia].leaf)
			out[r+1] += float64(nodes[ib].leaf)
			out[r+2] += float64(nodes[ic].leaf)
			out[r+3] += float64(nodes[id].leaf)
		}
		for ; r < n; r++ {
			a := rows[r*stride : (r+1)*stride]
			i := t.root
			for range t.depth {
				nd := &nodes[i]
				i = nd.left + step(a[nd.col], nd.thr)
			}
			out[r] += float64(nodes[i].leaf)
		}
	}
}

// step is 1 (right) when x > thr, else 0 (left).
func step(x, thr float32) int32 {
	s := int32(0)
	if x > thr {
		s = 1
	}
	return s
}
