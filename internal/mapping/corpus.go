package mapping

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

// CorpusRow is the score of one corpus message.
type CorpusRow struct {
	Message  string // file name under messages/
	Expected string // path of the expected bundle under expected/, "" when none
	Result   Result
	Refused  string // the MapError when the message was not mapped
}

// ScoreCorpus maps every message of an HL7 v2 corpus folder (messages/,
// expected/, pairs.csv) and scores it against its expected bundle. The
// total is the micro-average over leaves of the messages with one.
func ScoreCorpus(e *Engine, dir, tenant string) ([]CorpusRow, Result, error) {
	pairs := map[string]string{}
	f, err := os.Open(filepath.Join(dir, "pairs.csv"))
	if err != nil {
		return nil, Result{}, fmt.Errorf("mapping: corpus: %w", err)
	}
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		return nil, Result{}, fmt.Errorf("mapping: corpus pairs.csv: %w", err)
	}
	for _, r := range recs {
		if len(r) == 3 {
			pairs[r[1]] = r[2]
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "messages", "*.hl7"))
	if err != nil {
		return nil, Result{}, err
	}
	sort.Strings(files)
	var rows []CorpusRow
	total := Result{Missing: map[string]int{}}
	for _, file := range files {
		name := filepath.Base(file)
		row := CorpusRow{Message: name, Expected: pairs[name]}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, Result{}, err
		}
		got := []byte(`{"resourceType":"Bundle","entry":[]}`)
		m, err := hl7v2.Parse(data)
		if err != nil {
			row.Refused = "parse: " + err.Error()
		} else if out, err := e.Map(m, tenant); err != nil {
			var me *MapError
			if !errors.As(err, &me) {
				return nil, Result{}, fmt.Errorf("mapping: %s: unexpected error: %w", name, err)
			}
			row.Refused = me.Error()
		} else if got, err = out.Bundle(); err != nil {
			return nil, Result{}, err
		}
		if row.Expected != "" {
			exp, err := os.ReadFile(filepath.Join(dir, "expected", row.Expected))
			if err != nil {
				return nil, Result{}, err
			}
			row.Result = Score(exp, got)
			total.Expected += row.Result.Expected
			total.Got += row.Result.Got
			total.Matched += row.Result.Matched
			for k, n := range row.Result.Missing {
				total.Missing[k] += n
			}
		}
		rows = append(rows, row)
	}
	return rows, total, nil
}
