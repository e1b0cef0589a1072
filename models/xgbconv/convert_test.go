package xgbconv

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/dmitryikh/leaves"
)

// testdata/small.json: 4 trees of depth 3 on 8 features, saved by XGBoost 1.7.4
// (reg:squarederror, base_score 40, trained on rows with 10% NaN).
func fixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/small.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// predictJSON walks the JSON trees with XGBoost's rule: left when value < condition, the
// default direction when the value is NaN; the sum is in float32, as XGBoost adds.
func predictJSON(t *testing.T, m *jsonModel, row []float32) float32 {
	sum, err := m.Learner.LearnerModelParam.BaseScore.float32("base_score")
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range m.Learner.GradientBooster.Model.Trees {
		i := int32(0)
		for tr.LeftChildren[i] != -1 {
			v := row[tr.SplitIndices[i]]
			switch {
			case math.IsNaN(float64(v)) && bool(tr.DefaultLeft[i]), v < tr.SplitConditions[i]:
				i = tr.LeftChildren[i]
			default:
				i = tr.RightChildren[i]
			}
		}
		sum += tr.SplitConditions[i]
	}
	return sum
}

func TestConvertedFixturePredictsLikeTheTrees(t *testing.T) {
	js := fixture(t)
	bin, err := ConvertJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	ens, err := leaves.XGEnsembleFromReader(bufio.NewReader(bytes.NewReader(bin)), false)
	if err != nil {
		t.Fatal(err)
	}
	if ens.NEstimators() != 4 || ens.NFeatures() != 8 || ens.NOutputGroups() != 1 {
		t.Fatalf("leaves reads %d trees, %d features, %d groups; want 4, 8, 1", ens.NEstimators(), ens.NFeatures(), ens.NOutputGroups())
	}
	// Rows on the split conditions themselves, beside them, and missing.
	var m jsonModel
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	var conds []float32
	for _, tr := range m.Learner.GradientBooster.Model.Trees {
		for i, c := range tr.SplitConditions {
			if tr.LeftChildren[i] != -1 {
				conds = append(conds, c, math.Nextafter32(c, float32(math.Inf(1))), math.Nextafter32(c, float32(math.Inf(-1))))
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	row := make([]float32, 8)
	fvals := make([]float64, 8)
	for n := range 20000 {
		for j := range row {
			switch k := r.IntN(10); {
			case k == 0:
				row[j] = float32(math.NaN())
			case k < 6:
				row[j] = conds[r.IntN(len(conds))]
			default:
				row[j] = float32(r.NormFloat64() * 100)
			}
			fvals[j] = float64(row[j])
		}
		want := predictJSON(t, &m, row)
		if got := ens.PredictSingle(fvals, 0); math.Abs(got-float64(want)) > 1e-4*math.Max(math.Abs(float64(want)), 1) {
			t.Fatalf("row %d %v: leaves %v, trees %v", n, row, got, want)
		}
	}
}

func TestTruncatedOrCorruptJSONIsRefused(t *testing.T) {
	js := fixture(t)
	for n := 0; n < len(js); n++ {
		if _, err := ConvertJSON(js[:n]); err == nil {
			t.Fatalf("the first %d of %d bytes were converted without an error", n, len(js))
		}
	}
	for _, bad := range []string{"", "null", "{}", `{"learner":{}}`, "[1,2]", "\x00\x01binf", `{"learner":null}`} {
		if _, err := ConvertJSON([]byte(bad)); err == nil {
			t.Errorf("%q converted without an error", bad)
		}
	}
}

// mutate decodes the fixture, applies f to it and re-encodes it.
func mutate(t *testing.T, f func(learner map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(fixture(t), &m); err != nil {
		t.Fatal(err)
	}
	f(m["learner"].(map[string]any))
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func obj(v any, keys ...string) map[string]any {
	for _, k := range keys {
		v = v.(map[string]any)[k]
	}
	return v.(map[string]any)
}

func tree0(l map[string]any) map[string]any {
	return obj(l, "gradient_booster", "model")["trees"].([]any)[0].(map[string]any)
}

func TestUnsupportedOrInconsistentModelsAreRefused(t *testing.T) {
	if _, err := ConvertJSON(mutate(t, func(map[string]any) {})); err != nil {
		t.Fatalf("the unmodified fixture: %v", err)
	}
	cases := []struct {
		name        string
		unsupported bool
		f           func(l map[string]any)
	}{
		{"dart", true, func(l map[string]any) { obj(l, "gradient_booster")["name"] = "dart" }},
		{"gblinear", true, func(l map[string]any) { obj(l, "gradient_booster")["name"] = "gblinear" }},
		{"multi-class", true, func(l map[string]any) { obj(l, "learner_model_param")["num_class"] = "3" }},
		{"multi-target", true, func(l map[string]any) { obj(l, "learner_model_param")["num_target"] = "2" }},
		{"logistic", true, func(l map[string]any) { obj(l, "objective")["name"] = "binary:logistic" }},
		{"categorical split", true, func(l map[string]any) { tree0(l)["split_type"].([]any)[0] = 1 }},
		{"vector leaf", true, func(l map[string]any) { obj(tree0(l), "tree_param")["size_leaf_vector"] = "2" }},
		{"second output group", true, func(l map[string]any) { obj(l, "gradient_booster", "model")["tree_info"].([]any)[1] = 1 }},
		{"base_score not a number", false, func(l map[string]any) { obj(l, "learner_model_param")["base_score"] = "abc" }},
		{"no features", false, func(l map[string]any) { obj(l, "learner_model_param")["num_feature"] = "0" }},
		{"num_trees disagrees", false, func(l map[string]any) { obj(l, "gradient_booster", "model", "gbtree_model_param")["num_trees"] = "5" }},
		{"num_nodes disagrees", false, func(l map[string]any) { obj(tree0(l), "tree_param")["num_nodes"] = "14" }},
		{"child out of range", false, func(l map[string]any) { tree0(l)["left_children"].([]any)[0] = 99 }},
		{"child twice", false, func(l map[string]any) { tree0(l)["right_children"].([]any)[0] = 1 }},
		{"cycle to the root", false, func(l map[string]any) { tree0(l)["left_children"].([]any)[1] = 0 }},
		{"half a leaf", false, func(l map[string]any) { tree0(l)["right_children"].([]any)[7] = 3 }},
		{"feature out of range", false, func(l map[string]any) { tree0(l)["split_indices"].([]any)[0] = 8 }},
		{"no trees", false, func(l map[string]any) { obj(l, "gradient_booster", "model")["trees"] = []any{} }},
	}
	for _, c := range cases {
		_, err := ConvertJSON(mutate(t, c.f))
		switch {
		case err == nil:
			t.Errorf("%s: converted without an error", c.name)
		case errors.Is(err, ErrUnsupported) != c.unsupported:
			t.Errorf("%s: %v (unsupported %v, want %v)", c.name, err, errors.Is(err, ErrUnsupported), c.unsupported)
		case !strings.HasPrefix(err.Error(), "xgbconv: "):
			t.Errorf("%s: error %q does not say where it comes from", c.name, err)
		}
	}
}

func TestCheckBinary(t *testing.T) {
	js, err := os.ReadFile("testdata/small.json")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := ConvertJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	nf, nt, err := CheckBinary(bin)
	if err != nil || nf <= 0 || nt <= 0 {
		t.Fatalf("a converted model: %d features, %d trees, %v", nf, nt, err)
	}
	m, err := ReadBinary(bin)
	if err != nil || m.NumFeatures != nf || len(m.Trees) != nt {
		t.Fatalf("ReadBinary: %v; %+v", err, m)
	}
	// Every truncation, and bytes added at the end, are refused.
	for n := range len(bin) {
		if _, _, err := CheckBinary(bin[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(bin))
		}
		if _, err := ReadBinary(bin[:n]); err == nil {
			t.Fatalf("ReadBinary: truncated to %d of %d bytes: accepted", n, len(bin))
		}
	}
	if _, _, err := CheckBinary(append(bin[:len(bin):len(bin)], 0)); err == nil {
		t.Fatal("a byte too many: accepted")
	}
	// A base score that is not a number.
	nan := append([]byte(nil), bin...)
	binary.LittleEndian.PutUint32(nan, math.Float32bits(float32(math.NaN())))
	if _, _, err := CheckBinary(nan); err == nil {
		t.Fatal("a NaN base score: accepted")
	}
	// A tree in an output group other than 0 (leaves refuses it; found by FuzzCheckBinary).
	group := append([]byte(nil), bin...)
	binary.LittleEndian.PutUint32(group[len(group)-4:], 1<<19)
	if _, _, err := CheckBinary(group); err == nil {
		t.Fatal("a tree in output group 524288: accepted")
	}
	// A string length that would make a reader allocate gigabytes.
	bad := append([]byte(nil), bin...)
	binary.LittleEndian.PutUint64(bad[binary.Size(learnerModelParam{}):], 1<<40)
	if _, _, err := CheckBinary(bad); err == nil {
		t.Fatal("a huge string length: accepted")
	}
	// Flipping any single byte never crashes it (it may or may not still be a valid model).
	for i := range bin {
		b := append([]byte(nil), bin...)
		b[i] ^= 0xff
		CheckBinary(b)
	}
}
