package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/mapping"
)

// convertCmd implements
//
//	fhirgate convert hl7v2 [-tenant T] [-mappings DIR] FILE...
//	fhirgate convert score [-corpus DIR] [-mappings DIR]
//
// hl7v2 prints the FHIR transaction Bundle each message maps to, storing
// nothing; score maps a corpus and compares it with expected bundles.
func convertCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("convert: want hl7v2 or score")
	}
	switch args[0] {
	case "hl7v2":
		return convertHL7v2(ctx, args[1:], os.Stdout, os.Stderr)
	case "score":
		return convertScore(ctx, args[1:], os.Stdout)
	}
	return usageError(fmt.Sprintf("convert: unknown subcommand %q", args[0]))
}

func convertHL7v2(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert hl7v2", flag.ContinueOnError)
	tenant := fs.String("tenant", "default", "tenant scoping the stable resource ids")
	dir := fs.String("mappings", "mappings", "mapping set folder (hl7v2/, codemaps/, sources/)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("convert hl7v2: no files given")
	}
	e, err := mapping.Load(*dir)
	if err != nil {
		return err
	}
	failed := 0
	for _, name := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		msgs, err := hl7v2.ParseBatch(data)
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			continue
		}
		for i, m := range msgs {
			out, err := e.Map(m, *tenant)
			if err != nil {
				failed++
				var me *mapping.MapError
				if errors.As(err, &me) {
					for _, x := range me.Errs {
						fmt.Fprintf(stderr, "%s: message %d: %s-%d rep %d comp %d: %s (HL7 0357 code %s)\n", name, i+1, x.Segment, x.Field, x.Rep, x.Comp, x.Text, x.Code)
					}
					continue
				}
				fmt.Fprintf(stderr, "%s: message %d: %v\n", name, i+1, err)
				continue
			}
			for _, w := range out.Warnings {
				fmt.Fprintf(stderr, "%s: message %d: warning: %s-%d: %s\n", name, i+1, w.Segment, w.Field, w.Text)
			}
			b, err := out.Bundle()
			if err != nil {
				return err
			}
			stdout.Write(b)
			fmt.Fprintln(stdout)
		}
	}
	if failed > 0 {
		return fmt.Errorf("convert: %d message(s) not mapped", failed)
	}
	return nil
}

func convertScore(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("convert score", flag.ContinueOnError)
	corpus := fs.String("corpus", "../shared/corpus/hl7v2", "corpus folder (messages/, expected/, pairs.csv)")
	dir := fs.String("mappings", "mappings", "mapping set folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	e, err := mapping.Load(*dir)
	if err != nil {
		return err
	}
	rows, total, err := mapping.ScoreCorpus(e, *corpus, "default")
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "message\texpected\tours\tmatched\trecall\tprecision\t")
	var low []mapping.CorpusRow
	for _, r := range rows {
		switch {
		case r.Refused != "":
			fmt.Fprintf(tw, "%s\t-\t-\t-\trefused\t-\t\n", r.Message)
		case r.Expected == "":
			fmt.Fprintf(tw, "%s\t-\t-\t-\tno expected\t-\t\n", r.Message)
		default:
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f%%\t%.1f%%\t\n", r.Message, r.Result.Expected, r.Result.Got, r.Result.Matched, 100*r.Result.Recall(), 100*r.Result.Precision())
		}
		if r.Expected != "" && (r.Refused != "" || r.Result.Recall() < 0.8) {
			low = append(low, r)
		}
	}
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%.1f%%\t%.1f%%\t\n", total.Expected, total.Got, total.Matched, 100*total.Recall(), 100*total.Precision())
	tw.Flush()
	fmt.Fprintf(stdout, "\nmapping version %s; %d message(s) below 80%% recall:\n", e.Version(), len(low))
	for _, r := range low {
		reason := r.Result.Reason()
		if r.Refused != "" {
			reason = r.Refused
		}
		fmt.Fprintf(stdout, "  %s: %s\n", r.Message, reason)
	}
	return nil
}
