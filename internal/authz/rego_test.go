package authz

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/tester"
)

const policyDir = "../../policies"

// coverageThreshold is the minimum share (percent) of the shipped policy
// lines (not the tests') that the Rego unit tests must evaluate.
const coverageThreshold = 90.0

// TestRegoPolicies runs every test_ rule of policies/*_test.rego with OPA's
// tester and fails on a failing test or when coverage of the policy files
// falls below coverageThreshold, listing the lines not covered.
func TestRegoPolicies(t *testing.T) {
	r, err := runRegoTests(policyDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.failures {
		t.Error(f)
	}
	if r.tests < 40 {
		t.Errorf("ran %d Rego tests, want at least 40 (were test files lost?)", r.tests)
	}
	for _, l := range r.uncovered {
		t.Logf("not covered: %s", l)
	}
	t.Logf("%d Rego tests, %d failed; policy coverage %.1f%% (%d lines covered, %d not)",
		r.tests, len(r.failures), r.coverage, r.covered, len(r.uncovered))
	if r.covered == 0 || r.coverage < coverageThreshold {
		t.Errorf("policy coverage %.1f%% is below %.0f%%", r.coverage, coverageThreshold)
	}
}

// TestRegoRunnerReports checks the runner above on a policy with a failing
// test, an erroring test and an untested rule: they must show.
func TestRegoRunnerReports(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", "package x\n\na if input.v == 1\n\nb if {\n\tinput.v == 2\n\tinput.w == 3\n}\n")
	write(t, dir, "p_test.rego", "package x\n\ntest_a if a with input as {\"v\": 1}\n\ntest_fails if a with input as {\"v\": 2}\n\ntest_errors if 1 / 0 == 1\n")
	r, err := runRegoTests(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.tests != 3 || len(r.failures) != 2 {
		t.Fatalf("tests %d, failures %q; want 3 tests and 2 failures", r.tests, r.failures)
	}
	if r.coverage >= 100 || len(r.uncovered) == 0 || !strings.Contains(strings.Join(r.uncovered, "\n"), "p.rego:6") {
		t.Fatalf("coverage %.1f%%, uncovered %q: want rule b reported", r.coverage, r.uncovered)
	}
}

type regoRun struct {
	tests     int
	failures  []string
	covered   int
	uncovered []string // "file:line: source"
	coverage  float64  // percent of the policy files' lines, tests excluded
}

func runRegoTests(dir string) (regoRun, error) {
	var out regoRun
	files, err := filepath.Glob(filepath.Join(dir, "*.rego"))
	if err != nil {
		return out, err
	}
	all := map[string]*ast.Module{}
	policies := map[string]*ast.Module{}
	sources := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return out, err
		}
		m, err := ast.ParseModuleWithOpts(f, string(b), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return out, err
		}
		all[f] = m
		if !strings.HasSuffix(f, "_test.rego") {
			policies[f] = m
			sources[f] = strings.Split(string(b), "\n")
		}
	}
	if len(policies) == 0 || len(policies) == len(all) {
		return out, fmt.Errorf("want policy and test files in %s, have %d of %d", dir, len(policies), len(all))
	}

	cov := cover.New()
	runner := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)).
		SetModules(all).
		SetCoverageQueryTracer(cov).
		RaiseBuiltinErrors(true).
		SetTimeout(10 * time.Second).
		SetDefaultRegoVersion(ast.RegoV1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return out, fmt.Errorf("rego tests: %w", err)
	}
	for r := range ch {
		out.tests++
		switch {
		case r.Error != nil:
			out.failures = append(out.failures, fmt.Sprintf("%s: %s: error: %v", r.Location, r.Name, r.Error))
		case r.Fail:
			out.failures = append(out.failures, fmt.Sprintf("%s: %s: FAIL", r.Location, r.Name))
		case r.Skip:
			out.failures = append(out.failures, fmt.Sprintf("%s: %s: skipped (todo_ tests are not allowed)", r.Location, r.Name))
		}
	}
	slices.Sort(out.failures)

	// The report also counts the test files' own lines: keep the policies'.
	rep := cov.Report(policies)
	var names []string
	notCovered := 0
	for f := range policies {
		fr := rep.Files[f]
		if fr == nil {
			return out, fmt.Errorf("no coverage report for %s", f)
		}
		names = append(names, f)
		out.covered += fr.CoveredLines
		notCovered += fr.NotCoveredLines
	}
	slices.Sort(names)
	for _, f := range names {
		for _, rg := range rep.Files[f].NotCovered {
			for row := rg.Start.Row; row <= rg.End.Row; row++ {
				line := ""
				if src := sources[f]; row-1 < len(src) {
					line = strings.TrimSpace(src[row-1])
				}
				out.uncovered = append(out.uncovered, fmt.Sprintf("%s:%d: %s", f, row, line))
			}
		}
	}
	out.coverage = 100 * float64(out.covered) / float64(max(out.covered+notCovered, 1))
	return out, nil
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
