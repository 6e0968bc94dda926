// Command gen extracts the HL7 v2 tables (code and display of every
// concept) from the FHIR packaging of the v2 tables into the compressed
// tab-separated file the mapping package embeds.
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

func main() {
	in := flag.String("in", "../../../shared/fhir-r4/v2-tables.json", "v2-tables.json Bundle of CodeSystems")
	out := flag.String("out", "v2tables.tsv.gz", "output file")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

type bundle struct {
	Entry []struct {
		Resource struct {
			ResourceType string `json:"resourceType"`
			URL          string `json:"url"`
			Concept      []struct {
				Code    string `json:"code"`
				Display string `json:"display"`
			} `json:"concept"`
		} `json:"resource"`
	} `json:"entry"`
}

const prefix = "http://terminology.hl7.org/CodeSystem/v2-"

func run(in, out string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var b bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("decode %s: %w", in, err)
	}
	var lines []string
	for _, e := range b.Entry {
		r := e.Resource
		if r.ResourceType != "CodeSystem" || !strings.HasPrefix(r.URL, prefix) {
			continue
		}
		table := strings.TrimPrefix(r.URL, prefix)
		for _, c := range r.Concept {
			if strings.ContainsAny(c.Code+c.Display, "\t\n") {
				continue
			}
			lines = append(lines, table+"\t"+c.Code+"\t"+c.Display)
		}
	}
	sort.Strings(lines)
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write([]byte(strings.Join(lines, "\n") + "\n"))
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}
