package mapping

import (
	"testing"
)

func TestScore(t *testing.T) {
	t.Parallel()
	exp := []byte(`{"resourceType":"Bundle","entry":[
	 {"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","id":"a","meta":{"versionId":"1"},
	  "gender":"male","birthDate":"1988-08-18","name":[{"family":"Doe","given":["John","Q"]}],
	  "deceasedDateTime":"2020-01-01T10:00:00+02:00","managingOrganization":{"reference":"Organization/x"}}}]}`)
	got := []byte(`{"resourceType":"Bundle","entry":[
	 {"fullUrl":"urn:uuid:2","resource":{"resourceType":"Patient","id":"b",
	  "gender":"male","birthDate":"1988-08-18T00:00:00Z","name":[{"family":"Doe","given":["John"]}],
	  "deceasedDateTime":"2020-01-01T08:00:00Z","active":true}}]}`)
	r := Score(exp, got)
	// Expected leaves: gender, birthDate, family, John, Q, deceased = 6;
	// matched: gender, family, John, deceased (same instant) = 4; ours: 6.
	if r.Expected != 6 || r.Got != 6 || r.Matched != 4 {
		t.Fatalf("Score = %+v, want expected 6, got 6, matched 4", r)
	}
	if r.Missing["Patient"] != 2 {
		t.Errorf("Missing = %v, want Patient: 2", r.Missing)
	}
}

// The floors are what the mappings achieve today over the corpus; a
// change that lowers them is a regression.
const (
	recallFloor    = 0.731
	precisionFloor = 0.867
)

func TestCorpusScoreFloor(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	rows, total, err := ScoreCorpus(e, "testdata", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 82 {
		t.Fatalf("%d rows, want 82", len(rows))
	}
	for _, r := range rows {
		if r.Refused != "" {
			t.Logf("%s refused: %s", r.Message, r.Refused)
		}
	}
	t.Logf("recall %.3f precision %.3f (%d expected, %d ours, %d matched)", total.Recall(), total.Precision(), total.Expected, total.Got, total.Matched)
	if total.Recall() < recallFloor || total.Precision() < precisionFloor {
		t.Errorf("recall %.3f / precision %.3f below the floor %.3f / %.3f", total.Recall(), total.Precision(), recallFloor, precisionFloor)
	}
}
