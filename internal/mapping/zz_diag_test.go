package mapping

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"encoding/csv"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

func TestZZDiag(t *testing.T) {
	if os.Getenv("DIAG") == "" {
		t.Skip()
	}
	e := loadEngine(t)
	dir := "testdata"
	f, _ := os.Open(filepath.Join(dir, "pairs.csv"))
	recs, _ := csv.NewReader(f).ReadAll()
	miss := map[string]int{}
	extra := map[string]int{}
	missv := map[string]map[string]int{}
	filter := os.Getenv("DIAG_FILTER")
	for _, r := range recs {
		if len(r) != 3 || (filter != "" && !strings.Contains(r[1], filter)) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "messages", r[1]))
		if err != nil { continue }
		m, err := hl7v2.Parse(data)
		if err != nil { continue }
		out, err := e.Map(m, "t1")
		got := []byte(`{"resourceType":"Bundle","entry":[]}`)
		if err == nil { got, _ = out.Bundle() }
		exp, err := os.ReadFile(filepath.Join(dir, "expected", r[2]))
		if err != nil { continue }
		el, _ := leaves(exp)
		ol, _ := leaves(got)
		for k, n := range el {
			if d := n - ol[k]; d > 0 {
				p := k[:strings.IndexByte(k, 0)]
				miss[p] += d
				if missv[p] == nil { missv[p] = map[string]int{} }
				missv[p][k[strings.IndexByte(k, 0)+1:]] += d
			}
		}
		for k, n := range ol {
			if d := n - el[k]; d > 0 {
				extra[k[:strings.IndexByte(k, 0)]+" = "+k[strings.IndexByte(k, 0)+1:]] += d
			}
		}
	}
	dump := func(name string, m map[string]int, lim int) {
		type kv struct{ k string; n int }
		var l []kv
		for k, n := range m { l = append(l, kv{k, n}) }
		sort.Slice(l, func(i, j int) bool { return l[i].n > l[j].n })
		fmt.Println("==", name)
		for i, x := range l {
			if i >= lim { break }
			ex := ""
			if mv := missv[x.k]; mv != nil {
				var vs []string
				for v := range mv { vs = append(vs, v); if len(vs) > 3 { break } }
				ex = strings.Join(vs, " | ")
				if len(ex) > 120 { ex = ex[:120] }
			}
			fmt.Printf("%6d %s   %s\n", x.n, x.k, ex)
		}
	}
	dump("missing", miss, 250)
	dump("extra", extra, 60)
}
