package mapping

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"strings"
	"sync"
)

// v2tables.tsv.gz holds every HL7 v2 table concept (table, code, display)
// from the FHIR packaging of the v2 tables; see gen/.
//
//go:embed v2tables.tsv.gz
var v2tablesGz []byte

const v2SystemPrefix = "http://terminology.hl7.org/CodeSystem/v2-"

var (
	tablesOnce sync.Once
	v2tables   map[string]map[string]string // table number ("0001") → code → display
)

func hl7Tables() map[string]map[string]string {
	tablesOnce.Do(func() {
		v2tables = make(map[string]map[string]string, 450)
		zr, err := gzip.NewReader(bytes.NewReader(v2tablesGz))
		if err != nil { // generated and embedded: a build defect
			panic("mapping: embedded v2 tables: " + err.Error())
		}
		sc := bufio.NewScanner(zr)
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), "\t", 3)
			if len(f) != 3 {
				continue
			}
			t := v2tables[f[0]]
			if t == nil {
				t = make(map[string]string)
				v2tables[f[0]] = t
			}
			t[f[1]] = f[2]
		}
		if err := sc.Err(); err != nil {
			panic("mapping: embedded v2 tables: " + err.Error())
		}
	})
	return v2tables
}

// tableDisplay returns the display of code in HL7 table ("0001"), and
// whether the table has the code.
func tableDisplay(table, code string) (string, bool) {
	t, ok := hl7Tables()[table]
	if !ok {
		return "", false
	}
	d, ok := t[code]
	return d, ok
}

// knownTable reports whether the HL7 table is embedded.
func knownTable(table string) bool {
	_, ok := hl7Tables()[table]
	return ok
}
