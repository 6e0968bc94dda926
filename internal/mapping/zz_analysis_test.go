package mapping

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

func TestZZAnalyse(t *testing.T) {
	if os.Getenv("ANALYSE") == "" {
		t.Skip()
	}
	e := loadEngine(t)
	f, _ := os.Open("testdata/pairs.csv")
	recs, _ := csv.NewReader(f).ReadAll()
	miss := map[string]int{}
	extra := map[string]int{}
	missV := map[string]int{}
	extraV := map[string]int{}
	filter := os.Getenv("ONLY")
	for _, r := range recs {
		if filter != "" && !strings.Contains(r[1], filter) {
			continue
		}
		data, _ := os.ReadFile(filepath.Join("testdata/messages", r[1]))
		m, err := hl7v2.Parse(data)
		if err != nil {
			continue
		}
		got := []byte(`{"resourceType":"Bundle","entry":[]}`)
		if out, err := e.Map(m, "default"); err == nil {
			got, _ = out.Bundle()
		}
		exp, _ := os.ReadFile(filepath.Join("testdata/expected", r[2]))
		el, _ := leaves(exp)
		ol, _ := leaves(got)
		for k, n := range el {
			p := k[:strings.IndexByte(k, 0)]
			if d := n - ol[k]; d > 0 {
				miss[p] += d
				missV[strings.ReplaceAll(k, "\x00", " = ")] += d
			}
		}
		for k, n := range ol {
			p := k[:strings.IndexByte(k, 0)]
			if d := n - el[k]; d > 0 {
				extra[p] += d
				extraV[strings.ReplaceAll(k, "\x00", " = ")] += d
			}
		}
	}
	dump := func(name string, m map[string]int, lim int) {
		type kv struct {
			k string
			n int
		}
		var l []kv
		tot := 0
		for k, n := range m {
			l = append(l, kv{k, n})
			tot += n
		}
		sort.Slice(l, func(i, j int) bool { return l[i].n > l[j].n || l[i].n == l[j].n && l[i].k < l[j].k })
		var b strings.Builder
		fmt.Fprintf(&b, "total %d\n", tot)
		for i, x := range l {
			if i >= lim {
				break
			}
			fmt.Fprintf(&b, "%6d %s\n", x.n, x.k)
		}
		os.WriteFile("/tmp/an_"+name+".txt", []byte(b.String()), 0o644)
	}
	dump("miss", miss, 3000)
	dump("extra", extra, 3000)
	dump("missv", missV, 3000)
	dump("extrav", extraV, 3000)
}
